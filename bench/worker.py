"""``python -m bench.worker``: the pyperf program that times one backend.

The harness starts this as pyperf's main process; pyperf then re-executes it
as worker processes (warmups, several processes, one loop per value).  Each
value is one instance: the time from just before the spawn to ``CVB READY``.  The same spawn's lifecycle time (to fully gone) is appended,
per call, to a side file named by ``CVBENCH_SIDECAR``; the harness turns those
into a second pyperf benchmark with exactly the same process/warmup/value
structure, so one set of spawns gives both metrics.

Kept import-light on purpose: only pyperf, the one backend module and common/.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pyperf

SIDECAR_ENV = "CVBENCH_SIDECAR"

# One clock: every value is ONE spawn (pyperf loops=1, always), so n counts
# spawns, an ECDF shows real starts and its tails, and CV, n and intervals
# compare across backends.  Worker processes per mode's default; pyperf's
# --fast halves the processes and --rigorous doubles them.
#
# Millisecond spawns get several warmup spawns per worker: measured here on a
# busy 2-core machine, the first ~5-10 spawns of a freshly started Python
# worker took 2-4 ms where later ones took 0.6-0.9 ms (the worker has just
# burnt CPU on its imports, so the scheduler does not let it preempt other
# work on wakeup for a while); hyperfine's process never pays that.  VMs boot
# in seconds under TCG, so they get fewer processes and values than
# containers and no warmup boot; under KVM (vm_kvm) a boot is short enough for
# pyperf's defaults with a warmup.
PLAN = {
    "fast_path": {"processes": 10, "values": 20, "warmups": 5},
    "vm": {"processes": 3, "values": 2, "warmups": 0},
    "vm_kvm": {"processes": 20, "values": 3, "warmups": 1},
    "rung": {"processes": 4, "values": 15, "warmups": 3},
}


def _terminate(signum, frame):
    raise KeyboardInterrupt


def add_args(cmd: list[str], args) -> None:
    """Forward cvbench's own options to the worker processes pyperf spawns."""
    cmd.extend(["--backend", args.backend, "--probe-args", args.probe_args,
                "--instance-timeout", str(args.instance_timeout), "--plan", args.plan])
    if args.rung:
        cmd.extend(["--rung", args.rung])
    cmd.append(args.bench_name)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    plan = "fast_path"
    if "--plan" in sys.argv:
        plan = sys.argv[sys.argv.index("--plan") + 1]
    p = PLAN[plan]
    runner = pyperf.Runner(processes=p["processes"], values=p["values"], warmups=p["warmups"],
                           program_args=("-m", "bench.worker"), add_cmdline_args=add_args)
    ap = runner.argparser
    ap.add_argument("--backend", required=True)
    ap.add_argument("--probe-args", default="ready")
    ap.add_argument("--instance-timeout", type=float, default=60.0)
    ap.add_argument("--plan", default="fast_path", choices=sorted(PLAN))
    ap.add_argument("--rung", default="")
    ap.add_argument("bench_name")
    args = runner.parse_args()

    from bench import backends
    backend = backends.get(args.backend)
    if args.rung:
        backend = backend.with_rung(args.rung)
    probe_args = args.probe_args.split()
    sidecar = os.environ.get(SIDECAR_ENV)
    if args.worker:
        backend.prepare_worker()   # once, before anything is timed (crun: setns)

    def time_func(loops: int) -> float:
        if loops != 1:
            raise backends.InstanceFailed(args.backend, f"pyperf asked for {loops} loops per value; "
                                          "cvbench times one spawn per value (-l 1)")
        t = backend.run(probe_args, timeout=args.instance_timeout)
        if t.rc != 0 or t.ready_s is None or t.gone_s is None:
            raise backends.InstanceFailed(args.backend, f"instance ended with rc={t.rc}", t.console)
        ready, gone = t.ready_s, t.gone_s
        if sidecar and args.worker:
            with open(sidecar, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "loops": loops, "gone": gone}) + "\n")
        return ready

    md = {"unit": "second", "cvbench_backend": args.backend, "cvbench_plan": plan,
          "cvbench_probe_args": args.probe_args}
    if args.rung:
        md["cvbench_rung"] = args.rung
    runner.bench_time_func(args.bench_name, time_func, metadata=md)


if __name__ == "__main__":
    from common.errors import CvbError
    try:
        main()
    except CvbError as e:  # one line the harness can show, instead of a traceback
        print(e.line(), file=sys.stderr, flush=True)
        sys.exit(e.status or 1)
