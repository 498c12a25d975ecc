"""``python -m bench.worker``: the pyperf program that times one backend.

The harness starts this as pyperf's main process; pyperf then re-executes it
as worker processes (warmups, several processes, calibrated loops).  Each loop
is one instance: the time from just before the spawn to ``CVB READY`` is the
benchmark value.  The same spawn's lifecycle time (to fully gone) is appended,
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

# Worker processes per mode's default; pyperf's --fast halves the processes and
# --rigorous doubles them.  VMs boot in seconds under TCG, so they get fewer
# processes and values than containers, no warmup boot and one boot per value
# (recorded in the benchmark metadata).  min_time is pyperf's per-value target:
# 50 ms of spawn->READY time per value is already an average over many spawns
# of a millisecond-scale container; pyperf's 100 ms default is aimed at
# microbenchmarks, where timer resolution matters, and doubles the run time.
PLAN = {
    "fast_path": {"processes": 20, "values": 3, "warmups": 1, "min_time": 0.05},
    "vm": {"processes": 3, "values": 2, "warmups": 0, "min_time": 0.1},
    "rung": {"processes": 6, "values": 3, "warmups": 1, "min_time": 0.05},
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

    def time_func(loops: int) -> float:
        ready = gone = 0.0
        for _ in range(loops):
            t = backend.run(probe_args, timeout=args.instance_timeout)
            if t.rc != 0 or t.ready_s is None or t.gone_s is None:
                raise backends.InstanceFailed(args.backend, f"instance ended with rc={t.rc}", t.console)
            ready += t.ready_s
            gone += t.gone_s
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
