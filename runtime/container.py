"""The container lifecycle: spawn (fork, set up in the child, exec), wait, kill
and delete, with the timestamps the harness needs.

The runtime forks the calling process itself (no helper binary to exec): the
child first moves itself into its cgroups (v1: "0" into each `tasks` file,
which skips the RCU grace period a write of another pid waits for; on v2 a
helper thread of the parent writes cgroup.procs meanwhile), creates or joins
namespaces, and, when a user namespace or a veth needs it, stops on a sync
pipe while the parent writes the uid/gid maps or wires the veth.  A pid namespace only applies to children: without
a user namespace the parent unshares it around fork() (the child is pid 1 at
once); with one, the child clones the init with CLONE_PARENT, so that init is
still a direct child of the caller, who can waitpid() it.  The init mounts
the rootfs, drops privileges, loads seccomp and execs.

Caveats for callers: spawn() from the thread that will outlive the container
(its death SIGKILLs the container, PR_SET_PDEATHSIG), and do not fork from
other threads while spawn() runs (the parent's pid namespace for children is
swapped for about a millisecond).
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import time

from common.errors import CvbError, require_root
from common.procs import descendants

from . import cgroups, hooks, namespaces, stage, state
from . import syscalls as sc
from .isolation import Isolation
from .plan import Plan, plan

_own_pidns: tuple[int, int] = (0, -1)
# subprocess.PIPE and subprocess.DEVNULL, the values callers pass; subprocess
# itself is not imported (~3 ms of every CLI start).
PIPE, DEVNULL = -1, -3


def _preload(p: Plan) -> None:
    """Import what the child imports on demand after pivot_root, where the
    module files are out of reach: subprocess for hooks, socket for lo."""
    if p.hooks:
        import subprocess  # noqa: F401
    if p.loopback:
        import socket  # noqa: F401


def _in_new_pidns(start) -> int:
    """start() (os.fork, or posix_spawn of the C stage) with the child as pid 1
    of a new pid namespace; the caller's pid_for_children is restored before
    this returns in the parent."""
    global _own_pidns
    if _own_pidns[0] != os.getpid():
        _own_pidns = (os.getpid(), os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    sc.unshare(sc.CLONE_NEWPID)
    try:
        pid = start()
    except BaseException:
        sc.setns(_own_pidns[1], sc.CLONE_NEWPID)
        raise
    if pid:
        sc.setns(_own_pidns[1], sc.CLONE_NEWPID)
    return pid


# Strong references: a container the caller forgot to delete is still
# cleaned up when the interpreter exits.
_live: set[Container] = set()


@atexit.register
def _cleanup_at_exit() -> None:
    for c in list(_live):
        if c._owner_pid != os.getpid():
            continue  # a forked copy of the owner exiting: not its containers
        try:
            c.delete()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class Container:
    """One running container; a context manager whose exit kills and deletes it."""

    def __init__(self, cid: str):
        self.id = cid
        self.pid = 0
        self.t_spawn_ns = 0
        self.t_gone_ns: int | None = None
        self.stdout = None
        self.warnings: list[str] = []
        # what ran between spawn and exec: "python" (runtime/child.py after a
        # fork) or "c" (runtime/stage/stage.c after posix_spawn)
        self.stage = "python"
        self._rc: int | None = None
        self._pidfd: int | None = None
        self._cg: list[str] = []
        self._net = None
        self._deleted = False
        self._owner_pid = os.getpid()
        self._cfg = None  # the parsed config.json, for the poststop hooks

    def save_state(self, status: str, bundle: str, detached: bool = False) -> None:
        """The full state record (the CLI's `state` reads it).  A detached
        container owns itself: it lives on after the CLI that created it."""
        owner = ({"owner": self.pid, "owner_start": state.starttime(self.pid)} if detached
                 else _owner_record())
        state.write(self.id, {"id": self.id, **owner, "pid": self.pid,
                              "pid_start": state.starttime(self.pid), "cgroups": self._cg,
                              "bundle": bundle, "status": status,
                              "net": self._net.record() if self._net else None})

    def wait(self, timeout: float | None = None) -> int:
        """Exit status; 128+N when killed by signal N.  Raises TimeoutError."""
        if self._rc is not None:
            return self._rc
        if timeout is not None:
            if self._pidfd is not None:
                if not select.select([self._pidfd], [], [], max(0.0, timeout))[0]:
                    raise TimeoutError(f"container {self.id} still running after {timeout}s")
            else:  # no pidfd (old kernel): poll rather than block past the timeout
                deadline = time.monotonic() + timeout
                while self.poll() is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"container {self.id} still running after {timeout}s")
                    time.sleep(0.001)
                return self._rc
        _, status = os.waitpid(self.pid, 0)
        self._rc = _exit_code(status)
        return self._rc

    def poll(self) -> int | None:
        if self._rc is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._rc = _exit_code(status)
        return self._rc

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self._rc is None and self.pid:
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def host_pids(self) -> list[int]:
        if self._cg:
            return sorted(cgroups.backend().pids(self._cg))
        if self._rc is not None:
            return []
        return descendants(self.pid)

    def cgroup_dirs(self) -> list[str]:
        return list(self._cg)

    def delete(self) -> None:
        """Kill what is left and remove cgroups, netns, veth and state; idempotent.

        Every step runs even if an earlier one fails; the state file, the only
        record of what exists, is removed only once everything it names is gone,
        so a failed delete leaves a record that sweep (or a second delete) finishes."""
        if self._deleted:
            return
        errors: list[BaseException] = []

        def step(fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - collected, re-raised below
                errors.append(e)

        if self.pid and self._rc is None:
            step(self.kill, signal.SIGKILL)
            step(self.wait)
        if self._cg:
            step(cgroups.kill_all, self._cg)
            step(cgroups.backend().remove, self._cg)
            step(cgroups.remove_empty_parents, self._cg)
        if self._net is not None:
            step(self._net.remove)
        if self.stdout is not None:
            step(self.stdout.close)
        if self._pidfd is not None:
            step(os.close, self._pidfd)
            self._pidfd = None
        if errors:
            raise errors[0]
        if self._cfg is not None and self._cfg.hooks.get("poststop"):
            self.warnings.extend(hooks.poststop(self._cfg, self.id))
        state.remove(self.id)
        self._deleted = True
        _live.discard(self)
        self.t_gone_ns = time.perf_counter_ns()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"<Container {self.id} pid={self.pid} rc={self._rc}>"


_owner: tuple[int, int | None] = (0, None)


def _owner_record() -> dict:
    global _owner
    if _owner[0] != os.getpid():
        _owner = (os.getpid(), state.starttime(os.getpid()))
    return {"owner": _owner[0], "owner_start": _owner[1]}


def spawn(bundle, args: list[str] | None = None, iso: Isolation | None = None, *,
          name: str | None = None, stdout=None, stderr=None, detached: bool = False,
          ignore_unsupported: bool = False, preserve_fds: int = 0, seccomp_started=None) -> Container:
    """Start a container and return once its process has exec'd (or failed to).

    detached=True (the CLI's `create`) leaves the init blocked before exec
    until `start`, owned by itself rather than by the caller.  A security
    setting of config.json this host cannot apply is an error before anything
    starts; ignore_unsupported=True makes it a warning in Container.warnings.
    preserve_fds=N keeps the caller's fds 3..3+N-1 open in the container (as
    runc --preserve-fds); every other fd is closed at exec.  seccomp_started:
    a seccomp.prestart() compile, used if it is of this plan's profile."""
    require_root("container runtime")
    if name:
        cid = state.check_id(name)
    else:
        from common.naming import unique
        cid = unique("ctr")
    p = plan(bundle, args, iso, cid, detached, ignore_unsupported=ignore_unsupported,
             preserve_fds=preserve_fds)
    c = Container(cid)
    c.warnings = p.cfg.warnings
    bg = None
    if p.hooks:
        c._cfg = p.cfg
    be = cgroups.backend() if p.limits is not None else None
    planned_cg = be.leaf_dirs(cid, p.limits.path) if be else []
    p.cgroup_dirs = planned_cg
    # One state write before anything else exists: it names the owner and
    # every cgroup, so a sweep after a kill -9 anywhere below finds them.
    state.create(cid, {**_owner_record(), "cgroups": planned_cg, "bundle": p.cfg.bundle,
                       "status": "creating"})
    fds: list[int] = []
    try:
        if p.seccomp:  # compiled beside everything below; the child waits for it
            from . import seccomp
            if seccomp_started is not None and seccomp_started.profile is not None \
                    and seccomp_started.profile == p.seccomp_profile:
                bg, seccomp_started = seccomp_started, None
                bg._warnings = p.cfg.warnings  # they arrive when it is joined
            else:
                bg = seccomp.Background(p.seccomp_profile, p.cfg.warnings)
            p.bpf_fd = bg.r
        if be is not None:
            c._cg = be.create(planned_cg, p.limits)
            p.self_join = be.self_join_files(c._cg)
        if detached:
            path = str(state.fifo(cid))
            os.mkfifo(path, 0o622)
            os.chmod(path, 0o622)  # not the caller's umask: a userns init writes it as "other"
            # An O_PATH fd survives pivot_root; the init reopens it through
            # /proc/self/fd, as runc does with its exec.fifo.
            p.fifo = os.open(path, os.O_PATH | os.O_CLOEXEC)
            fds.append(p.fifo)
        join_fds = namespaces.open_paths(p.ns_join)
        fds += [fd for _, fd in join_fds]
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        fds += [status_r, status_w, go_r, go_w]
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        fds.append(null)
        out_r = None
        if stdout == DEVNULL or stderr == DEVNULL:
            devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            fds.append(devnull)
            stdout = devnull if stdout == DEVNULL else stdout
            stderr = devnull if stderr == DEVNULL else stderr
        if stdout is None or stdout == PIPE:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            fds += [out_r, out_w]
        else:
            out_w = stdout if isinstance(stdout, int) else stdout.fileno()
        if stderr == PIPE:
            raise CvbError("spawn", "stderr=PIPE is not supported", "pass a file, an fd, or None (inherit)")
        err_w = 2 if stderr is None else (stderr if isinstance(stderr, int) else stderr.fileno())
        exe = stage.binary() if stage.eligible(p) else None
        prog = stage.init_program(p) if exe is not None else None
        if prog is None:  # the Python child: what it runs is imported before the fork
            from .child import child
            _preload(p)
        c.t_spawn_ns = time.perf_counter_ns()
        if prog is not None:  # nothing for Python to do in the child: the C stage, vfork'd
            def start() -> int:
                return stage.start(exe, p, prog, status_w, go_r, (null, out_w, err_w))
            pid = _in_new_pidns(start) if p.pre_pid else start()
            c.stage = "c"
        else:
            pid = _in_new_pidns(os.fork) if p.pre_pid else os.fork()
        if pid == 0:
            child(p, status_w, go_r, (null, out_w, err_w), join_fds,
                  [fd for fd in (status_r, go_w, out_r, bg and bg.w) if fd is not None])
        c.pid = pid
        if bg is not None:  # the child's copy is enough; a dead child then means EPIPE
            os.close(bg.r)
            bg.r = -1
        if not detached:
            _live.add(c)
        for fd in (status_w, go_r) + ((out_w,) if out_r is not None else ()):
            os.close(fd)
            fds.remove(fd)
        if out_r is not None:
            c.stdout = os.fdopen(out_r, "rb")
            fds.remove(out_r)
        try:
            _parent_sync(c, p, status_r, go_w)
        except CvbError:
            if bg is not None:
                bg.join()
                if bg.error is not None:
                    raise bg.error from None  # why the child stopped: the filter failed
            raise
        if bg is not None:
            bg.join()  # done: the child has read the filter; the warnings are in
        # the pid on record: `state` never shows a live container with pid 0
        c.save_state("created" if detached else "running", p.cfg.bundle, detached=detached)
        if not detached and p.hooks.get("poststart"):
            hooks.run(p.cfg, ("poststart",), cid, "running", c.pid)
        return c
    except BaseException:
        c.delete()
        raise
    finally:
        if bg is not None:
            bg.join()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class _Joiner:
    """Moves the child into its cgroups on a helper thread (cgroup v2).

    Writing another process's pid to cgroup.procs waits for an RCU grace
    period (milliseconds, more on a busy host), so it runs from right after
    fork, in parallel with the child's unshare and rootfs work; the child
    waits for it only before exec."""

    def __init__(self, dirs: list[str], pid: int):
        import threading
        self.dirs, self.error = dirs, None
        self.thread = threading.Thread(target=self._run, args=(pid,), name="cvbench-cgroup-join")
        self.thread.start()

    def _run(self, pid: int) -> None:
        try:
            cgroups.backend().add(self.dirs, pid)
        except BaseException as e:  # noqa: BLE001 - re-raised by join()
            self.error = e

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _parent_sync(c: Container, p: Plan, status_r: int, go_w: int) -> None:
    """The parent's half of the handshake with child.child()."""
    reader = os.fdopen(os.dup(status_r), "rb", buffering=0)
    joiner = _Joiner(c._cg, c.pid) if p.parent_join else None
    try:
        msg = b""
        if p.handshake:
            msg = reader.readline()
            if msg != b"U\n":
                return _failed(c, msg)
            if p.uid_map:
                try:
                    namespaces.write_id_maps(c.pid, p.uid_map, p.gid_map)
                except OSError as e:
                    raise CvbError("linux.uidMappings/gidMappings", f"the kernel refused them ({e.strerror})",
                                   "give mappings of host ids that exist and do not overlap") from None
            if p.hooks.get("prestart") or p.hooks.get("createRuntime"):
                # prestart's state says "created", as crun's (runtime-tools checks it)
                hooks.run(p.cfg, ("prestart",), c.id, "created", c.pid)
                hooks.run(p.cfg, ("createRuntime",), c.id, "creating", c.pid)
            if p.iso.netns and p.iso.network == "veth":
                from . import network
                c._net = network.Veth.new(c.id)
                c.save_state("creating", p.cfg.bundle)
                c._net.create(c.pid)
            if joiner is not None and p.double_fork:
                joiner.join()  # the init is cloned after "G" and inherits the cgroup
                joiner = None
            os.write(go_w, b"G")
        if p.double_fork:
            msg = reader.readline()
            if not msg.startswith(b"P"):
                return _failed(c, msg)
            intermediate, c.pid = c.pid, int(msg[1:])
            os.waitpid(intermediate, 0)
        if p.parent_join:
            if joiner is not None:
                try:
                    joiner.join()
                except OSError:
                    # the child may have died first: its own message says why
                    msg = reader.readline()
                    if msg.startswith(b"E"):
                        return _failed(c, msg)
                    raise
                finally:
                    joiner = None
            try:
                os.write(go_w, b"C")
            except BrokenPipeError:
                pass  # the child failed meanwhile; its message follows
        msg = reader.readline()
        if msg not in (b"", b"C\n"):
            return _failed(c, msg)
        _open_pidfd(c)
    finally:
        if joiner is not None:
            joiner.thread.join()
        reader.close()


def _open_pidfd(c: Container) -> None:
    try:
        c._pidfd = os.pidfd_open(c.pid)
    except OSError:
        c._pidfd = None


def _failed(c: Container, msg: bytes) -> None:
    """The child reported an error (E...) or died without a word."""
    _open_pidfd(c)
    c.wait()
    if msg.startswith(b"E"):
        why = msg[1:].decode(errors="replace").strip()
    else:
        why = f"the child exited with status {c._rc} before exec ({msg!r})"
    raise CvbError(f"container {c.id}", why,
                   "check the bundle and the isolation settings (--debug for details)", status=1)


def _exit_code(status: int) -> int:
    """waitpid status -> shell-style exit code: 128+N for a signal, as runc reports."""
    rc = os.waitstatus_to_exitcode(status)
    return 128 - rc if rc < 0 else rc
