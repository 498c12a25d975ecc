"""Errors of the VM backend.

Every failure is a :class:`VMError`, so the harness can catch one type; those
caused by the machine (no libvirtd, an unreadable kernel) are also
:class:`~common.errors.EnvError` and exit 2, while a guest that fails or hangs
is the measured thing failing and exits 1.  A guest failure carries the last
console lines, because that is where the reason is.
"""
from __future__ import annotations

from common.errors import EXIT_FAILED, CvbError, EnvError


class VMError(CvbError):
    """``kind`` says how a guest failed, so callers branch on it, not on the text:
    ``"timeout"`` (a marker did not come in time), ``"exited"`` (the guest or
    its VMM ended before the marker) or ``""`` (anything else)."""

    def __init__(self, what: str, why: str, fix: str = "", status: int = EXIT_FAILED,
                 console_tail: str = "", kind: str = ""):
        self.console_tail = console_tail
        self.kind = kind
        if console_tail:
            why = f"{why}\n--- last console lines ---\n{console_tail}\n---"
        super().__init__(what, why, fix, status)


class VMEnvError(VMError, EnvError):
    """The host cannot run guests as asked (exit status 2)."""

    def __init__(self, what: str, why: str, fix: str = ""):
        super().__init__(what, why, fix, status=2)
