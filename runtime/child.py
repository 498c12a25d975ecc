"""The child's half of a container start: namespaces, then (in the
container's init) rootfs, hostname, network, privileges, seccomp and exec.

Runs between fork() and exec() in a copy of the caller, so it only uses
modules imported before the fork and reports failures as one line on the
sync pipe instead of raising.
"""
from __future__ import annotations

import errno
import os
import resource
import select
import signal

from . import capabilities, cgroups, hooks, namespaces, rootfs, seccomp
from . import syscalls as sc
from .plan import Plan


def send(fd: int, msg: str) -> None:
    os.write(fd, (msg.replace("\n", " ") + "\n").encode())


def _exit_if_orphaned(go_r: int) -> None:
    """The parent may have died before PR_SET_PDEATHSIG took effect: then
    its end of the go pipe is closed (the parent holds it until we exec)."""
    poller = select.poll()
    poller.register(go_r, select.POLLIN)
    for _, events in poller.poll(0):
        if events & select.POLLHUP:
            os._exit(125)


def child(p: Plan, status_w: int, go_r: int, stdio: tuple[int, int, int], join_fds,
          parent_ends: list[int]) -> None:
    """Runs in the forked child; never returns."""
    try:
        # The parent's ends of the sync pipes: were they left open here, a
        # parent that dies mid-start would never be seen (no EOF).
        for fd in parent_ends:
            os.close(fd)
        if not p.detached:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # again before exec: creds reset it
            _exit_if_orphaned(go_r)
        for i, fd in enumerate(stdio):
            if fd != i:
                os.dup2(fd, i)
        for tasks in p.self_join or ():  # first, while still host root
            fd = os.open(tasks, os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)
        namespaces.join(join_fds)
        if p.child_ns:
            sc.unshare(namespaces.flags(p.child_ns))
        if p.handshake:
            send(status_w, "U")
            if os.read(go_r, 1) != b"G":
                os._exit(125)  # the parent gave up
        if p.iso.userns:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        if "timens" in p.ns_new:
            namespaces.write_time_offsets(p.cfg.time_offsets if p.iso.follow_bundle else {})
        if p.double_fork:
            pid = sc.clone_parent()
            if pid:
                send(status_w, f"P{pid}")
                os._exit(0)
            if not p.detached:  # the init's parent is the caller (CLONE_PARENT)
                sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                _exit_if_orphaned(go_r)
        init(p, status_w, go_r)
    except BaseException as e:  # noqa: BLE001 - report anything, then die
        try:
            send(status_w, f"E{e}")
        except OSError:  # the parent has gone (after a detached create)
            os.write(2, f"cvbench: container {p.cid}: {e}\n".encode())
        finally:
            os._exit(127)


