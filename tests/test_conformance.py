"""Conformance: the same `runc spec` bundle under runc, crun and cvbench's
runtime must look the same from inside, and escape attempts must fail the
same way.

The caller is made hostile on purpose, as a user's shell can be: it holds an
extra fd on the host's / (the CVE-2024-21626 class), extra supplementary
groups (6 = disk), a umask of 077, SIGUSR1 blocked and SIGHUP/SIGPIPE
ignored.  A runtime must hand none of that to the container.  The battery
(tests/conformance/battery.sh) prints "name: value" lines; everything the
host must check from outside (keyrings, leaked mounts, signals) is a
separate test here, run under every runtime too.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

HERE = Path(__file__).parent / "conformance"
BATTERY = (HERE / "battery.sh").read_text()
EXTRA_GROUPS = [6, 10, 27]
REPO = Path(__file__).resolve().parent.parent
RUNTIMES = ["runc", "crun", "cvbench"]


def _ignore_libc_reserved_signals() -> None:
    """Ignore signals 32 and 33 with the raw syscall, as GNU make's recipe
    shells do (glibc's own sigaction refuses them): a runtime that resets
    signals through libc passes them on, so the caller must hold them
    whoever launched pytest."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ign = (ctypes.c_ulong * 4)(1, 0, 0, 0)          # handler SIG_IGN
    for sig in (32, 33):
        if libc.syscall(13, sig, ctypes.byref(ign), None, 8) != 0:   # rt_sigaction
            os._exit(120)


def _hostile_caller(fd: int):
    def pre():
        os.umask(0o077)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        _ignore_libc_reserved_signals()
    return pre


class Runner:
    """One runtime's command lines, each with its own state root."""

    def __init__(self, name: str, tmp: Path):
        self.name = name
        self.root = tmp / f"state-{name}"
        self.prefix: list[str] = []
        self.pass_fds: tuple[int, ...] = ()
        if name == "cvbench":
            self.base = [sys.executable, "-m", "runtime", "--root", str(self.root)]
        else:
            self.base = [need(name), "--root", str(self.root)]
        if name == "crun":
            from bench.backends import crun
            if crun.hybrid_needs_mask():
                fd = crun.masked_namespace_fd()
                self.prefix = [need("nsenter"), f"--mount=/proc/self/fd/{fd}"]
                self.pass_fds = (fd,)

    def cmd(self, *args: str) -> list[str]:
        return [*self.prefix, *self.base, *args]

    def popen(self, args, fd: int, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), cwd=REPO, pass_fds=(fd, *self.pass_fds),
                                extra_groups=EXTRA_GROUPS, preexec_fn=_hostile_caller(fd),
                                restore_signals=False, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kw)

    def run(self, bundle: Path, cid: str, fd: int, timeout: float = 30) -> tuple[int, str, str]:
        p = self.popen(["run", "-b", str(bundle), cid], fd)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(), err.decode()


