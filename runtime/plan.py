"""A container's plan: config.json plus the Isolation toggles, resolved in
the parent before the fork.

Resolved before, because after pivot_root the child cannot import a module
or read the bundle.  Nothing is cached across spawns: every spawn reads and
checks config.json and compiles its seccomp filter again (spawn() does that
beside the child: seccomp.Background), as runc and crun do on every start,
so a timed start measures the whole of it.
"""
from __future__ import annotations

import os

from common.errors import CvbError

from . import capabilities, cgroups, namespaces
from . import config as config_mod
from .isolation import NAMESPACES, Isolation
from .record import Factory, record


@record
class Plan:
    """Everything the child needs."""
    cid: str
    root: str
    exe: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    ns_new: list[str]
    ns_join: dict[str, str]
    iso: Isolation
    cfg: config_mod.Config
    caps: dict[str, int] | None = None
    # linux.seccomp (or the ladder's default, None) when a filter is loaded;
    # spawn() compiles it beside the child (seccomp.Background), fd bpf_fd.
    seccomp: bool = False
    seccomp_profile: dict | None = None
    bpf_fd: int | None = None
    limits: cgroups.Limits | None = None
    uid_map: list = Factory(list)
    gid_map: list = Factory(list)
    detached: bool = False
    fifo: int | None = None  # O_PATH fd of the exec FIFO (detached create)
    # The parent unshares the pid namespace itself around fork() (and restores
    # its own right after), so the child is pid 1 at once and no second fork is
    # needed.  Not with a user namespace: the pid namespace must then be owned
    # by the container's user namespace, which only the child can create.
    pre_pid: bool = False
    sysctl: dict[str, str] = Factory(dict)
    # v1: the child moves itself by writing "0" to these `tasks` files, which
    # skips the kernel's global threadgroup lock and its RCU grace period
    # (milliseconds) that a write of another pid to cgroup.procs waits for.
    self_join: list[str] | None = None
    cgroup_dirs: list[str] = Factory(list)
    keyring: bool = False    # join a new session keyring (runc's "_ses.<id>")
    preserve_fds: int = 0    # fds 3..3+N-1 stay open across exec (runc --preserve-fds)
    hooks: dict = Factory(dict)  # config.json's hooks (when following the bundle)
    chroot: bool = False     # no mount namespace in config.json: chroot in the inherited one

    @property
    def double_fork(self) -> bool:
        return not self.pre_pid and ("pidns" in self.ns_new or "timens" in self.ns_new
                                     or "pidns" in self.ns_join)

    @property
    def loopback(self) -> bool:
        """Whether the child brings ``lo`` up: only in a network namespace it
        made itself.  A joined one (a path, as CNI hands over) belongs to its
        creator, and runc leaves it alone too (its loopback "network" exists
        only for a new namespace)."""
        return self.iso.netns and self.iso.network != "none" and "netns" not in self.ns_join

    @property
    def handshake(self) -> bool:
        """Whether the child must stop after unshare() for the parent: to get
        its uid/gid maps or its veth, or to be in its cgroup before cloning
        the init.  Otherwise it runs straight on to exec."""
        return (self.iso.userns or (self.iso.netns and self.iso.network == "veth")
                or (self.double_fork and self.parent_join)
                or bool(self.hooks.get("prestart") or self.hooks.get("createRuntime")))

    @property
    def parent_join(self) -> bool:
        """The parent moves the child into its cgroups (v2: cgroup.procs)."""
        return self.limits is not None and not self.self_join

    @property
    def late_cgroupns(self) -> bool:
        """A cgroup namespace is rooted where its creator stands, so with an own
        cgroup it is made only after the parent has moved the child there."""
        return "cgroupns" in self.ns_new and self.parent_join

    @property
    def child_ns(self) -> list[str]:
        return [n for n in self.ns_new if not (self.pre_pid and n == "pidns")
                and not (self.late_cgroupns and n == "cgroupns")]


