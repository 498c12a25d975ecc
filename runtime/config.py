"""Read and check an OCI bundle's ``config.json`` (runtime-spec 1.0/1.1).

A malformed field is an error that names its JSON path (exit 2); an unknown
field is only a warning, because spec versions add fields and runc/crun
accept them.  Known fields cvbench does not apply are warned about too, so a
user never believes a setting took effect when it did not.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.errors import CvbError

from .record import Factory, record

NS_TYPES = {"pid": "pidns", "network": "netns", "mount": "mountns", "ipc": "ipcns",
            "uts": "utsns", "user": "userns", "cgroup": "cgroupns", "time": "timens"}
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

# Per object: (fields applied, fields known but not applied).
_KNOWN = {
    "": ({"ociVersion", "process", "root", "hostname", "mounts", "linux", "annotations", "hooks"},
         {"domainname"}),
    "process": ({"terminal", "user", "args", "env", "cwd", "capabilities", "rlimits",
                 "noNewPrivileges", "apparmorProfile", "selinuxLabel", "oomScoreAdj"},
                {"consoleSize", "commandLine", "ioPriority", "scheduler"}),
    "process.user": ({"uid", "gid", "additionalGids", "umask"}, {"username"}),
    "root": ({"path", "readonly"}, set()),
    "linux": ({"namespaces", "uidMappings", "gidMappings", "resources", "seccomp",
               "maskedPaths", "readonlyPaths", "sysctl", "timeOffsets", "rootfsPropagation", "devices", "cgroupsPath"},
              {"mountLabel", "intelRdt", "personality"}),
    "linux.resources": ({"devices", "memory", "cpu", "pids"},
                        {"blockIO", "hugepageLimits", "network", "rdma", "unified"}),
    "linux.resources.memory": ({"limit", "reservation", "swap", "swappiness", "disableOOMKiller"},
                               {"kernel", "kernelTCP", "useHierarchy", "checkBeforeUpdate"}),
    "linux.resources.cpu": ({"shares", "quota", "period", "cpus", "mems"},
                            {"realtimeRuntime", "realtimePeriod", "idle", "burst"}),
    "linux.resources.pids": ({"limit"}, set()),
}


@record
class Mount:
    destination: str
    type: str
    source: str
    options: list[str]


@record
class Config:
    bundle: str
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = Factory(list)
    umask: int | None = None
    caps: dict[str, list[str]] | None = None
    rlimits: list[tuple[str, int, int]] = Factory(list)
    no_new_privs: bool = False
    root: str = ""
    root_readonly: bool = False
    hostname: str | None = None
    mounts: list[Mount] = Factory(list)
    namespaces: dict[str, str | None] = Factory(dict)  # pidns -> path or None
    uid_mappings: list[tuple[int, int, int]] = Factory(list)
    gid_mappings: list[tuple[int, int, int]] = Factory(list)
    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None          # memory + swap, as OCI and v1's memsw define it
    memory_swappiness: int | None = None
    oom_kill_disable: bool = False
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    devices: list[dict] = Factory(list)
    seccomp: dict | None = None
    masked_paths: list[str] = Factory(list)
    readonly_paths: list[str] = Factory(list)
    sysctl: dict[str, str] = Factory(dict)
    time_offsets: dict[str, tuple[int, int]] = Factory(dict)
    propagation: str = "rslave"
    annotations: dict[str, str] = Factory(dict)
    oom_score_adj: int | None = None
    linux_devices: list[dict] = Factory(list)
    cgroups_path: str | None = None
    hooks: dict[str, list[dict]] = Factory(dict)
    warnings: list[str] = Factory(list)
    # (field, why): security-relevant settings this host cannot apply.  spawn()
    # refuses them before anything starts unless told to ignore them.
    unsupported: list[tuple[str, str]] = Factory(list)


class _Reader:
    def __init__(self, file: str):
        self.file = file
        self.warnings: list[str] = []

    def bad(self, path: str, why: str) -> CvbError:
        return CvbError(f"{self.file}: {path or '(top level)'}", why,
                        "fix that field (see the OCI runtime-spec config.md)")

    def obj(self, parent: dict, key: str, path: str, required=False) -> dict:
        v = parent.get(key)
        if v is None:
            if required:
                raise self.bad(_join(path, key), "is missing")
            return {}
        if not isinstance(v, dict):
            raise self.bad(_join(path, key), f"must be an object, not {type(v).__name__}")
        self.check_keys(v, _join(path, key))
        return v

    def check_keys(self, v: dict, path: str) -> None:
        known = _KNOWN.get(path)
        if known is None:
            return
        applied, ignored = known
        for k in v:
            if k in ignored:
                self.warnings.append(f"{_join(path, k)}: not supported by cvbench's runtime, ignored")
            elif k not in applied:
                self.warnings.append(f"{_join(path, k)}: unknown field, ignored")

    def typed(self, parent: dict, key: str, path: str, kind, default=None):
        v = parent.get(key, default)
        if v is None:
            return default
        ok = isinstance(v, kind) and not (kind in (int, (int,)) and isinstance(v, bool))
        if not ok:
            name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.bad(_join(path, key), f"must be {name}, not {json.dumps(v)[:40]}")
        return v

    def objects(self, parent: dict, key: str, path: str):
        """(path, item) for a list of objects, each checked to be one."""
        for i, v in enumerate(self.typed(parent, key, path, list, [])):
            p = f"{_join(path, key)}[{i}]"
            if not isinstance(v, dict):
                raise self.bad(p, "must be an object")
            yield p, v

    def strlist(self, parent: dict, key: str, path: str) -> list[str]:
        v = self.typed(parent, key, path, list, [])
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise self.bad(f"{_join(path, key)}[{i}]", "must be a string")
        return list(v)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse(raw: dict, bundle: str, file: str = "config.json") -> Config:
    r = _Reader(file)
    if not isinstance(raw, dict):
        raise r.bad("", "must be a JSON object")
    r.check_keys(raw, "")
    proc = r.obj(raw, "process", "", required=True)
    args = r.strlist(proc, "args", "process")
    if not args:
        raise r.bad("process.args", "must name the program to run")
    if r.typed(proc, "terminal", "process", bool, False):
        raise r.bad("process.terminal", "true is not supported (output goes to a pipe); set it to false")
    cfg = Config(bundle=bundle, args=args, env=r.strlist(proc, "env", "process"),
                 cwd=r.typed(proc, "cwd", "process", str, "/"))
    if not cfg.cwd.startswith("/"):
        raise r.bad("process.cwd", "must be an absolute path")
    user = r.obj(proc, "user", "process")
    cfg.uid = r.typed(user, "uid", "process.user", int, 0)
    cfg.gid = r.typed(user, "gid", "process.user", int, 0)
    cfg.umask = r.typed(user, "umask", "process.user", int, None)
    cfg.additional_gids = list(r.typed(user, "additionalGids", "process.user", list, []))
    caps = r.obj(proc, "capabilities", "process")
    if "capabilities" in proc:
        cfg.caps = {s: r.strlist(caps, s, "process.capabilities") for s in CAP_SETS}
        from . import capabilities
        for s, names in cfg.caps.items():
            for i, n in enumerate(names):
                if n not in capabilities.BY_NAME:
                    raise r.bad(f"process.capabilities.{s}[{i}]", f"unknown capability {n!r}")
    for p, rl in r.objects(proc, "rlimits", "process"):
        t = r.typed(rl, "type", p, str)
        if not t or not t.startswith("RLIMIT_"):
            raise r.bad(f"{p}.type", "must be an RLIMIT_* name")
        cfg.rlimits.append((t, r.typed(rl, "soft", p, int, 0), r.typed(rl, "hard", p, int, 0)))
    cfg.no_new_privs = r.typed(proc, "noNewPrivileges", "process", bool, False)
    cfg.oom_score_adj = r.typed(proc, "oomScoreAdj", "process", int, None)
    if cfg.oom_score_adj is not None and not -1000 <= cfg.oom_score_adj <= 1000:
        raise r.bad("process.oomScoreAdj", "must be between -1000 and 1000")
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        from . import lsm
        cfg.unsupported.extend(lsm.unsupported(proc.get("apparmorProfile"), proc.get("selinuxLabel")))
    _parse_hooks(r, raw, cfg)

    root = r.obj(raw, "root", "", required=True)
    rp = r.typed(root, "path", "root", str)
    if not rp:
        raise r.bad("root.path", "is missing")
    cfg.root = os.path.normpath(os.path.join(bundle, rp))
    if not os.path.isdir(cfg.root):
        raise r.bad("root.path", f"{cfg.root} is not a directory")
    cfg.root_readonly = r.typed(root, "readonly", "root", bool, False)
    cfg.hostname = r.typed(raw, "hostname", "", str, None)
    cfg.annotations = r.typed(raw, "annotations", "", dict, {})

    for p, m in r.objects(raw, "mounts", ""):
        dest = r.typed(m, "destination", p, str)
        if not dest or not dest.startswith("/"):
            raise r.bad(f"{p}.destination", "must be an absolute path")
        mtype = r.typed(m, "type", p, str, "")
        opts = r.strlist(m, "options", p)
        if not mtype and "bind" not in opts and "rbind" not in opts:
            raise r.bad(f"{p}.type", "is missing (and options hold no bind)")
        if mtype in ("", "bind") or "bind" in opts or "rbind" in opts:
            _check_bind_options(r, p, opts)
        cfg.mounts.append(Mount(dest, mtype or "bind", r.typed(m, "source", p, str, ""), opts))

    lin = r.obj(raw, "linux", "")
    _parse_linux(r, lin, cfg)
    if lin.get("mountLabel"):
        cfg.unsupported.append(("linux.mountLabel", "SELinux labels are not applied by cvbench's runtime"))
    cfg.warnings = r.warnings
    return cfg


def _check_bind_options(r: _Reader, p: str, opts: list[str]) -> None:
    """A bind mount has no filesystem to pass data to: an option cvbench does
    not know would otherwise vanish (a misspelt "rro" leaves it writable), so it
    is an error naming it.  key=value data is what runc passes on and the
    kernel ignores for a bind; it is accepted with a warning."""
    from . import rootfs
    for j, o in enumerate(opts):
        if o in rootfs.KNOWN_OPTIONS:
            continue
        if "=" in o:
            r.warnings.append(f"{p}.options[{j}]: {o!r} is filesystem data, which a bind mount ignores")
            continue
        raise r.bad(f"{p}.options[{j}]", f"unknown bind mount option {o!r}")


HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _parse_hooks(r: _Reader, raw: dict, cfg: Config) -> None:
    hooks = r.typed(raw, "hooks", "", dict, {})
    for kind, items in hooks.items():
        if kind not in HOOKS:
            r.warnings.append(f"hooks.{kind}: unknown hook kind, ignored")
            continue
        if not isinstance(items, list):
            raise r.bad(f"hooks.{kind}", "must be a list")
        for p, h in r.objects(hooks, kind, "hooks"):
            path = r.typed(h, "path", p, str)
            if not path or not path.startswith("/"):
                raise r.bad(f"{p}.path", "must be an absolute path")
            r.strlist(h, "args", p)
            r.strlist(h, "env", p)
            t = r.typed(h, "timeout", p, int, None)
            if t is not None and t <= 0:
                raise r.bad(f"{p}.timeout", "must be positive")
        cfg.hooks[kind] = list(items)


def _parse_linux(r: _Reader, lin: dict, cfg: Config) -> None:
    for p, ns in r.objects(lin, "namespaces", "linux"):
        t = r.typed(ns, "type", p, str)
        if t not in NS_TYPES:
            raise r.bad(f"{p}.type", f"unknown namespace {t!r}; one of {', '.join(NS_TYPES)}")
        cfg.namespaces[NS_TYPES[t]] = r.typed(ns, "path", p, str, None)
    for key, dest in (("uidMappings", cfg.uid_mappings), ("gidMappings", cfg.gid_mappings)):
        for p, mp in r.objects(lin, key, "linux"):
            dest.append(tuple(r.typed(mp, k, p, int, None) for k in ("containerID", "hostID", "size")))
            if None in dest[-1]:
                raise r.bad(p, "needs containerID, hostID and size")
    res = r.obj(lin, "resources", "linux")
    mem = r.obj(res, "memory", "linux.resources")
    cfg.memory_limit = r.typed(mem, "limit", "linux.resources.memory", int, None)
    cfg.memory_reservation = r.typed(mem, "reservation", "linux.resources.memory", int, None)
    cfg.memory_swap = r.typed(mem, "swap", "linux.resources.memory", int, None)
    cfg.memory_swappiness = r.typed(mem, "swappiness", "linux.resources.memory", int, None)
    if cfg.memory_swappiness is not None and not 0 <= cfg.memory_swappiness <= 100:
        raise r.bad("linux.resources.memory.swappiness", "must be 0..100")
    cfg.oom_kill_disable = r.typed(mem, "disableOOMKiller", "linux.resources.memory", bool, False)
    cpu = r.obj(res, "cpu", "linux.resources")
    cfg.cpu_shares = r.typed(cpu, "shares", "linux.resources.cpu", int, None)
    cfg.cpu_quota = r.typed(cpu, "quota", "linux.resources.cpu", int, None)
    cfg.cpu_period = r.typed(cpu, "period", "linux.resources.cpu", int, None)
    cfg.cpuset_cpus = r.typed(cpu, "cpus", "linux.resources.cpu", str, None) or None
    cfg.cpuset_mems = r.typed(cpu, "mems", "linux.resources.cpu", str, None) or None
    pids = r.obj(res, "pids", "linux.resources")
    cfg.pids_limit = r.typed(pids, "limit", "linux.resources.pids", int, None)
    cfg.devices = r.typed(res, "devices", "linux.resources", list, [])
    for i, d in enumerate(cfg.devices):
        p = f"linux.resources.devices[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("allow"), bool):
            raise r.bad(p, "needs allow: true or false")
        if d.get("type", "a") not in ("a", "b", "c"):
            raise r.bad(f"{p}.type", "must be a, b or c")
        for k in ("major", "minor"):
            r.typed(d, k, p, int, None)
        access = r.typed(d, "access", p, str, "rwm")
        if not access or set(access) - set("rwm"):
            raise r.bad(f"{p}.access", "must be letters from rwm")
    cfg.seccomp = r.typed(lin, "seccomp", "linux", dict, None)
    if cfg.seccomp is not None:
        from . import seccomp
        seccomp.check_profile(cfg.seccomp, r.bad, r.warnings)
    cfg.masked_paths = r.strlist(lin, "maskedPaths", "linux")
    cfg.readonly_paths = r.strlist(lin, "readonlyPaths", "linux")
    cfg.sysctl = r.typed(lin, "sysctl", "linux", dict, {})
    for k, v in cfg.sysctl.items():
        if not isinstance(v, str):
            raise r.bad(f"linux.sysctl.{k}", "must be a string")
    for clock, off in r.typed(lin, "timeOffsets", "linux", dict, {}).items():
        p = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime") or not isinstance(off, dict):
            raise r.bad(p, "must be monotonic or boottime with {secs, nanosecs}")
        cfg.time_offsets[clock] = (r.typed(off, "secs", p, int, 0), r.typed(off, "nanosecs", p, int, 0))
    cfg.cgroups_path = r.typed(lin, "cgroupsPath", "linux", str, None) or None
    if cfg.cgroups_path and (":" in cfg.cgroups_path or ".." in cfg.cgroups_path.split("/")):
        raise r.bad("linux.cgroupsPath", "must be a cgroupfs path (no systemd slice:prefix:name, no ..)")
    for p, d in r.objects(lin, "devices", "linux"):
        path = r.typed(d, "path", p, str)
        if not path or not path.startswith("/dev/") or ".." in path.split("/"):
            raise r.bad(f"{p}.path", "must be an absolute path below /dev")
        if r.typed(d, "type", p, str) not in ("c", "b", "u", "p"):
            raise r.bad(f"{p}.type", "must be c, b, u or p")
        for k in ("major", "minor", "fileMode", "uid", "gid"):
            r.typed(d, k, p, int, None)
        if d["type"] != "p" and (d.get("major") is None or d.get("minor") is None):
            raise r.bad(p, "needs major and minor")
        cfg.linux_devices.append(dict(d, type="c" if d["type"] == "u" else d["type"]))
    prop = r.typed(lin, "rootfsPropagation", "linux", str, None)
    if prop is not None:
        if prop not in ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                        "runbindable"):
            raise r.bad("linux.rootfsPropagation", f"unknown propagation {prop!r}")
        cfg.propagation = prop


def load(bundle: str | os.PathLike) -> Config:
    """The parsed, checked config of a bundle, read afresh on every call: a
    timed spawn pays for reading its config.json as runc and crun do, and an
    edit between two spawns always takes effect."""
    bundle = os.path.abspath(os.fspath(bundle))
    path = Path(bundle) / "config.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CvbError("bundle", f"{path} does not exist", "pass an OCI bundle directory (rootfs/ + config.json)") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise CvbError(str(path), f"not valid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                       "fix the JSON syntax") from None
    return parse(raw, bundle, str(path))