def make_bundle(tmp: Path, rootfs: str, args: list[str], edit=None) -> Path:
    """`runc spec` output, with process.args, terminal=false and the rootfs path
    changed (the OCI bundle rule: runc and crun read the same file)."""
    b = tmp / "bundle"
    if b.exists():
        shutil.rmtree(b)
    b.mkdir(parents=True)
    subprocess.run([need("runc"), "spec", "-b", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = False
    cfg["root"]["path"] = rootfs
    if edit:
        edit(cfg)
    (b / "config.json").write_text(json.dumps(cfg, indent=1))
    return b


def host_ns() -> dict[str, str]:
    return {n: os.readlink(f"/proc/self/ns/{n}") for n in os.listdir("/proc/self/ns")}


def probe_names() -> list[str]:
    """The battery's probe names, read from battery.sh (loops expanded)."""
    names = []
    lines = BATTERY.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"for (\w+) in ([^;]+); do", line)
        if m:
            inner = re.match(rf'\s*p "([\w.]*)\${m.group(1)}"', lines[i + 1])
            names += [inner.group(1) + v for v in m.group(2).split()]
        m = re.match(r"p (\w[\w.]*) ", line)
        if m:
            names.append(m.group(1))
    return names


PROBES = probe_names()


def normalise(out: str, cid: str) -> dict[str, str]:
    """name -> value, namespaces as host/own, the container id as ID."""
    host = host_ns()
    lines = {}
    for line in out.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("ns."):
            value = "host" if value == host.get(name[3:]) else "own"
        lines[name] = value.replace(cid, "ID")
    return lines


def _fd_on_host_root() -> int:
    """The hostile caller's extra fd: a directory fd on the host's /."""
    return os.open("/", os.O_RDONLY | os.O_DIRECTORY)


def _available(tmp: Path) -> dict[str, Runner]:
    need("runc")
    out = {}
    for name in RUNTIMES:
        if name != "cvbench" and not shutil.which(name):
            continue
        out[name] = Runner(name, tmp)
    return out


@pytest.fixture(scope="module")
def runners(root, tmp_path_factory) -> dict[str, Runner]:
    return _available(tmp_path_factory.mktemp("conformance"))


def image_config(c: dict) -> None:
    """Replace the runc spec document by the image's own config.json (runc spec
    + cgroup namespace + the containers' default seccomp profile), keeping
    only the battery's args and the rootfs path."""
    args, rootfs = c["process"]["args"], c["root"]["path"]
    from bench import image as image_mod
    c.clear()
    c.update(json.loads(Path(image_mod.load().bundle, "config.json").read_text()))
    c["process"]["args"], c["root"]["path"] = args, rootfs


BUNDLES = {"runc-spec": None, "image": image_config}


@pytest.fixture(scope="module", params=list(BUNDLES))
def battery(request, runners, image, tmp_path_factory) -> dict[str, dict[str, str]]:
    """The battery's output under every runtime here, from one hostile caller,
    on the unchanged runc spec bundle and on the image's own bundle."""
    tmp = tmp_path_factory.mktemp("battery")
    b = make_bundle(tmp, image.rootfs, ["sh", "-c", BATTERY], edit=BUNDLES[request.param])
    fd = _fd_on_host_root()
    out = {}
    try:
        for name, r in runners.items():
            cid = f"cvbench-conf-{os.getpid()}-{name}"
            rc, stdout, stderr = r.run(b, cid, fd)
            assert rc == 0, f"{name}: exit {rc}: {stderr[-1000:]}"
            out[name] = normalise(stdout, cid)
    finally:
        os.close(fd)
    return out


def like_peers(ours, runc, crun=None, what: str = "") -> None:
    """cvbench matches runc; where runc and crun disagree, either of them."""
    if crun is not None and crun != runc:
        assert ours in (runc, crun), f"{what}: cvbench {ours!r}, runc {runc!r}, crun {crun!r}"
    else:
        assert ours == runc, f"{what}: cvbench {ours!r}, runc {runc!r}"


def _like(res: dict, what: str, part=slice(0, 2)) -> None:
    crun = res["crun"][part] if "crun" in res else None
    like_peers(res["cvbench"][part], res["runc"][part], crun, what)


def test_battery_has_enough_probes():
    assert len(PROBES) >= 30 and len(set(PROBES)) == len(PROBES)


# Signal sets the caller left ignored or blocked: runc and crun reset them
# through libc, which cannot touch signals 32 and 33, so both pass those on.
# cvbench resets all of them; holding fewer of the caller's signals is never
# more of the host, so here it must hold a subset of what runc holds.
SIGNAL_SETS = ("status.SigIgn", "status.SigBlk")


@pytest.mark.parametrize("probe", PROBES)
def test_probe_like_runc(battery, probe):
    """cvbench shows what runc shows; where runc and crun disagree (runc 1.1
    leaves the caller's signal mask, crun clears it; crun adds /dev/core and
    its own cgroup layout), cvbench must match one of the two."""
    assert battery["runc"].get(probe) is not None, f"runc printed no {probe}"
    if probe in SIGNAL_SETS:
        ours, runc = int(battery["cvbench"][probe], 16), int(battery["runc"][probe], 16)
        assert ours & ~runc == 0, f"{probe}: cvbench {ours:#x} holds a signal runc does not ({runc:#x})"
        return
    like_peers(battery["cvbench"].get(probe), battery["runc"][probe], battery.get("crun", {}).get(probe),
               probe)


def test_no_leak_from_the_hostile_caller(battery):
    """Spelled out for the escapes the issue names: only fds 0-2 (+ ls's own)
    and no supplementary group, no ignored or blocked signal, umask 0022."""
    ours = battery["cvbench"]
    assert ours["fds"].split() == ["0", "1", "2", "3"]
    assert ours["status.Groups"].strip() == ""
    assert ours["status.SigIgn"].strip() == ours["status.SigBlk"].strip() == "0" * 16
    assert ours["umask"] == "0022" and ours["home"] == "/root"
    # runc remounts the v1 cgroup tmpfs read-only once its binds are in (crun leaves it writable)
    assert ours["write.cgroup_top"] == battery["runc"]["write.cgroup_top"]


def test_seccomp_only_when_the_bundle_asks(battery):
    """No filter the bundle does not ask for; the image's profile is loaded
    (one filter, mode 2) exactly as runc loads it."""
    want = "0" if battery["runc"]["ns.cgroup"] == "host" else "2"
    assert battery["cvbench"]["status.Seccomp"].strip() == want


# ---- checks made from the host, under every runtime -------------------------

def _run_all(runners, bundle: Path, tag: str, fd: int | None = None) -> dict[str, tuple[int, str, str]]:
    own = fd is None
    fd = _fd_on_host_root() if own else fd
    try:
        return {name: r.run(bundle, f"cvbench-{tag}-{os.getpid()}-{name}", fd)
                for name, r in runners.items()}
    finally:
        if own:
            os.close(fd)


def test_symlinked_mount_destination_stays_inside(runners, image, tmp_path):
    """A rootfs whose /mnt is a symlink to a host path, with a mount at /mnt/t:
    the mountpoint must be made inside the rootfs, never on the host."""
    rootfs = tmp_path / "rootfs"
    shutil.copytree(image.rootfs, rootfs, symlinks=True,  # regular files only: never read a device
                    ignore=lambda d, names: [n for n in names if not (os.path.isdir(os.path.join(d, n))
                                                                       or os.path.isfile(os.path.join(d, n))
                                                                       or os.path.islink(os.path.join(d, n)))])
    host = tmp_path / "host-target"
    host.mkdir()
    if (rootfs / "mnt").exists():
        shutil.rmtree(rootfs / "mnt")
    os.symlink(str(host), rootfs / "mnt")
    b = make_bundle(tmp_path, str(rootfs), ["sh", "-c", "awk '$9 == \"tmpfs\" {print $5}' /proc/self/mountinfo | grep t$"],
                    edit=lambda c: c["mounts"].append({"destination": "/mnt/t", "type": "tmpfs",
                                                       "source": "tmpfs"}))
    res = _run_all(runners, b, "symlink")
    assert not (host / "t").exists(), "a mountpoint was created on the host"
    assert (rootfs / str(host).lstrip("/") / "t").is_dir()
    _like(res, "symlinked destination")


PROPAGATIONS = ["rshared", "shared", "rslave", "slave", "rprivate", "private", "runbindable", "unbindable"]


def _host_mounts(rootfs: str) -> list[str]:
    """The host's mounts at or below the rootfs (where a leak lands); other
    tests on this machine add and remove their own elsewhere meanwhile."""
    with open("/proc/self/mountinfo") as f:
        return [" ".join(line.split()[3:5]) for line in f if line.split()[4].startswith(rootfs)]


@pytest.mark.parametrize("mode", PROPAGATIONS)
def test_root_propagation_leaks_nothing(runners, image, tmp_path, mode):
    """Every rootfsPropagation mode starts, shows on / as runc shows it, and no
    container mount appears in the host's namespace, while it runs or after."""
    script = ("awk '$5 == \"/\" {for (i=7; $i != \"-\"; i++) {t=$i; sub(/:.*/, \"\", t); printf \"%s \", t}}'"
              " /proc/self/mountinfo; echo; sleep 0.3")
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", script],
                    edit=lambda c: c["linux"].__setitem__("rootfsPropagation", mode))
    before = _host_mounts(image.rootfs)
    fd = _fd_on_host_root()
    try:
        out = {}
        for name, r in runners.items():
            p = r.popen(["run", "-b", str(b), f"cvbench-prop-{os.getpid()}-{name}"], fd)
            first = p.stdout.readline().decode()
            during = _host_mounts(image.rootfs)
            rest, err = p.communicate(timeout=30)
            out[name] = (p.returncode, first, err.decode()[-300:])
            assert during == before, f"{name} ({mode}): mounts appeared on the host while running"
    finally:
        os.close(fd)
    assert _host_mounts(image.rootfs) == before
    if mode.endswith("unbindable") and out["runc"][0] != 0:
        # runc 1.1 and crun 1.8 apply it to "/" before binding the rootfs,
        # which the kernel then refuses (EINVAL); the spec allows the mode,
        # so cvbench applies it after the root switch and must show it
        assert out["cvbench"][:2] == (0, "unbindable \n"), out
        return
    _like(out, f"rootfsPropagation {mode}")


