"""``python -m vm_backend run|detect|sweep|trace-libvirt``: one guest from the command line.

``run`` prints the guest's CVB lines, then one JSON line with the timing points
(seconds from spawn), the accelerator and its reason, so a shell user sees the
same numbers the harness records.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys


def _image_paths(args) -> tuple[str, str]:
    if args.kernel and args.initramfs:
        return args.kernel, args.initramfs
    from common import manifest
    k, i = manifest.kernel_and_initramfs()
    return args.kernel or k, args.initramfs or i


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vm_backend", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "detect"):
        s = sub.add_parser(name)
        s.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
        s.add_argument("--uri", default="qemu:///system", help="libvirt URI, e.g. qemu+ssh://host/system")
        s.add_argument("--qemu", action="store_true", help="raw qemu-system-x86_64 instead of libvirt")
        s.add_argument("--kernel")
        s.add_argument("--initramfs")
    run = sub.choices["run"]
    run.add_argument("--vcpus", type=int, default=1)
    run.add_argument("--memory", type=int, default=128, metavar="MiB")
    run.add_argument("--machine", help="machine type (pc, as libvirt; raw QEMU also microvm)")
    run.add_argument("--tb-cache", type=int, metavar="MiB", help="TCG translation cache size")
    run.add_argument("--timeout", type=float, default=60.0)
    run.add_argument("probe_args", nargs="*", help="after --: the probe's arguments, e.g. ops getppid")
    s = sub.add_parser("sweep")
    s.add_argument("--uri", default="qemu:///system")
    s = sub.add_parser("trace-libvirt", help="where libvirt's time goes (libvirtd's debug log, one boot)")
    s.add_argument("--uri", default="qemu:///system")
    s.add_argument("--kernel")
    s.add_argument("--initramfs")
    return p


def _run(a) -> int:
    from . import LibvirtVM, QemuVM
    kernel, initramfs = _image_paths(a)
    kw = dict(accel=a.accel, vcpus=a.vcpus, memory_mib=a.memory, timeout=a.timeout, tb_cache_mib=a.tb_cache)
    if a.machine:
        kw["machine"] = a.machine
    if a.qemu:
        vm = QemuVM(kernel, initramfs, a.probe_args or ["ready"], **kw)
    else:
        vm = LibvirtVM(kernel, initramfs, a.probe_args or ["ready"], uri=a.uri, **kw)
    with vm:
        res = vm.run()
    for line in vm.console.cvb_lines():
        print(line)
    print(json.dumps({**res.summary(), "metadata": vm.metadata()}), flush=True)
    return 0 if res.probe.rc == 0 else 1


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the guest is destroyed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if a.cmd == "run":
        return _run(a)
    if a.cmd == "detect":
        from . import detect_accel
        kernel, initramfs = _image_paths(a)
        acc = detect_accel(kernel, initramfs, uri=None if a.qemu else a.uri,
                           force=None if a.accel == "auto" else a.accel)
        print(json.dumps({"accel": acc.name, "reason": acc.reason}))
        return 0
    if a.cmd == "trace-libvirt":
        from .libvirt_trace import trace
        print(json.dumps(trace(*_image_paths(a), uri=a.uri), indent=2))
        return 0
    from . import sweep
    for what in sweep(a.uri):
        print(f"removed {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
