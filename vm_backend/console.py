"""The guest's serial console, read from a unix socket as the bytes arrive.

cvbench listens; QEMU (raw, or started by libvirt with ``<source
mode='connect'>``) connects while it initialises its chardevs, before any vCPU
runs.  So no byte can be lost, and unlike a pty (which QEMU drops output to
while nobody has it open) or a log file (which must be polled), a blocking
``recv`` in a thread stamps each line on the host's monotonic clock within
scheduling latency, well under a millisecond.

Lines go through common.probe (the one parser of probe output).  EOF means QEMU
closed its end, i.e. it is exiting.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from pathlib import Path

from common import probe as probe_fmt
from common.paths import state_dir

MAX_CONSOLE = 1 << 20   # keep at most this much console text (a chatty kernel)


def socket_dir() -> Path:
    d = state_dir() / "vm"
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    # QEMU under libvirt runs as an unprivileged user: it must reach the socket.
    os.chmod(d.parent, os.stat(d.parent).st_mode | 0o111)
    os.chmod(d, 0o755)
    return d


class Console:
    """Listening socket + reader thread; ``ready``/``done``/``eof`` are Events."""

    def __init__(self, name: str):
        self.name = name
        self.path = ""
        self.ready = threading.Event()
        self.done = threading.Event()
        self.eof = threading.Event()
        self.ready_ns: int | None = None
        self.done_ns: int | None = None
        self.eof_ns: int | None = None
        self.probe = probe_fmt.ProbeOutput()
        self._lines: deque[str] = deque(maxlen=4096)
        self._text: list[str] = []
        self._size = 0
        self._stop = False
        self._conn: socket.socket | None = None
        self._lsock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # Called with each complete line from the reader thread (the I/O
        # scenarios collect a command's output this way); keep them quick.
        self.listeners: list = []
        self._listen()

    def _listen(self) -> None:
        self.path = str(socket_dir() / f"{self.name}.sock")
        self._lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        try:
            self._lsock.bind(self.path)
            os.chmod(self.path, 0o777)
            self._lsock.listen(1)
        except BaseException:
            self._lsock.close()
            self._lsock = None
            raise
        self._start_thread(self._run)

    def _start_thread(self, target) -> None:
        self._thread = threading.Thread(target=target, name=f"console-{self.name}", daemon=True)
        self._thread.start()

    # -- reader thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn, _ = self._lsock.accept()
        except OSError:
            self._mark_eof()
            return
        self._conn = conn
        self._pump(lambda: conn.recv(65536))

    def _pump(self, recv) -> None:
        """Read chunks until EOF, stamping each complete line when it arrives."""
        pending = b""
        while not self._stop:
            try:
                chunk = recv()
            except Exception:      # socket closed under us, or a libvirt stream error
                break
            now = time.perf_counter_ns()
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._line(raw.decode("utf-8", "replace"), now)
        if pending:
            self._line(pending.decode("utf-8", "replace"), time.perf_counter_ns())
        self._mark_eof()

    def _line(self, line: str, now: int) -> None:
        line = line.rstrip("\r")
        self._lines.append(line)
        if self._size < MAX_CONSOLE:
            self._text.append(line)
            self._size += len(line) + 1
        for fn in list(self.listeners):
            fn(line)
        was_ready, was_done = self.probe.ready, self.probe.done
        probe_fmt.feed(self.probe, line)
        if self.probe.ready and not was_ready:
            self.ready_ns = now
            self.ready.set()
        if self.probe.done and not was_done:
            self.done_ns = now
            self.done.set()

    def _mark_eof(self) -> None:
        self.eof_ns = time.perf_counter_ns()
        self.eof.set()

    # -- caller side -----------------------------------------------------------------
    def text(self) -> str:
        return "\n".join(self._text) + ("\n" if self._text else "")

    def tail(self, n: int = 20) -> str:
        lines = [ln for ln in list(self._lines) if ln.strip()]
        return "\n".join(lines[-n:])

    def cvb_lines(self) -> list[str]:
        return [c for c in (probe_fmt.cvb_line(ln) for ln in self._text) if c]

    def send(self, data: bytes) -> None:
        """Type ``data`` into the guest's serial port (the I/O /init reads
        commands from it); only once QEMU has connected."""
        conn = self._conn
        if conn is None:
            raise OSError("the guest's console is not connected")
        conn.sendall(data)

    def close(self) -> None:
        """Stop reading and remove the socket file; idempotent."""
        self._stop = True
        for s in (self._conn, self._lsock):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._join()
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _join(self) -> None:
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout=2)


class StreamConsole(Console):
    """The console through libvirt's stream API (virDomainOpenConsole).

    For remote URIs (qemu+ssh://host/system): the guest's QEMU runs on another
    host and cannot connect to a local socket, so the serial port is a pty on
    that host and libvirt relays it.  Lines are stamped when they reach this
    process, so they carry the relay's latency (an RPC hop), which a local
    socket console does not."""

    def _listen(self) -> None:
        self._stream = None

    def attach(self, conn, dom) -> None:
        """Open the console of a (paused) domain and start reading it."""
        from .conn import libvirt_module
        libvirt = libvirt_module()
        st = conn.newStream(0)
        dom.openConsole(None, st, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self._stream = st

        def recv() -> bytes:
            data = st.recv(65536)
            return b"" if isinstance(data, int) else data   # -2: would block; -1: error
        self._start_thread(lambda: self._pump(recv))

    def close(self) -> None:
        self._stop = True
        if self._stream is not None:
            try:
                self._stream.abort()
            except Exception:
                pass
        self._join()