def test_recursive_readonly_and_nosymfollow(runners, image, tmp_path):
    """rbind + rro makes a submount read-only too; nosymfollow shows in the
    mount's options (mount_setattr); same as runc."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    from runtime import syscalls as sc
    sc.mount("tmpfs", str(data / "sub"), "tmpfs", 0, "size=64k")
    try:
        script = ("for f in /mnt/x /mnt/sub/x; do touch $f 2>&1 | sed 's/.*: //'; echo \"$f done\"; done; "
                  "awk '$5 ~ /^\\/mnt/ {print $5, $6}' /proc/self/mountinfo")
        b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", script],
                        edit=lambda c: c["mounts"].append({"destination": "/mnt", "type": "bind",
                                                           "source": str(data),
                                                           "options": ["rbind", "rro", "nosymfollow"]}))
        res = _run_all(runners, b, "rro")
    finally:
        sc.umount2(str(data / "sub"), sc.MNT_DETACH)
    _like(res, "rro + nosymfollow")
    assert "/mnt/sub ro" in res["cvbench"][1] and "nosymfollow" in res["cvbench"][1]


def test_unknown_bind_option_is_an_error(runners, image, tmp_path):
    b = make_bundle(tmp_path, image.rootfs, ["true"],
                    edit=lambda c: c["mounts"].append({"destination": "/mnt", "type": "bind",
                                                       "source": str(tmp_path), "options": ["rbind", "frobnicate"]}))
    rc, _, err = runners["cvbench"].run(b, f"cvbench-badopt-{os.getpid()}", _fd_on_host_root())
    assert rc != 0 and "frobnicate" in err, err


def test_new_session_keyring(runners, image, tmp_path):
    """Each container joins a session keyring of its own (_ses.<id>), never
    the caller's."""
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", "echo up; sleep 0.5"])
    fd = _fd_on_host_root()
    seen = {}
    try:
        for name, r in runners.items():
            cid = f"cvbench-key-{os.getpid()}-{name}"
            p = r.popen(["run", "-b", str(b), cid], fd)
            p.stdout.readline()
            with open("/proc/keys") as f:
                seen[name] = sum(f"_ses.{cid}" in line and "keyring" in line for line in f)
            p.communicate(timeout=30)
    finally:
        os.close(fd)
    assert seen["cvbench"] == seen["runc"] == 1, seen