def init(p: Plan, status_w: int, go_r: int) -> None:
    iso, cfg = p.iso, p.cfg
    os.setsid()
    os.umask(0o022)  # for mountpoints made in the rootfs; the process's own umask is set below
    if p.keyring:
        # never the caller's session keyring (runc: "_ses.<id>", user search added)
        key = sc.join_session_keyring(f"_ses.{p.cid}")
        sc.keyring_setperm(key, 0x3f130000 | (0x8 if iso.userns else 0x80000))
    if p.chroot:
        os.chroot(p.root)
    if iso.mountns:
        if iso.pivot_root:
            binds = []
            if p.limits is not None and any(m.type in ("cgroup", "cgroup2") for m in cfg.mounts):
                binds = cgroups.backend().binds(p.cgroup_dirs)
            rootfs.prepare(p.root, cfg.mounts if iso.follow_bundle else [],
                           propagation=cfg.propagation, in_userns=iso.userns, cgroup_binds=binds,
                           bundle=cfg.bundle, devices=cfg.linux_devices if iso.follow_bundle else ())
            if p.hooks.get("createContainer"):
                hooks.run(cfg, ("createContainer",), p.cid, "creating", os.getpid())
            rootfs.switch_root(p.root)
            for key, value in p.sysctl.items():  # before /proc/sys turns read-only
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(value)
            rootfs.readonly(cfg.readonly_paths)  # runc's order: read-only, then masked
            rootfs.mask(cfg.masked_paths)
            if cfg.root_readonly and iso.follow_bundle:
                rootfs.readonly_root()
            rootfs.finish(cfg.propagation)
        else:  # the ladder's mount-namespace rung: nothing is mounted, nothing may leak
            private = cfg.propagation in ("private", "rprivate")
            sc.mount(None, "/", None, (sc.MS_PRIVATE if private else sc.MS_SLAVE) | sc.MS_REC)
    if iso.utsns and "utsns" not in p.ns_join and cfg.hostname is not None:
        sc.sethostname(cfg.hostname)  # no name of our own: runc sets none either
    if p.loopback:
        namespaces.loopback_up()
    if iso.follow_bundle:
        for name, soft, hard in cfg.rlimits:
            resource.setrlimit(getattr(resource, name), (_rlim_t(soft), _rlim_t(hard)))
    if cfg.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(cfg.oom_score_adj))
    if p.parent_join and os.read(go_r, 1) != b"C":
        os._exit(125)  # the parent could not put us in our cgroup
    if p.late_cgroupns:
        sc.unshare(sc.CLONE_NEWCGROUP)
    if iso.no_new_privs:
        capabilities.set_no_new_privs()
    if p.caps is not None:
        capabilities.drop_bounding(p.caps["bounding"])
        if cfg.uid != 0:
            capabilities.keep_caps()
    # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which a
    # switch to a non-zero uid takes away: then load it first (runc's order).
    bpf = seccomp.receive(p.bpf_fd) if p.seccomp else None
    early_seccomp = bpf is not None and not iso.no_new_privs
    if early_seccomp:
        sc.seccomp_load_bpf(bpf)
    # Always: the caller's supplementary groups must never reach the container.
    os.setgroups(cfg.additional_gids)
    if cfg.gid or cfg.uid:
        os.setresgid(cfg.gid, cfg.gid, cfg.gid)
        os.setresuid(cfg.uid, cfg.uid, cfg.uid)
    if bpf is not None and not early_seccomp:
        sc.seccomp_load_bpf(bpf)
    if p.caps is not None:
        capabilities.apply_sets(p.caps)
    if not p.detached:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(p.cwd)
    if p.fifo is not None:
        try:  # can we open it at all?  Fail now, while `create` still listens
            os.close(os.open(f"/proc/self/fd/{p.fifo}", os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet, as it should be
                raise
        send(status_w, "C")
        os.close(status_w)
        fd = os.open(f"/proc/self/fd/{p.fifo}", os.O_WRONLY)  # blocks until `start` opens it
        os.write(fd, b"0")
        os.close(fd)
    if p.hooks.get("startContainer"):  # inside the container, its paths
        hooks.run(cfg, ("startContainer",), p.cid, "created", os.getpid())
    os.umask(0o022 if cfg.umask is None else cfg.umask)
    clean_exec_state(p.preserve_fds)
    os.execve(p.exe, p.argv, p.env)


def _rlim_t(v: int) -> int:
    """An OCI rlimit (a u64: 2**64-1 is unlimited, as `runc spec` writes it)
    as the signed value Python's setrlimit passes on to the kernel's rlim_t."""
    return v - (1 << 64) if v >= 1 << 63 else v


def clean_exec_state(preserve_fds: int) -> None:
    """What a process inherits across exec besides its files: ignored signals
    (CPython ignores SIGPIPE and SIGXFSZ; a caller may ignore more), the signal
    mask, and every fd.  Only 0-2 and LISTEN_FDS-style preserved fds survive
    (runc's --preserve-fds); the rest are marked close-on-exec last, so an fd
    on the host's tree can never be reached from inside (CVE-2024-21626)."""
    sc.reset_signals()
    import fcntl
    for fd in range(3, 3 + preserve_fds):
        try:
            fcntl.fcntl(fd, fcntl.F_SETFD, 0)
        except OSError:
            pass
    first = 3 + preserve_fds
    try:
        sc.close_range_cloexec(first)
    except OSError:  # before Linux 5.11: one by one
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd >= first:
                try:
                    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
                except OSError:
                    pass
