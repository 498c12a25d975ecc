"""Subcommands of ``python -m bench``."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from common.errors import CvbError

from . import image, kernel


def cmd_image(args) -> int:
    img = image.build(log=lambda m: print(m, flush=True))
    img = image.attach_kernel(img, kernel.kernel_path(fetch=not args.no_kernel))
    if args.json:
        print(json.dumps(asdict(img), indent=2))
    else:
        print(f"bundle:    {img.bundle}")
        print(f"initramfs: {img.initramfs}")
        print(f"kernel:    {img.kernel}")
        print(f"probe:     sha256 {img.probe_sha256}")
    return 0


def cmd_kernel(args) -> int:
    print(kernel.kernel_path())
    return 0


def cmd_env(args) -> int:
    from . import env
    print(json.dumps(env.collect(), indent=2))
    return 0


def cmd_list(args) -> int:
    from . import backends, harness
    avail = backends.availability(backends.NAMES)
    if args.json:
        print(json.dumps({"scenarios": harness.SCENARIOS, "backends": avail}, indent=2))
        return 0
    print("scenarios:")
    for s in harness.SCENARIOS:
        try:
            desc = harness.load_scenario(s).DESCRIPTION
        except ImportError as e:
            desc = f"(cannot load: {e})"
        print(f"  {s:10} {desc}")
    print("backends:")
    for n, a in avail.items():
        print(f"  {n:8} {'yes' if a['available'] else 'no ':3}  {a['reason']}")
    return 0


def cmd_sweep(args) -> int:
    from common.errors import require_root

    from . import sweep
    require_root("sweep")
    removed = sweep.sweep_all()
    for r in removed:
        print(f"removed {r}")
    if not removed:
        print("sweep: nothing to remove")
    return 0


def cmd_run(args) -> int:
    from common.errors import require_root
    from common.paths import results_dir

    from . import backends, harness
    names = harness.SCENARIOS if args.scenario == "all" else [args.scenario]
    for n in names:
        harness.load_scenario(n)  # unknown scenario -> exit 2 before anything runs
    backends.parse(args.backends)   # unknown backend -> exit 2 before anything runs
    if args.config:
        from . import bundle
        bundle.load_user_config(args.config)   # a bad file -> exit 2 before anything runs
    require_root("run")
    mode = "fast" if args.fast else "rigorous" if args.rigorous else "default"
    out = Path(args.out) if args.out else results_dir()
    status = 0
    for n in names:
        _, rc = harness.run(n, backend_spec=args.backends, mode=mode, quick=args.quick, out=out,
                            config=args.config, strict=args.strict,
                            command=["python", "-m", "bench", *sys.argv[1:]] if args.argv is None
                            else ["python", "-m", "bench", *args.argv])
        status = max(status, rc)
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="cvbench harness")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("run", help="run a scenario across every available backend")
    s.add_argument("scenario", help="startup, memory, syscall, isolation or all")
    s.add_argument("--backends", help="comma-separated backends (default: every available one)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--fast", action="store_true", help="pyperf --fast: fewer processes and values")
    g.add_argument("--rigorous", action="store_true", help="pyperf --rigorous: more processes")
    s.add_argument("--out", help="results folder (default: results/ or $CVBENCH_RESULTS)")
    s.add_argument("--config", metavar="CONFIG_JSON",
                   help="an OCI config.json every container backend runs alike (default: the image's: "
                        "runc spec + cgroup namespace + the default seccomp profile)")
    s.add_argument("--strict", action="store_true",
                   help="exit 1 when an independent cross-check (hyperfine, perf bench, iperf3, "
                        "sockperf) is outside its tolerance (±10%%; network ±15%%)")
    # Test knob: one pyperf process with one value per benchmark, one instance per
    # memory/syscall sample, smallest ladder.  Numbers from it are not for quoting;
    # meta.json records quick=true.
    s.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_run, argv=None)
    s = sub.add_parser("list", help="scenarios, and backends with their availability")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("env", help="the environment metadata as JSON")
    s.set_defaults(func=cmd_env)
    s = sub.add_parser("sweep", help="remove leftovers of killed cvbench runs (dead owners only)")
    s.set_defaults(func=cmd_sweep)
    s = sub.add_parser("image", help="build the shared guest image (OCI bundle + initramfs)")
    s.add_argument("--json", action="store_true", help="print the image record as JSON")
    s.add_argument("--no-kernel", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_image)
    s = sub.add_parser("kernel", help="fetch (once) and print the guest kernel path")
    s.set_defaults(func=cmd_kernel)
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise CvbError("usage", "bad command line (see the usage above)",
                           "python -m bench --help") from None
        raise
    if args.cmd == "run":
        args.argv = list(argv)
        if args.debug:
            import os
            os.environ["CVBENCH_DEBUG"] = "1"
    return args.func(args)
