"""The child's half of a container start: namespaces, then (in the
container's init) rootfs, hostname, network, privileges, seccomp and exec.

Runs between fork() and exec() in a copy of the caller, so it only uses
modules imported before the fork and reports failures as one line on the
sync pipe instead of raising.
"""
from __future__ import annotations

import os
import resource
import select
import signal

from . import capabilities, cgroups, namespaces, rootfs
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
    if iso.mountns:
        if iso.pivot_root:
            binds = []
            if p.limits is not None and any(m.type in ("cgroup", "cgroup2") for m in cfg.mounts):
                binds = cgroups.backend().binds(cgroups.backend().leaf_dirs(p.cid))
            rootfs.prepare(p.root, cfg.mounts if iso.follow_bundle else [],
                           propagation=cfg.propagation, in_userns=iso.userns, cgroup_binds=binds)
            rootfs.switch_root(p.root)
            for key, value in p.sysctl.items():  # before /proc/sys turns read-only
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(value)
            rootfs.mask(cfg.masked_paths)
            rootfs.readonly(cfg.readonly_paths)
            if cfg.root_readonly and iso.follow_bundle:
                rootfs.readonly_root()
        else:
            sc.mount(None, "/", None, rootfs.PROPAGATION[cfg.propagation])
    if iso.utsns and "utsns" not in p.ns_join:  # a joined one keeps its owner's name
        sc.sethostname(cfg.hostname or "cvbench")
    if iso.netns and iso.network != "none":
        namespaces.loopback_up()
    if iso.follow_bundle:
        for name, soft, hard in cfg.rlimits:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg.umask is not None:
            os.umask(cfg.umask)
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
    early_seccomp = p.bpf is not None and not iso.no_new_privs
    if early_seccomp:
        sc.seccomp_load_bpf(p.bpf)
    if cfg.gid or cfg.additional_gids or cfg.uid:
        os.setgroups(cfg.additional_gids)
        os.setresgid(cfg.gid, cfg.gid, cfg.gid)
        os.setresuid(cfg.uid, cfg.uid, cfg.uid)
    if p.bpf is not None and not early_seccomp:
        sc.seccomp_load_bpf(p.bpf)
    if p.caps is not None:
        capabilities.apply_sets(p.caps)
    if not p.detached:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(p.cwd)
    if p.fifo is not None:
        send(status_w, "C")
        os.close(status_w)
        fd = os.open(f"/proc/self/fd/{p.fifo}", os.O_WRONLY)  # blocks until `start` opens it
        os.write(fd, b"0")
        os.close(fd)
    os.execve(p.exe, p.argv, p.env)


