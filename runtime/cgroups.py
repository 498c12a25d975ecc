"""cgroups: one interface over v1 and v2, chosen at run time.

Every container gets ``.../cvbench/<id>`` unless config.json's
``linux.cgroupsPath`` names another place: absolute paths are taken from each
hierarchy's root, relative ones from the caller's own cgroup (runc's
reading).  On v1 the default is below the caller's own cgroup in each
hierarchy (it keeps a container inside whatever budget its caller has); on v2
it is below the root, because v2 forbids processes in a cgroup that hands
controllers to children.  On v1 the container joins every hierarchy, as runc
does, so its /sys/fs/cgroup shows all of them.  The empty ``cvbench`` parent
goes with the last container under it.  The parent creates the directories and writes the limits before
the fork; the child is in them before it execs (on v1 it moves itself
first thing, see self_join_files), so no process of the container ever
runs outside its cgroup.
"""
from __future__ import annotations

import errno
import os
import time

from common.errors import EnvError
from common.naming import PREFIX

from .record import record

V1_CONTROLLERS = ("memory", "cpu", "pids")
V1_OPTIONAL = ("devices",)  # used when mounted: the OCI device allow-list lives here on v1
V2_CONTROLLERS = ("memory", "cpu", "pids")


@record
class Limits:
    memory_bytes: int | None = None
    memory_reservation: int | None = None   # v1 soft limit, v2 memory.low
    memory_swap: int | None = None          # memory + swap (OCI), -1 unlimited
    memory_swappiness: int | None = None    # v1 only
    oom_kill_disable: bool = False          # v1 only
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_weight: int | None = None   # cgroup v2 scale 1..10000 (v1 shares are converted)
    cpu_shares: int | None = None   # the bundle's v1 shares, written as is on v1 (no round trip)
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_max: int | None = None
    devices: list[tuple[bool, str]] | None = None  # (allow, "c 1:3 rwm"), applied in order
    path: str | None = None  # linux.cgroupsPath; None: <caller's cgroup>/cvbench/<id>


def _v2_swap(swap: int, limit: int | None) -> str:
    """OCI's swap is memory + swap; v2's memory.swap.max is the swap alone
    (runc's conversion)."""
    if swap == -1:
        return "max"
    if limit is None or limit == -1:
        raise EnvError("linux.resources.memory.swap", "a swap limit on cgroup v2 needs a memory limit",
                       "set linux.resources.memory.limit too")
    if swap < limit:
        raise EnvError("linux.resources.memory.swap", f"{swap} is below the memory limit {limit}",
                       "swap is memory + swap: make it at least the limit")
    return str(swap - limit)


def shares_to_weight(shares: int) -> int:
    """runc's conversion of v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000)."""
    return 1 + ((max(2, min(shares, 262144)) - 2) * 9999) // 262142


def weight_to_shares(weight: int) -> int:
    return 2 + ((max(1, min(weight, 10000)) - 1) * 262142) // 9999


def _pids_value(n: int) -> str:
    """OCI pids.limit: -1 (any negative) is unlimited."""
    return "max" if n < 0 else str(n)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(fstype, mount point, controllers) of every cgroup mount, from mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _src, opts = (right.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((fstype, left.split()[4], set(opts.split(","))))
    return out


def version() -> str:
    """"v1", "v2" or "hybrid" (v1 controllers plus a cgroup2 mount), or "none"."""
    ms = _mounts()
    v1 = any(t == "cgroup" and s & set(V1_CONTROLLERS) for t, _, s in ms)
    v2 = [p for t, p, _ in ms if t == "cgroup2"]
    if v1 and v2:
        return "hybrid"
    if v1:
        return "v1"
    return "v2" if v2 else "none"


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else [""]):
                out[c] = path
    return out


def _write(path: str, value) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _mkdir(path: str) -> None:
    for _ in range(5):
        try:
            os.makedirs(path)
            return
        except FileNotFoundError:
            continue  # a concurrent delete removed the shared parent meanwhile
    os.makedirs(path)


def _rmdir(path: str, tries: int = 50) -> bool:
    for _ in range(tries):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.002)  # the last task is still leaving the cgroup
    return False