def test_run_forwards_signals_and_passes_the_status(runners, image, tmp_path):
    """`run` forwards SIGUSR2 and SIGALRM (which must not kill the runtime) to the
    container and exits with its status; nothing of ours is left."""
    script = 'trap "echo usr2" USR2; trap "echo alrm; exit 7" ALRM; echo up; while :; do sleep 0.05; done'
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", script])
    fd = _fd_on_host_root()
    out = {}
    try:
        for name, r in runners.items():
            p = r.popen(["run", "-b", str(b), f"cvbench-sig-{os.getpid()}-{name}"], fd)
            assert p.stdout.readline() == b"up\n"
            p.send_signal(signal.SIGUSR2)
            assert p.stdout.readline() == b"usr2\n", name
            p.send_signal(signal.SIGALRM)
            rest, _ = p.communicate(timeout=30)
            out[name] = (p.returncode, rest.decode())
    finally:
        os.close(fd)
    assert out["cvbench"] == out["runc"] == (7, "alrm\n"), out
    assert not any(runners["cvbench"].root.glob("*")), "state left behind"


def test_exit_status_and_signal_death(runners, image, tmp_path):
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", "exit 3"])
    res = _run_all(runners, b, "rc")
    assert res["cvbench"][0] == res["runc"][0] == 3
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", "sleep 5 & kill -TERM $!; wait $!"])
    res = _run_all(runners, b, "rc2")
    assert res["cvbench"][0] == res["runc"][0] == 143


