"""The C stage (runtime/stage/stage.c) must start a process exactly as the
Python child does for the plans it takes: same session, groups, ids, cwd,
umask, signal dispositions and mask, fds.  Both paths run the same probe
script here, from a parent that ignores and blocks signals, holds extra
groups and leaks an fd without close-on-exec, and the outputs must match."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.paths import ROOT
from runtime import capabilities, stage

SCRIPT = r"""
import json, os, signal, sys
from runtime import Isolation, spawn, stage
os.setgroups([1234, 4321])
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM})
import ctypes  # the C library's reserved 32 and 33, ignored and blocked the raw way
libc = ctypes.CDLL(None, use_errno=True)
ign = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # SIG_IGN
for sig in (32, 33):
    assert libc.syscall(13, sig, ctypes.byref(ign), None, 8) == 0
assert libc.syscall(14, 0, ctypes.byref(ctypes.c_ulong(3 << 31)), None, 8) == 0  # SIG_BLOCK
st = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
assert int(st["SigIgn"], 16) & (3 << 31) == int(st["SigBlk"], 16) & (3 << 31) == 3 << 31
leak = os.open("/dev/null", os.O_RDONLY)
os.set_inheritable(leak, True)
bundle, use_stage, rung = sys.argv[1], sys.argv[2] == "c", sys.argv[3]
if not use_stage:
    stage.binary = lambda: None
iso = Isolation.bare() if rung == "bare" else None if rung == "full" else Isolation(
    pidns=True, mountns=True, utsns=True, ipcns=True, netns=True, network="loopback", cgroupns=True,
    cgroup=True, caps=True, no_new_privs=True, seccomp=True)
cmd = ("grep -E '^(SigIgn|SigBlk|Groups|Uid|Gid|NoNewPrivs|Seccomp|Seccomp_filters|Cap...)' "
       "/proc/self/status; umask; pwd; ls /proc/self/fd | sort -n | tr '\n' ' '; echo; "
       "read -r stat < /proc/self/stat; set -- $stat; echo sid_is_self=$([ $1 = $6 ] && echo yes); "
       "echo pid=$$; hostname; cat /proc/self/cgroup | sort; cat /proc/net/dev | cut -d: -f1; "
       "grep -c 010000E0 /proc/net/igmp; "
       "awk '$5 == \"/\" {print \"root-propagation:\", $7}' /proc/self/mountinfo; for ns in pid uts ipc net cgroup mnt user; do "
       "[ $(readlink /proc/self/ns/$ns) = $(readlink /proc/1/ns/$ns 2>/dev/null) ] && echo $ns=pid1s; "
       "done; hostname x 2>&1; echo reboot-blocked") + sys.argv[4]
with spawn(bundle, ["/bin/sh", "-c", cmd], iso) as c:
    out = c.stdout.read().decode()
    rc = c.wait()