class Backend:
    """One cgroup hierarchy layout; V1 and V2 fill in the file names."""
    version = ""

    def parents(self) -> list[str]:
        raise NotImplementedError

    def leaf_dirs(self, cid: str, path: str | None = None) -> list[str]:
        if path is None:
            return [os.path.join(p, cid) for p in self.parents()]
        return [self._join(root, own, path) for root, own in self.roots()]

    @staticmethod
    def _join(root: str, own: str, path: str) -> str:
        base = root if path.startswith("/") else os.path.join(root, own.lstrip("/"))
        return os.path.normpath(os.path.join(base, path.lstrip("/")))

    def roots(self) -> list[tuple[str, str]]:
        """(hierarchy mount point, the caller's cgroup in it) per joined hierarchy."""
        raise NotImplementedError

    def create(self, dirs: list[str], limits: Limits) -> list[str]:
        try:
            for d in dirs:
                self._mkdir(d)
            self.apply(dirs, limits)
        except BaseException:
            self.remove(dirs)
            raise
        return dirs

    def apply(self, dirs: list[str], limits: Limits) -> None:
        raise NotImplementedError

    def add(self, dirs: list[str], pid: int) -> None:
        for d in dirs:
            _write(f"{d}/cgroup.procs", pid)

    def self_join_files(self, dirs: list[str]) -> list[str] | None:
        """Files a process writes "0" into to move itself (None: not offered)."""
        return None

    def pids(self, dirs: list[str]) -> set[int]:
        out: set[int] = set()
        for d in dirs:
            try:
                with open(f"{d}/cgroup.procs") as f:
                    out.update(int(x) for x in f.read().split())
            except FileNotFoundError:
                pass
        return out

    def _mkdir(self, d: str) -> None:
        _mkdir(d)

    def remove(self, dirs: list[str]) -> list[str]:
        """rmdir each leaf (remove_empty_parents takes the shared parent)."""
        return [d for d in dirs if os.path.isdir(d) and _rmdir(d)]

    def binds(self, dirs: list[str]) -> list[tuple[str, str]]:
        """(name under /sys/fs/cgroup, host dir) for the container's cgroup mount."""
        raise NotImplementedError


class V1(Backend):
    """Every v1 hierarchy (and, on a hybrid host, the cgroup2 one), joined
    like runc does; limits go to the memory, cpu, pids and devices ones."""
    version = "v1"

    def __init__(self):
        self.hier: list[tuple[str, str]] = []   # (name under /sys/fs/cgroup, mount point)
        self.ctrl: dict[str, int] = {}          # controller -> index into hier
        self.unified: str | None = None
        own = _own_paths()
        owns = []
        for t, point, opts in _mounts():
            if t == "cgroup2":
                self.unified = self.unified or point
            elif t == "cgroup" and point not in (p for _, p in self.hier):
                for c in opts:
                    self.ctrl.setdefault(c, len(self.hier))
                self.hier.append((os.path.basename(point), point))
                owns.append(next((own[c] for c in sorted(opts) if c in own), "/"))
        missing = [c for c in V1_CONTROLLERS if c not in self.ctrl]
        if missing:
            raise EnvError("cgroups", f"v1 controller(s) {', '.join(missing)} not mounted",
                           "mount them under /sys/fs/cgroup, or run on a cgroup v2 host")
        self._roots = [(point, o) for (_, point), o in zip(self.hier, owns, strict=True)]
        if self.unified:
            self._roots.append((self.unified, own.get("", "/")))
        self._parents = [os.path.join(root, o.lstrip("/"), PREFIX) for root, o in self._roots]

    def parents(self) -> list[str]:
        return self._parents

    def roots(self):
        return self._roots

    def _mkdir(self, d: str) -> None:
        _mkdir(d)
        if os.path.exists(os.path.join(d, "cpuset.cpus")):
            # a new cpuset cgroup starts empty and takes no tasks: copy down
            # from the nearest configured ancestor, as runc does
            for sub in _below(d):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(sub, f)) as fh:
                        if fh.read().strip():
                            continue
                    with open(os.path.join(os.path.dirname(sub), f)) as fh:
                        _write(os.path.join(sub, f), fh.read().strip())

    def apply(self, dirs, lim: Limits) -> None:
        def by(c):
            return dirs[self.ctrl[c]]
        if lim.devices is not None:
            if "devices" not in self.ctrl:
                raise EnvError("cgroups", "the v1 devices controller is not mounted",
                               "mount it, or drop linux.resources.devices")
            for allow, rule in lim.devices:
                _write(f"{by('devices')}/devices.{'allow' if allow else 'deny'}", rule)
        if lim.memory_bytes is not None:
            _write(f"{by('memory')}/memory.limit_in_bytes", lim.memory_bytes)
        self._apply_memory_extras(by, lim)
        if lim.cpu_period_us is not None:
            _write(f"{by('cpu')}/cpu.cfs_period_us", lim.cpu_period_us)
        if lim.cpu_quota_us is not None:
            _write(f"{by('cpu')}/cpu.cfs_quota_us", lim.cpu_quota_us)
        if lim.cpu_shares is not None:
            _write(f"{by('cpu')}/cpu.shares", lim.cpu_shares)
        elif lim.cpu_weight is not None:
            _write(f"{by('cpu')}/cpu.shares", weight_to_shares(lim.cpu_weight))
        for f, v in (("cpuset.cpus", lim.cpuset_cpus), ("cpuset.mems", lim.cpuset_mems)):
            if v is not None:
                _write(f"{by('cpuset')}/{f}", v)
        if lim.pids_max is not None:
            _write(f"{by('pids')}/pids.max", _pids_value(lim.pids_max))

    @staticmethod
    def _apply_memory_extras(by, lim: Limits) -> None:
        """What runc writes for the rest of linux.resources.memory on v1; memsw
        exists only with swap accounting on, and a swap limit that can't be
        set is an error, not a silent no-op."""
        if lim.memory_swap is not None:
            f = f"{by('memory')}/memory.memsw.limit_in_bytes"
            if not os.path.exists(f):
                raise EnvError("linux.resources.memory.swap", "this kernel has no swap accounting "
                               "(memory.memsw.limit_in_bytes)", "boot with swapaccount=1, or drop the field")
            _write(f, lim.memory_swap)
        if lim.memory_reservation is not None:
            _write(f"{by('memory')}/memory.soft_limit_in_bytes", lim.memory_reservation)
        if lim.memory_swappiness is not None:
            _write(f"{by('memory')}/memory.swappiness", lim.memory_swappiness)
        if lim.oom_kill_disable:
            _write(f"{by('memory')}/memory.oom_control", 1)

    def self_join_files(self, dirs):
        # A single thread moving itself through `tasks` skips the global
        # threadgroup rwsem (kernel/cgroup: cgroup_procs_write_start).
        return [f"{d}/tasks" if i < len(self.hier) else f"{d}/cgroup.procs"
                for i, d in enumerate(dirs)]

    def binds(self, dirs):
        return [(name, d) for (name, _), d in zip(self.hier, dirs, strict=False)]  # the unified dir is joined, not bound

    def memory_dir(self, dirs):
        return dirs[self.ctrl["memory"]]