def _resolve_exe(root: str, argv0: str, env: dict[str, str], pivot: bool) -> str:
    """argv[0] as a path: inside the new root with pivot_root, else below root."""
    cands = [argv0] if "/" in argv0 else [
        os.path.join(d, argv0) for d in env.get("PATH", "/usr/bin:/bin").split(":") if d]
    for c in cands:
        host = os.path.join(root, c.lstrip("/"))
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return c if pivot else host
    raise CvbError("process.args[0]", f"{argv0!r} not found as an executable in {root}",
                   "give a path that exists in the bundle's rootfs")


def home(root: str, uid: int) -> str:
    """HOME as runc sets it: the user's entry in the rootfs's /etc/passwd, else /.
    Read through RESOLVE_IN_ROOT, so a symlinked passwd never reads the host's."""
    from . import syscalls as sc
    try:
        rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = sc.openat2(rfd, "etc/passwd", os.O_RDONLY, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(rfd)
        with os.fdopen(fd, "r", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid) and parts[5]:
                    return parts[5]
    except OSError:
        pass
    return "/"


def unsupported_check(cfg: config_mod.Config, ignore: bool) -> None:
    """Fail closed: a security setting this host cannot apply stops the start
    before anything exists, naming the field; ignore=True (the CLI's
    --ignore-unsupported) turns each into a warning on Container.warnings."""
    for fld, why in cfg.unsupported:
        if not ignore:
            raise CvbError(fld, f"{why}, so it cannot be applied",
                           "remove it from config.json, or pass --ignore-unsupported to run without it")
        cfg.warnings.append(f"{fld}: {why}; not applied (--ignore-unsupported)")


def plan(bundle, args, iso: Isolation, cid: str, detached: bool = False, *,
         ignore_unsupported: bool = False, preserve_fds: int = 0) -> Plan:
    cfg = config_mod.load(bundle)
    iso = iso if iso is not None else Isolation.full()
    if iso.follow_bundle:
        ns = {k: (k in cfg.namespaces or k in iso.added) and k not in iso.dropped for k in NAMESPACES}
        # noNewPrivileges is the bundle's to set too (runc spec says true); an
        # explicit --with/--without still wins.
        nnp = (cfg.no_new_privs or "no_new_privs" in iso.added) and "no_new_privs" not in iso.dropped
        iso = iso.replace(**ns, no_new_privs=nnp)
    ns_join = {k: v for k, v in cfg.namespaces.items() if v and iso.follow_bundle and getattr(iso, k)}
    ns_new = [k for k in NAMESPACES if getattr(iso, k) and k not in ns_join]
    avail = namespaces.available()
    missing = [k for k in ns_new if not avail[k]]
    if missing:
        raise CvbError("namespaces", f"this kernel has no {', '.join(missing)}",
                       "switch that mechanism off, or use a newer kernel")
    chroot = False
    if iso.follow_bundle and iso.pivot_root and not (iso.mountns or "mountns" in ns_join):
        # no mount namespace listed: the runtime's own is inherited (runtime-spec),
        # and the root is changed with chroot.  Anything that mounts would then
        # change the host's mount table, so it is refused, as runc does.
        for fld, v in (("mounts", cfg.mounts), ("linux.maskedPaths", cfg.masked_paths),
                       ("linux.readonlyPaths", cfg.readonly_paths), ("root.readonly", cfg.root_readonly)):
            if v:
                raise CvbError(fld, "needs a mount namespace of the container's own (without one it "
                               "would change the host's mounts)",
                               "add {\"type\": \"mount\"} to linux.namespaces, or remove it")
        iso, chroot = iso.replace(pivot_root=False), True
    if iso.pivot_root and not (iso.mountns or "mountns" in ns_join):
        raise CvbError("isolation", "pivot_root needs a mount namespace", "switch mountns on")
    argv = list(args) if args else list(cfg.args)
    env = dict(e.split("=", 1) for e in cfg.env if "=" in e)
    if "HOME" not in env:
        env["HOME"] = home(cfg.root, cfg.uid)
    inside = iso.pivot_root or chroot
    p = Plan(cid=cid, root=cfg.root, exe=_resolve_exe(cfg.root, argv[0], env, inside),
             argv=argv, env=env, cwd=cfg.cwd if inside else os.path.join(cfg.root, cfg.cwd.lstrip("/")),
             ns_new=ns_new, ns_join=ns_join, iso=iso, cfg=cfg, detached=detached,
             keyring=iso.follow_bundle, preserve_fds=preserve_fds,
             hooks=cfg.hooks if iso.follow_bundle else {}, chroot=chroot)
    if iso.caps:
        p.caps = capabilities.plan(cfg.caps)
    # The bundle's filter, or none when it has none; only the ladder's seccomp
    # rung (not following the bundle) adds the default profile on purpose.
    profile = cfg.seccomp if iso.follow_bundle else (cfg.seccomp or "default")
    if iso.seccomp and profile is not None:
        p.seccomp, p.seccomp_profile = True, (None if profile == "default" else profile)
    if iso.cgroup:
        p.limits = cgroups.Limits(
            memory_bytes=iso.memory_bytes or cfg.memory_limit,
            memory_reservation=cfg.memory_reservation if iso.follow_bundle else None,
            memory_swap=cfg.memory_swap if iso.follow_bundle else None,
            memory_swappiness=cfg.memory_swappiness if iso.follow_bundle else None,
            oom_kill_disable=cfg.oom_kill_disable and iso.follow_bundle,
            cpu_quota_us=iso.cpu_quota_us or (cfg.cpu_quota if cfg.cpu_quota and cfg.cpu_quota > 0 else None),
            cpu_period_us=iso.cpu_period_us or cfg.cpu_period,
            cpu_weight=iso.cpu_weight or (cgroups.shares_to_weight(cfg.cpu_shares) if cfg.cpu_shares else None),
            cpu_shares=None if iso.cpu_weight else cfg.cpu_shares,
            cpuset_cpus=cfg.cpuset_cpus if iso.follow_bundle else None,
            cpuset_mems=cfg.cpuset_mems if iso.follow_bundle else None,
            pids_max=iso.pids_max or (cfg.pids_limit if cfg.pids_limit else None),
            devices=device_rules(cfg.devices) if iso.follow_bundle and cfg.devices
            else None,
            path=cfg.cgroups_path if iso.follow_bundle else None)
    unsupported_check(cfg, ignore_unsupported)
    if iso.userns:
        p.uid_map = cfg.uid_mappings or [(0, iso.host_id, 65536)]
        p.gid_map = cfg.gid_mappings or [(0, iso.host_id, 65536)]
    if iso.follow_bundle and cfg.sysctl:
        p.sysctl = _check_sysctl(cfg.sysctl, iso)
    p.pre_pid = ("pidns" in ns_new and "userns" not in ns_new and "timens" not in ns_new
                 and "userns" not in ns_join)
    return p


# runc's AllowedDevices, appended after config.json's rules as runc does.
DEFAULT_DEVICES = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm",
                   "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]


def device_rules(devices: list[dict]) -> list[tuple[bool, str]]:
    """OCI linux.resources.devices as v1 devices.allow/deny lines, in order,
    then runc's defaults.  A linux.devices node is not allowed by itself: the
    bundle's rules decide, as in runc (allowing it would give more than runc)."""
    out = []
    for d in devices:
        t = d.get("type", "a")
        rule = "a" if t == "a" and d.get("major") is None and d.get("minor") is None else \
            f"{t} {'*' if d.get('major') is None else d['major']}:{'*' if d.get('minor') is None else d['minor']} {d.get('access', 'rwm')}"
        out.append((d["allow"], rule))
    return out + [(True, r) for r in DEFAULT_DEVICES]


def _check_sysctl(sysctl: dict[str, str], iso: Isolation) -> dict[str, str]:
    """Only namespaced sysctls, and only in a namespace of the container's own
    (runc's rule): anything else would change the host."""
    for key in sysctl:
        if key.startswith("net."):
            need = "netns"
        elif key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                     "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced") or key.startswith("fs.mqueue."):
            need = "ipcns"
        elif key in ("kernel.hostname", "kernel.domainname"):
            need = "utsns"
        else:
            raise CvbError(f"linux.sysctl.{key}", "is not namespaced: setting it would change the host",
                           "remove it from config.json")
        if not getattr(iso, need) or not iso.pivot_root:
            raise CvbError(f"linux.sysctl.{key}", f"needs the container's own {need} and /proc",
                           f"switch {need} and pivot_root on, or drop the sysctl")
    return dict(sysctl)