def test_security_field_fails_closed(runners, image, tmp_path):
    """An AppArmor profile this host cannot apply stops `run` before anything
    starts, naming the field; --ignore-unsupported runs it with a warning."""
    from runtime import lsm
    if lsm.apparmor()[0]:
        pytest.skip("AppArmor is enabled here: the field would be refused for another reason")
    b = make_bundle(tmp_path, image.rootfs, ["true"],
                    edit=lambda c: c["process"].__setitem__("apparmorProfile", "cvbench-test"))
    r = runners["cvbench"]
    rc, _, err = r.run(b, f"cvbench-aa-{os.getpid()}", _fd_on_host_root())
    assert rc == 2 and "process.apparmorProfile" in err, err
    p = subprocess.run(r.cmd("run", "--ignore-unsupported", "-b", str(b), f"cvbench-aa2-{os.getpid()}"),
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "warning: process.apparmorProfile" in p.stderr, p.stderr


def test_library_container_state_shows_its_pid(root, image):
    from runtime import spawn
    with spawn(image.bundle, ["/probe", "sleep", "-1"]) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        st = subprocess.run([sys.executable, "-m", "runtime", "state", c.id], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
        rec = json.loads(st.stdout)
        assert rec["status"] == "running" and rec["pid"] == c.pid


HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def test_hooks_run_with_the_state_on_stdin(runners, image, tmp_path):
    """All six hook kinds run, each with the state JSON on stdin (id, pid,
    bundle); startContainer runs inside the container; a failing
    createRuntime hook fails the start with nothing left behind."""
    out = tmp_path / "out"
    out.mkdir()

    def edit(c):
        c["hooks"] = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{k}"]}] for k in HOOKS}
        # inside the container, the rootfs's own sh writes into its own /dev/shm
        c["hooks"]["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /dev/shm/s; echo in"]}]
        c["process"]["args"] = ["sh", "-c", "grep -c '\"status\"' /dev/shm/s"]
    b = make_bundle(tmp_path, image.rootfs, [], edit=edit)
    fd = _fd_on_host_root()
    seen = {}
    try:
        for name in ("runc", "cvbench"):
            for f in out.iterdir():
                f.unlink()
            cid = f"cvbench-hook-{os.getpid()}-{name}"
            rc, stdout, err = runners[name].run(b, cid, fd)
            states = {f.name: json.loads(f.read_text()) for f in out.iterdir()}
            assert all(s["id"] == cid and s["bundle"] == str(b) for s in states.values()), states
            seen[name] = (rc, stdout, sorted(states))
        b2 = make_bundle(tmp_path, image.rootfs, ["true"],
                         edit=lambda c: c.__setitem__("hooks", {"createRuntime": [{"path": "/bin/false"}]}))
        bad = {n: runners[n].run(b2, f"cvbench-hookf-{os.getpid()}-{n}", fd)[0] for n in ("runc", "cvbench")}
    finally:
        os.close(fd)
    assert seen["cvbench"] == seen["runc"] == (0, "1\n", sorted(set(HOOKS) - {"startContainer"})), seen
    assert bad["cvbench"] != 0 and bad["runc"] != 0
    assert not any(runners["cvbench"].root.glob("*")), "state left behind"


