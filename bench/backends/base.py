"""The one shape every backend has, so a scenario never branches on its type.

``run(args)`` times one instance from spawn to ``CVB READY`` (ready) and to
fully gone (lifecycle); ``start(args)`` returns a live instance once it is
READY, for memory and density.  Instances are context managers: leaving the
block, normally or through an exception or KeyboardInterrupt, stops them and
removes whatever they created.
"""
from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from common import probe, procs
from common.errors import CvbError

from .. import stream


@dataclass
class CrossCommand:
    """What an independent timer runs: ``argv`` (``{id}`` in it is replaced by
    each of ``ids`` in turn, one run each; no ids: the same argv every run),
    under ``wrapper`` (crun's masked namespace), with Popen ``kw``;
    ``cleanup()`` removes what the runs leave."""
    argv: list[str]
    wrapper: list[str] = field(default_factory=list)
    kw: dict = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    cleanup: object = None


@dataclass
class Timings:
    """One instance's life, in seconds from just before the spawn call."""
    ready_s: float | None
    gone_s: float | None
    rc: int | None
    probe: probe.ProbeOutput = field(default_factory=probe.ProbeOutput)
    console: str = ""


class InstanceFailed(CvbError):
    """An instance did not reach READY or exited badly: the measured thing failed."""

    def __init__(self, backend: str, why: str, console: str = ""):
        tail = console.strip()[-400:]
        super().__init__(backend, why + (f"; output tail:\n{tail}" if tail else ""),
                         "see the output above; 'python -m bench list' shows backend availability",
                         status=1)


class Instance:
    """A live instance.  Subclasses fill memory/host_pids/stop."""

    backend: str = ""

    def memory(self) -> dict:
        raise NotImplementedError

    def host_pids(self) -> list[int]:
        raise NotImplementedError

    def cgroup_dirs(self) -> list[str]:
        """The instance's own cgroup folders (bench.memory.headline); none by default."""
        return []

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Backend:
    name: str = ""
    kind: str = ""          # "process", "container" or "vm"

    @functools.cached_property
    def img(self):
        """The shared image, read once per backend object (never per timed spawn)."""
        from .. import image
        return image.load()

    @property
    def bundle(self) -> str:
        """The bundle folder every container backend reads: the image's, or the
        user's ``--config`` (bench.bundle); the same one for all of them."""
        from .. import bundle
        return bundle.active_bundle(self.img.bundle)

    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {}

    def command_for(self, args: list[str], runs: int) -> CrossCommand:
        """The one process an independent timer (hyperfine -N) can run
        ``runs`` times for this backend, set up as the harness's own spawns
        are (a container runtime gets a fresh id, bundle and cgroup each run)."""
        raise NotImplementedError(f"{self.name}: no single command to cross-check")

    def prepare_worker(self) -> None:
        """Once per measuring worker process, before anything is timed (crun
        enters its masked mount namespace here).  Most backends need nothing."""

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        raise NotImplementedError

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        raise NotImplementedError


def seconds(t0_ns: int, t_ns: int | None) -> float | None:
    return None if t_ns is None else (t_ns - t0_ns) / 1e9


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    """Exit status, or None if ``proc`` is still running after ``timeout``.

    Blocks on a pidfd, which wakes the moment the process exits.  Not
    ``Popen.wait(timeout=...)``: that polls with sleeps of 0.5, 1, 2, ... ms,
    which added 0.5-3.5 ms to about half of the host's 0.6 ms lifecycles and
    put the harness 2-6x off hyperfine's figure for the same command."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # no pidfd (kernel < 5.3) or already reaped
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        select.select([fd], [], [], max(timeout, 0.0))
    finally:
        os.close(fd)
    return proc.poll()


def _until_exit(proc, s: stream.ProbeStream, deadline: float) -> None:
    """After READY, wait for the process to exit on its pidfd alone, so the
    harness is not woken again for each later line (hyperfine, the cross-check,
    is woken once, by the exit); every 50 ms it drains the pipe so that a
    chatty instance can never block on a full one."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        s.until_eof(deadline)
        return
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the instance did not exit before the deadline")
            if select.select([fd], [], [], min(left, 0.05))[0]:
                return
            while not s.eof and select.select([s.fd], [], [], 0)[0]:
                s.read_once(0)
    finally:
        os.close(fd)


def reap(proc: subprocess.Popen, deadline: float) -> int:
    """Wait for ``proc`` until ``deadline``; TERM then KILL it past that."""
    rc = _wait_exit(proc, max(deadline - time.monotonic(), 0.01))
    if rc is not None:
        return rc
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    raise TimeoutError(f"pid {proc.pid} survived SIGKILL")