print(json.dumps({"stage": c.stage, "rc": rc, "out": out}))
"""


@pytest.fixture(scope="module")
def built():
    return stage.build()


# What the init's program (runtime/stage/program.py -> program.c) changes:
# the mount table (ids and host device numbers cut), every node and link in
# /dev and the cgroup tree with mode, owner and device numbers, rlimits,
# oom_score_adj, a sysctl, the read-only root and a masked path.
INIT = ("; cut -d' ' -f4- /proc/self/mountinfo | sed 's/ [0-9]*:[0-9]* / /'; "
        "find /dev /sys/fs/cgroup -maxdepth 1 | sort | xargs stat -c '%n %f %u %g %t %T %N'; "
        "ulimit -a; cat /proc/self/oom_score_adj; cat /proc/sys/kernel/shmmni; "
        "touch /x 2>&1; ls /sys/firmware | wc -l; wc -c < /proc/timer_list")


def _run(bundle: str, which: str, rung: str = "bare", extra: str = "") -> dict:
    r = subprocess.run([sys.executable, "-c", SCRIPT, bundle, which, rung, extra], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    out["out"] = re.sub(r"pid=\d{2,}", "pid=<host pid>", out["out"])  # bare: no pid namespace
    return out


def test_stage_starts_a_process_exactly_as_the_python_child(root, image, built):
    c, py = _run(image.bundle, "c"), _run(image.bundle, "python")
    assert (c["stage"], py["stage"]) == ("c", "python")
    assert c["rc"] == py["rc"] == 0
    assert c["out"] == py["out"]
    lines = dict(line.split(":", 1) for line in c["out"].splitlines() if ":" in line)
    assert lines["SigIgn"].strip() == "0000000000000000"
    assert lines["SigBlk"].strip() == "0000000000000000"
    assert lines["Groups"].strip() == ""
    assert "sid_is_self=yes" in c["out"]
    assert "0 1 2 3 " in c["out"] and " 4 " not in c["out"]  # 3 is ls's own directory fd


def test_stage_applies_namespaces_cgroup_caps_nnp_seccomp_exactly_as_the_python_child(
        root, image, built):
    c, py = _run(image.bundle, "c", "cheap"), _run(image.bundle, "python", "cheap")
    assert (c["stage"], py["stage"]) == ("c", "python")
    assert c["rc"] == py["rc"]
    assert c["out"] == py["out"]
    out = c["out"]
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out and "Seccomp_filters:\t1" in out
    caps = json.loads(Path(image.bundle, "config.json").read_text())["process"]["capabilities"]
    assert f"CapBnd:\t{capabilities.mask(caps['bounding']):016x}" in out
    assert "pid=1" in out and "0::/" in out and "4:memory:/" in out  # pid/cgroup ns, own cgroup
    assert "Operation not permitted" in out      # sethostname: refused without CAP_SYS_ADMIN
    assert "\n1\n" in out                        # lo is up: it joined the all-hosts group
    assert "root-propagation: master:" in out or "root-propagation: -" in out  # never shared


def test_stage_reports_a_missing_cwd_like_the_python_child(root, image, built, tmp_path):
    from common.errors import CvbError
    from runtime import Isolation, spawn
    from runtime.spec import default_spec
    cfg = default_spec(["/probe", "ready"], root=image.rootfs)
    cfg["process"]["cwd"] = "/does/not/exist"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CvbError, match=r"No such file or directory: '.*/does/not/exist'"):
        spawn(tmp_path, iso=Isolation.bare())


def test_only_plans_without_child_work_take_the_stage(root, image, built):
    from runtime import Isolation, spawn
    with spawn(image.bundle, ["/probe", "ready"], Isolation.bare()) as c:
        assert c.stdout.readline().startswith(b"CVB READY")
        assert c.stage == "c"
    for m in ("pidns", "mountns", "utsns", "ipcns", "netns", "cgroupns", "caps", "no_new_privs", "seccomp"):
        with spawn(image.bundle, ["/probe", "ready"], Isolation.only(m)) as c:
            assert c.stdout.readline().startswith(b"CVB READY")
            assert c.stage == "c", m
    for iso in (Isolation.only("pivot_root"), Isolation.full()):  # the default bundle too
        with spawn(image.bundle, ["/probe", "ready"], iso) as c:
            assert c.stdout.readline().startswith(b"CVB READY")
            assert c.stage == "c", iso
    for iso in (Isolation.only("userns"), Isolation.only("timens"), Isolation.only("veth")):
        with spawn(image.bundle, ["/probe", "ready"], iso) as c:
            assert c.stdout.readline().startswith(b"CVB READY")
            assert c.stage == "python", iso


def _full_bundle(image, tmp_path, edit=None) -> str:
    cfg = json.loads(Path(image.bundle, "config.json").read_text())
    cfg["root"]["path"] = image.rootfs
    if edit:
        edit(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def test_stage_runs_the_default_bundle_exactly_as_the_python_child(root, image, built, tmp_path):
    bundle = _full_bundle(image, tmp_path)
    c, py = _run(bundle, "c", "full", INIT), _run(bundle, "python", "full", INIT)
    assert (c["stage"], py["stage"]) == ("c", "python")
    assert c["rc"] == py["rc"]
    assert c["out"] == py["out"]
    out = c["out"]
    assert f"{image.rootfs} / ro," in out        # pivot_root'ed into a read-only root
    assert "/dev/null 21b6 0 0 1 3" in out        # a real node, 0666, made by mknod
    assert "/sys/fs/cgroup 416d" in out           # the v1 tmpfs's top 0555 (ro cgroup mount)
    assert "/null /proc/timer_list " in out and "/ /sys/firmware ro," in out  # masked
    assert "/sys /proc/sys ro," in out            # read-only path
    assert "touch: /x: Read-only file system\n0\n0\n" in out  # nothing readable where masked
    assert "open files                      (-n) 1024" in out  # RLIMIT_NOFILE from config.json


def test_stage_runs_sysctl_oom_devices_and_binds_as_the_python_child(root, image, built, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hi")

    def edit(cfg):
        cfg["linux"]["sysctl"] = {"kernel.shmmni": "1234"}
        cfg["process"]["oomScoreAdj"] = 123
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 333, "soft": 222},
                                     {"type": "RLIMIT_CORE", "hard": 18446744073709551615,
                                      "soft": 18446744073709551615}]
        cfg["linux"]["devices"] = [{"path": "/dev/cvb/fuse", "type": "c", "major": 10, "minor": 229,
                                    "fileMode": 0o640, "uid": 7, "gid": 8}]
        cfg["mounts"].append({"destination": "/mnt/a/b", "type": "bind", "source": str(src),
                              "options": ["rbind", "rro", "nosuid"]})
        cfg["root"]["readonly"] = False
    (tmp_path / "b").mkdir()
    bundle = _full_bundle(image, tmp_path / "b", edit)
    extra = INIT + "; stat -c '%n %f %u %g %t %T' /dev/cvb/fuse; cat /mnt/a/b/f; touch /mnt/a/b/g 2>&1"
    c, py = _run(bundle, "c", "full", extra), _run(bundle, "python", "full", extra)
    assert (c["stage"], py["stage"]) == ("c", "python")
    assert c["rc"] == py["rc"]
    assert c["out"] == py["out"]
    out = c["out"]
    assert "\n123\n1234\n" in out                   # oom_score_adj, then the sysctl
    assert "/dev/cvb/fuse 21a0 7 8 a e5" in out       # 0640 char 10:229 owned 7:8
    assert "hi" in out and "touch: /mnt/a/b/g: Read-only file system" in out
    assert "core file size (blocks)         (-c) unlimited" in out
