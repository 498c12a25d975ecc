"""Subcommands of ``python -m bench``."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="cvbench harness")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("image", help="build the shared guest image (OCI bundle + initramfs)")
    s.add_argument("--json", action="store_true", help="print the image record as JSON")
    s.add_argument("--no-kernel", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_image)
    s = sub.add_parser("kernel", help="fetch (once) and print the guest kernel path")
    s.set_defaults(func=cmd_kernel)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
