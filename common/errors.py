"""One error shape for every cvbench CLI: ``cvbench: <what>: <why>; <how to fix>``.

Exit status follows docs/architecture.md: 0 success, 1 the measured thing failed (or a
regression), 2 bad input or a bad environment.  Raising :class:`CvbError` from
anywhere and running ``main`` through :func:`run_cli` gives that behaviour with
no traceback unless ``--debug`` is on the command line.
"""
from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CvbError(Exception):
    """A failure a user can act on.  ``fix`` says how."""

    def __init__(self, what: str, why: str, fix: str = "", status: int = EXIT_USAGE):
        self.what, self.why, self.fix, self.status = what, why, fix, status
        super().__init__(self.line())

    def line(self) -> str:
        msg = f"cvbench: {self.what}: {self.why}"
        return f"{msg}; {self.fix}" if self.fix else msg


class EnvError(CvbError):
    """The machine lacks something (root, a daemon, a kernel feature)."""


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvError(what, "needs root (namespaces, cgroups and libvirt's system URI do)",
                       "run it as root, e.g. with sudo")


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` and turn errors into one stderr line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CVBENCH_DEBUG") == "1"
    try:
        rc = main(argv)
        return EXIT_OK if rc is None else int(rc)
    except CvbError as e:
        if debug:
            raise
        print(e.line(), file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("cvbench: interrupted; cleaned up what was started", file=sys.stderr)
        return 130