class Spawned:
    """The part of a Popen that timed_popen and reap use, started with
    ``os.posix_spawn``: measured here, about 40-60 us less per spawn than
    subprocess.Popen (about 10% of a bare 0.45 ms fork+exec), which is the
    harness's own overhead, not the backend's.  stdin is /dev/null, stdout a
    pipe, stderr ``stderr_fd``; every other fd of the parent is close-on-exec."""

    def __init__(self, cmd: list[str], env: dict | None, stderr_fd: int):
        self.args = cmd
        self.returncode: int | None = None
        r, w = os.pipe()
        try:
            actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, stderr_fd, 2)]
            self.pid = os.posix_spawn(cmd[0], cmd, os.environ if env is None else env,
                                      file_actions=actions)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.stdout = os.fdopen(r, "rb", buffering=0)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        rc = _wait_exit(self, timeout)
        if rc is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return rc

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


def _spawn(cmd: list[str], err_f, popen_kw: dict):
    """posix_spawn where it can do what was asked (an absolute program, at most
    an environment), else subprocess.Popen (a working directory, passed fds)."""
    if os.path.isabs(cmd[0]) and set(popen_kw) <= {"env"}:
        return Spawned(cmd, popen_kw.get("env"), err_f.fileno())
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_f, **popen_kw)


def timed_popen(backend: str, cmd: list[str], timeout: float, *, cleanup=None,
                **popen_kw) -> Timings:
    """Spawn ``cmd`` (stdout a pipe), time READY and process exit, always run
    ``cleanup()`` afterwards (outside the timed interval)."""
    deadline = time.monotonic() + timeout
    proc = None
    # stderr to a file, not a pipe: nobody reads it until the end, and a runtime
    # that writes more than a pipe holds (runsc's debug output) would block.
    err_f = tempfile.TemporaryFile()
    try:
        t0 = time.perf_counter_ns()
        proc = _spawn(cmd, err_f, popen_kw)
        s = stream.ProbeStream(proc.stdout.fileno())
        try:
            if s.until_ready(deadline) is not None:
                _until_exit(proc, s, deadline)
            rc = reap(proc, deadline)
            t_gone = time.perf_counter_ns()
            s.until_eof(deadline)   # the rest of the output, outside the clock
        except TimeoutError as e:
            raise InstanceFailed(backend, f"timed out after {timeout:.0f} s ({e})", s.console()) from None
        err_f.seek(0)
        err = err_f.read().decode("utf-8", "replace")
        if s.ready_ns is None:
            raise InstanceFailed(backend, f"exited with {rc} before CVB READY", s.console() + err)
        return Timings(seconds(t0, s.ready_ns), seconds(t0, t_gone), rc, s.out, s.console())
    finally:
        if proc is not None:
            if proc.poll() is None:
                reap(proc, time.monotonic())
            proc.stdout.close()
        err_f.close()
        if cleanup is not None:
            cleanup()


class PopenInstance(Instance):
    """A long-lived instance whose host side is one foreground process
    (the probe itself, or a runtime's ``run`` command)."""

    def __init__(self, backend: str, cmd: list[str], timeout: float, *, on_stop=None,
                 workload_pids=None, cgroup_dirs=None, settle: bool = False, **popen_kw):
        self.backend = backend
        self._on_stop = on_stop
        self._workload_pids = workload_pids
        self._cgroup_dirs = cgroup_dirs or (lambda: [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, **popen_kw)
        self.stream = stream.ProbeStream(self.proc.stdout.fileno())
        try:
            deadline = time.monotonic() + timeout
            if self.stream.until_ready(deadline) is None:
                raise InstanceFailed(backend, "exited before CVB READY", self.stream.console())
            # mem and sleep print one line once settled (memory touched): wait for it
            # so memory() sees the steady state, not the start-up.
            while settle and not self.stream.out.values and not self.stream.eof:
                self.stream.read_once(deadline - time.monotonic())
                if time.monotonic() > deadline:
                    raise InstanceFailed(backend, "did not settle before the deadline",
                                         self.stream.console())
        except BaseException:
            self.stop()
            raise

    def host_pids(self) -> list[int]:
        from .. import memory
        pids = procs.descendants(self.proc.pid) + memory.cgroup_procs(self._cgroup_dirs())
        return sorted(set(pids))

    def cgroup_dirs(self) -> list[str]:
        return self._cgroup_dirs()

    def memory(self) -> dict:
        from .. import memory
        pids = self.host_pids()
        work = self._workload_pids(pids) if self._workload_pids else [self.proc.pid]
        dirs = self._cgroup_dirs()
        return memory.split(pids, work, memory.cgroup_charged(dirs))

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
            reap(self.proc, time.monotonic() + 10)
        finally:
            self.proc.stdout.close()
            if self._on_stop is not None:
                cb, self._on_stop = self._on_stop, None
                cb()


def long_lived(args: list[str]) -> bool:
    """Probe commands that print a line once settled (mem: memory touched)."""
    return bool(args) and args[0] in ("mem", "sleep")


def probe_pids(pids: list[int]) -> list[int]:
    """The processes that are the workload itself: the probe binary."""
    from .. import memory
    return [p for p in pids if memory.exe_name(p) == "probe"]


def which(binary: str) -> str | None:
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, binary)
        if os.access(p, os.X_OK):
            return p
    return None