def _below(d: str) -> list[str]:
    """d and its ancestors up to the first with cpuset.cpus set, top first."""
    chain = [d]
    while True:
        parent = os.path.dirname(chain[-1])
        if not os.path.exists(os.path.join(parent, "cpuset.cpus")):
            break
        with open(os.path.join(parent, "cpuset.cpus")) as f:
            if f.read().strip():
                break
        chain.append(parent)
    return chain[::-1]


class V2(Backend):
    version = "v2"

    def __init__(self, mount: str | None = None):
        if mount is None:
            v2 = [p for t, p, _ in _mounts() if t == "cgroup2"]
            if not v2:
                raise EnvError("cgroups", "no cgroup2 mount", "mount -t cgroup2 none /sys/fs/cgroup")
            mount = v2[0]
        self.mount = mount
        self.parent = os.path.join(mount, PREFIX)

    def parents(self) -> list[str]:
        return [self.parent]

    def available(self) -> set[str]:
        with open(f"{self.mount}/cgroup.controllers") as f:
            return set(f.read().split())

    def needed(self, lim: Limits) -> list[str]:
        need = []
        if lim.memory_bytes is not None or lim.memory_reservation is not None or lim.memory_swap is not None:
            need.append("memory")
        if lim.cpu_quota_us is not None or lim.cpu_weight is not None or lim.cpu_period_us is not None:
            need.append("cpu")
        if lim.pids_max is not None:
            need.append("pids")
        if lim.cpuset_cpus is not None or lim.cpuset_mems is not None:
            need.append("cpuset")
        return need

    def files(self, lim: Limits) -> dict[str, str]:
        """The v2 interface files and values for these limits (the v1->v2 mapping)."""
        out = {}
        if lim.memory_bytes is not None:
            out["memory.max"] = str(lim.memory_bytes)
        if lim.memory_reservation is not None:
            out["memory.low"] = str(lim.memory_reservation)
        if lim.memory_swap is not None:
            out["memory.swap.max"] = _v2_swap(lim.memory_swap, lim.memory_bytes)
        for fld, on in (("swappiness", lim.memory_swappiness is not None), ("disableOOMKiller", lim.oom_kill_disable)):
            if on:
                raise EnvError(f"linux.resources.memory.{fld}", "cgroup v2 has no such control",
                               "drop the field (runc cannot apply it on v2 either)")
        if lim.cpu_quota_us is not None or lim.cpu_period_us is not None:
            quota = "max" if lim.cpu_quota_us is None else str(lim.cpu_quota_us)
            out["cpu.max"] = f"{quota} {lim.cpu_period_us or 100000}"
        if lim.cpu_weight is not None:
            out["cpu.weight"] = str(lim.cpu_weight)
        if lim.cpuset_cpus is not None:
            out["cpuset.cpus"] = lim.cpuset_cpus
        if lim.cpuset_mems is not None:
            out["cpuset.mems"] = lim.cpuset_mems
        if lim.pids_max is not None:
            out["pids.max"] = _pids_value(lim.pids_max)
        return out

    def roots(self):
        return [(self.mount, _own_paths().get("", "/"))]

    def create(self, dirs: list[str], limits: Limits) -> list[str]:
        need = self.needed(limits)
        missing = [c for c in need if c not in self.available()]
        if missing:
            raise EnvError("cgroups", f"cgroup v2 at {self.mount} lacks the {', '.join(missing)} "
                           "controller(s) (bound to a v1 hierarchy on this host?)",
                           "drop that limit, or use a pure v2 host")
        for attempt in range(3):
            chain, d = [], os.path.dirname(dirs[0])
            while d.startswith(self.mount) and d != self.mount:
                chain.append(d)
                d = os.path.dirname(d)
            try:
                os.makedirs(chain[0] if chain else self.mount, exist_ok=True)
                if need:  # every ancestor hands the controllers down
                    for d in [self.mount, *chain[::-1]]:
                        _write(f"{d}/cgroup.subtree_control", " ".join(f"+{c}" for c in need))
                return super().create(dirs, limits)
            except FileNotFoundError:
                if attempt == 2:  # the last container's delete took the parent meanwhile
                    raise
        return dirs

    def apply(self, dirs, lim: Limits) -> None:
        for name, value in self.files(lim).items():
            _write(f"{dirs[0]}/{name}", value)
        if lim.devices is not None:
            from . import devices_bpf
            try:
                devices_bpf.attach(dirs[0], lim.devices)
            except OSError as e:  # fail closed: the container must not start without them
                raise EnvError("linux.resources.devices", f"the cgroup v2 device program could not be "
                               f"loaded or attached ({e.strerror})",
                               "run as root on a kernel with CONFIG_CGROUP_BPF") from None

    def binds(self, dirs):
        return [("", dirs[0])]

    def memory_dir(self, dirs):
        return dirs[0]


