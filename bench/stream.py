"""Reading the probe's lines from a pipe as they arrive, against a deadline.

Startup is timed to the moment ``CVB READY`` reaches the harness, so the pipe is
read unbuffered with ``select``: a buffered ``readline`` could sit on a line that
has already arrived, and a plain blocking read could hang a benchmark forever on
an instance that never prints.
"""
from __future__ import annotations

import os
import select
import time

from common import probe


class ProbeStream:
    """Incremental reader of one instance's stdout pipe."""

    def __init__(self, fd: int):
        self.fd = fd
        self.out = probe.ProbeOutput()
        self.text: list[str] = []
        self._partial = b""
        self.eof = False
        self.ready_ns: int | None = None

    def read_once(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not r:
            return
        chunk = os.read(self.fd, 65536)
        now = time.perf_counter_ns()
        if not chunk:
            self.eof = True
            if self._partial:
                self._line(self._partial, now)
                self._partial = b""
            return
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._line(raw, now)

    def _line(self, raw: bytes, now: int) -> None:
        line = raw.decode("utf-8", "replace")
        self.text.append(line)
        if self.ready_ns is None and probe.is_ready(line):
            self.ready_ns = now
        probe.feed(self.out, line)

    def until_ready(self, deadline: float) -> int | None:
        """perf_counter_ns of READY, or None on EOF; raises TimeoutError past ``deadline``."""
        while self.ready_ns is None and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no CVB READY before the deadline")
            self.read_once(left)
        return self.ready_ns

    def until_eof(self, deadline: float) -> None:
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("output did not end before the deadline")
            self.read_once(left)

    def console(self) -> str:
        return "\n".join(self.text)