@pytest.mark.parametrize("cgpath", ["/cvbench-cgtest-{pid}/{name}", "cvbench-cgtest-{pid}/{name}"],
                         ids=["absolute", "relative"])
def test_cgroups_path_devices_and_oom_score(runners, image, tmp_path, cgpath):
    """linux.cgroupsPath (absolute: from each hierarchy's root; relative: from
    the caller's cgroup), a linux.devices node allowed in the device cgroup,
    and oomScoreAdj, as runc applies them."""
    from runtime import cgroups
    script = ("cat /proc/self/oom_score_adj; stat -c '%A %t:%T %u:%g' /dev/fuse; "
              "head -c0 /dev/fuse && echo fuse-opens; grep -c . /sys/fs/cgroup/devices/devices.list; "
              "echo up; sleep 0.3")
    fd = _fd_on_host_root()
    res, where = {}, {}
    try:
        for name in ("runc", "cvbench"):
            path = cgpath.format(pid=os.getpid(), name=name)

            def edit(c, path=path):
                c["process"]["oomScoreAdj"] = 123
                c["linux"]["cgroupsPath"] = path
                c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                          "fileMode": 0o640, "uid": 0, "gid": 0}]
            b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", script], edit=edit)
            p = runners[name].popen(["run", "-b", str(b), f"cvbench-cgp-{os.getpid()}-{name}"], fd)
            lines = []
            while not lines or lines[-1] not in ("up\n", ""):
                lines.append(p.stdout.readline().decode())
            mem = [d for d in cgroups.backend().leaf_dirs("x", path) if "/memory/" in d][0]
            where[name] = os.path.isdir(mem)
            rest, err = p.communicate(timeout=30)
            res[name] = (p.returncode, "".join(lines) + rest.decode())
            assert not os.path.isdir(mem), f"{name} left {mem}"
    finally:
        os.close(fd)
        for leaf in cgroups.backend().leaf_dirs("x", cgpath.format(pid=os.getpid(), name="x")):
            try:  # the parent both runtimes made (neither removes a cgroupsPath's parents)
                os.rmdir(os.path.dirname(leaf))
            except FileNotFoundError:
                pass
    assert res["cvbench"] == res["runc"], res
    assert res["cvbench"][1].startswith("123\ncrw-r----- a:e5 0:0\n"), res
    assert where == {"runc": True, "cvbench": True}, where


def test_preserve_fds_keeps_only_what_is_asked(runners, image, tmp_path):
    """--preserve-fds 1 (LISTEN_FDS style): fd 3 of the caller reaches the
    container, fd 4 does not; same as runc."""
    b = make_bundle(tmp_path, image.rootfs, ["sh", "-c", "cat <&3; ls /proc/self/fd | tr '\\n' ' '"])
    (tmp_path / "three").write_text("fd three\n")
    out = {}
    for name in ("runc", "cvbench"):
        r = runners[name]
        cmd = " ".join(shlex.quote(x) for x in r.cmd("run", "--preserve-fds", "1", "-b", str(b),
                                                      f"cvbench-pfd-{os.getpid()}-{name}"))
        p = subprocess.run(["sh", "-c", f"exec 3<{tmp_path}/three 4<{tmp_path}/three; exec {cmd}"],
                           cwd=REPO, capture_output=True, text=True, timeout=30,
                           pass_fds=r.pass_fds)
        out[name] = (p.returncode, p.stdout)
    assert out["cvbench"] == out["runc"] == (0, "fd three\n0 1 2 3 4 "), out