_backend: Backend | None = None


def backend() -> Backend:
    """v1 on v1 and hybrid hosts (memory/cpu/pids live there), else v2."""
    global _backend
    if _backend is None:
        _backend = V2() if version() == "v2" else V1()
    return _backend


def all_roots() -> list[str]:
    """Every cgroup mount point, v1 and v2 (a sweep looks in all of them)."""
    return [p for _, p, _ in _mounts()]


def find_ours(roots: list[str]) -> list[str]:
    """Every cvbench-named cgroup directory below the given mount points, deepest first."""
    found = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                if d.startswith(PREFIX):
                    found.append(os.path.join(dirpath, d))
    return sorted(found, key=lambda p: -p.count("/"))


def kill_all(dirs: list[str], timeout: float = 1.0) -> None:
    """SIGKILL every process in ``dirs`` until they are empty: a container's
    orphans (daemonized children) escape the init's death, not its cgroup."""
    import signal
    import time
    be = Backend()  # pids() reads cgroup.procs the same way on v1 and v2
    deadline = time.monotonic() + timeout
    while True:
        pids = be.pids(dirs)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.002)


def remove_empty_parents(dirs: list[str]) -> None:
    """rmdir the ``cvbench`` parent of each leaf once it is empty: the last
    container under it takes it along (a concurrent create re-makes it; _mkdir
    retries when it vanishes between the two mkdirs)."""
    for d in dirs:
        parent = os.path.dirname(d)
        if os.path.basename(parent) == PREFIX:
            try:
                os.rmdir(parent)
            except OSError:
                pass  # not empty (another container), or already gone
