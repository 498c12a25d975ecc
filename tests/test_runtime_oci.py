"""OCI bundles: a config.json from `runc spec` runs unchanged except for
process.args and terminal; malformed fields are errors naming their JSON path
(exit 2); unknown fields are warnings; config.json's user namespace mappings
are honoured."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest

from common.errors import CvbError
from common.paths import ROOT
from runtime import Isolation, spawn
from runtime import config as config_mod
from runtime.spec import default_spec


def _bundle(tmp_path, image, cfg: dict):
    """A bundle with a copy of the image's rootfs (runc rejects symlinked rootfs paths)."""
    b = tmp_path / "bundle"
    if not (b / "rootfs").exists():
        shutil.copytree(image.rootfs, b / "rootfs", symlinks=True)
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def _runc_spec(tmp_path) -> dict:
    runc = shutil.which("runc")
    if not runc:
        pytest.skip("runc not installed (make setup installs it); it generates the reference config")
    d = tmp_path / "spec"
    d.mkdir()
    subprocess.run([runc, "spec"], cwd=d, check=True)
    cfg = json.loads((d / "config.json").read_text())
    cfg["process"]["args"] = ["/probe", "ready"]
    cfg["process"]["terminal"] = False
    return cfg


def test_runc_spec_bundle_runs_through_the_library(root, image, tmp_path):
    b = _bundle(tmp_path, image, _runc_spec(tmp_path))
    with spawn(b, iso=Isolation.full()) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        assert c.wait(timeout=20) == 0
        assert not [w for w in c.warnings if "unknown" in w], c.warnings


def test_runc_spec_bundle_runs_through_the_cli(root, image, tmp_path):
    b = _bundle(tmp_path, image, _runc_spec(tmp_path))
    r = subprocess.run([sys.executable, "-m", "runtime", "run", "-b", str(b), f"cvbench-oci-{tmp_path.name[-8:]}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["CVB READY", "CVB DONE rc=0"]


def test_crun_spec_bundle_runs_too(root, image, tmp_path):
    crun = shutil.which("crun")
    if not crun:
        pytest.skip("crun not installed")
    d = tmp_path / "crunspec"
    d.mkdir()
    subprocess.run([crun, "spec"], cwd=d, check=True)
    cfg = json.loads((d / "config.json").read_text())
    cfg["process"].update(args=["/probe", "ready"], terminal=False)
    with spawn(_bundle(tmp_path, image, cfg)) as c:
        assert c.stdout.readline() == b"CVB READY\n"
        assert c.wait(timeout=20) == 0


def test_default_spec_is_what_the_image_uses(image):
    """The image's bundle: runc spec + cgroup namespace + the default seccomp profile."""
    from bench.bundle import default_config
    cfg = json.loads(open(f"{image.bundle}/config.json").read())
    assert cfg == default_config(["/probe", "ready"])
    base = default_spec(["/probe", "ready"])
    assert {k: v for k, v in cfg["process"].items()} == base["process"]


BAD = [
    (lambda c: c["process"].update(args="probe"), "process.args", "must be list"),
    (lambda c: c["process"].update(args=[]), "process.args", "must name the program"),
    (lambda c: c["process"].update(terminal=True), "process.terminal", "not supported"),
    (lambda c: c["process"]["user"].update(uid="root"), "process.user.uid", "must be int"),
    (lambda c: c["process"].update(cwd="tmp"), "process.cwd", "absolute"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_FLY"),
     "process.capabilities.bounding[3]", "unknown capability"),
    (lambda c: c["process"]["rlimits"][0].update(type="NOFILE"), "process.rlimits[0].type", "RLIMIT_"),
    (lambda c: c["root"].update(path="nowhere"), "root.path", "not a directory"),
    (lambda c: c.pop("root"), "root", "is missing"),
    (lambda c: c["mounts"][0].update(destination="proc"), "mounts[0].destination", "absolute"),
    (lambda c: c["linux"]["namespaces"].append({"type": "pidd"}), "linux.namespaces[5].type", "unknown namespace"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1}]), "linux.uidMappings[0]", "size"),
    (lambda c: c["linux"].update(resources={"memory": {"limit": "1G"}}), "linux.resources.memory.limit", "must be int"),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_MAYBE"}), "linux.seccomp.defaultAction", "one of"),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ERRNO"}]}),
     "linux.seccomp.syscalls[0].names", "list"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": 1}), "linux.sysctl.net.ipv4.ip_forward", "string"),
]


@pytest.mark.parametrize("mutate,path,why", BAD, ids=[b[1] for b in BAD])
def test_malformed_field_is_named(image, tmp_path, mutate, path, why):
    cfg = default_spec(["/probe", "ready"])
    mutate(cfg)
    (tmp_path / "rootfs").symlink_to(image.rootfs)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CvbError) as e:
        config_mod.load(tmp_path)
    assert e.value.status == 2
    line = e.value.line()
    assert f": {path}: " in line and why in line, line


def test_malformed_config_exits_2_with_one_line(root, image, tmp_path):
    cfg = default_spec(["/probe", "ready"])
    cfg["process"]["user"]["uid"] = "root"
    b = _bundle(tmp_path, image, cfg)
    r = subprocess.run([sys.executable, "-m", "runtime", "run", "-b", str(b), "cvbench-bad"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "process.user.uid" in r.stderr
    assert r.stderr.startswith("cvbench: ") and "Traceback" not in r.stderr


def test_invalid_json_names_the_line(image, tmp_path):
    (tmp_path / "config.json").write_text('{"process": {"args": ["x"],}}')
    with pytest.raises(CvbError, match="line 1 column"):
        config_mod.load(tmp_path)


def test_unknown_fields_are_warnings(root, image, tmp_path):
    cfg = default_spec(["/probe", "ready"])
    cfg["frobnicate"] = 1
    cfg["process"]["oomScoreAdj"] = 100
    cfg["linux"]["resources"]["cpu"] = {"cpus": "0", "quota": 50000, "period": 100000, "idle": 0}
    b = _bundle(tmp_path, image, cfg)
    with spawn(b) as c:
        assert c.wait(timeout=20) == 0
    assert "frobnicate: unknown field, ignored" in c.warnings
    assert not any("oomScoreAdj" in w for w in c.warnings)  # applied now
    assert any(w.startswith("linux.resources.cpu.idle: not supported") for w in c.warnings)
    assert not any("cpu.cpus" in w for w in c.warnings)  # applied (cpuset) now


def test_config_user_namespace_and_mappings(root, image, tmp_path):
    """uid 0 inside maps to the host uid config.json configures."""
    cfg = default_spec(["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; sleep 5"])
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    # The image's own rootfs: host uid 200000 cannot traverse pytest's 0700 tmp dirs.
    cfg["root"]["path"] = image.rootfs
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        assert c.stdout.readline() == b"0\n"
        assert c.stdout.readline().split() == [b"0", b"200000", b"65536"]
        status = open(f"/proc/{c.pid}/status").read()
        assert "Uid:\t200000\t200000\t200000\t200000" in status


def test_config_seccomp_profile_is_used(root, image, tmp_path):
    cfg = default_spec(["/bin/sh", "-c", "hostname x 2>&1; echo rc=$?"])
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    with spawn(_bundle(tmp_path, image, cfg)) as c:
        out = c.stdout.read().decode()
    assert "Permission denied" in out and "rc=1" in out, out  # errno 13 = EACCES


def test_config_hostname_mounts_and_rlimits(root, image, tmp_path):
    cfg = copy.deepcopy(default_spec(["/bin/sh", "-c", "hostname; ulimit -n; grep ' /scratch ' /proc/mounts"]))
    cfg["hostname"] = "cvbench-oci"
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 333, "soft": 222}]
    cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "size=1m"]})
    with spawn(_bundle(tmp_path, image, cfg)) as c:
        out = c.stdout.read().decode().splitlines()
    assert out[0] == "cvbench-oci" and out[1] == "222"
    assert out[2].startswith("tmpfs /scratch tmpfs rw,nosuid")


def test_sysctl_namespaced_only(root, image, tmp_path):
    cfg = default_spec(["/bin/cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmni"],
                       root=image.rootfs)
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        assert c.stdout.read().split() == [b"1", b"1234"]
    assert open("/proc/sys/kernel/shmmni").read().strip() != "1234"
    cfg["linux"]["sysctl"] = {"vm.swappiness": "1"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CvbError, match="linux.sysctl.vm.swappiness: is not namespaced"):
        spawn(tmp_path)


def test_process_user_and_caps_from_config(root, image, tmp_path):
    cfg = default_spec(["/bin/sh", "-c", "id -u; id -g; id -G; grep CapEff /proc/self/status"],
                       root=image.rootfs)
    cfg["process"]["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [5]}
    # a non-root uid keeps capabilities across exec only through the ambient set
    cfg["process"]["capabilities"] = {s: ["CAP_KILL"] for s in ("bounding", "effective", "permitted",
                                                                "inheritable", "ambient")}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        out = c.stdout.read().decode().split()
    assert out[:3] == ["65534", "65534", "65534"] and "5" in out
    assert out[-1] == f"{1 << 5:016x}"  # CAP_KILL only


def test_join_namespaces_by_path(root, image, tmp_path):
    """linux.namespaces[].path joins an existing namespace: a cvbench-made
    netns, and the uts namespace of a running container."""
    from runtime import network
    netns = f"cvbench-rt-j{os.getpid() % 100000}"
    network.create_netns(netns)
    try:
        with spawn(image.bundle, ["/probe", "sleep", "-1"], Isolation.full()) as first:
            cfg = default_spec(["/bin/sh", "-c", "hostname; readlink /proc/self/ns/net"], root=image.rootfs)
            cfg["hostname"] = "ignored-when-joining"
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = f"/run/netns/{netns}"
                if ns["type"] == "uts":
                    ns["path"] = f"/proc/{first.pid}/ns/uts"
            (tmp_path / "config.json").write_text(json.dumps(cfg))
            with spawn(tmp_path) as second:
                out = second.stdout.read().decode().split()
            assert out[0] == "cvbench"  # the first container's hostname
            assert out[1] == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]"
    finally:
        network.delete_netns(netns)
    assert not os.path.exists(f"/run/netns/{netns}")


def test_non_root_user_with_seccomp_and_without_no_new_privs(root, image, tmp_path):
    """The filter is loaded before the uid switch when no_new_privs is off."""
    cfg = default_spec(["/bin/sh", "-c", "id -u; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"],
                       root=image.rootfs)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["process"]["noNewPrivileges"] = False
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path, iso=Isolation.full().replace(no_new_privs=False)) as c:
        out = c.stdout.read().decode().split()
    assert out == ["1000", "NoNewPrivs:", "0", "Seccomp:", "2"], out


def test_unsupported_security_fields_fail_closed(root, image, tmp_path):
    """apparmorProfile / selinuxLabel this host cannot apply: an error naming
    the field before anything exists; ignore_unsupported=True runs it and
    lists the warning on Container.warnings (the harness records those)."""
    from runtime import cgroups, lsm, state
    if lsm.apparmor()[0] or lsm.selinux()[0]:
        pytest.skip("an LSM is enabled here")
    cfg = default_spec(["/bin/true"], root=image.rootfs)
    cfg["process"]["apparmorProfile"] = "cvbench-test"
    cfg["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    name = f"cvbench-failclosed-{os.getpid()}"
    with pytest.raises(CvbError, match="process.apparmorProfile"):
        spawn(tmp_path, name=name)
    assert state.read(name) is None
    assert not any(os.path.exists(d) for d in cgroups.backend().leaf_dirs(name))
    with spawn(tmp_path, name=name, ignore_unsupported=True) as c:
        assert c.wait(timeout=20) == 0
    assert any(w.startswith("process.apparmorProfile:") for w in c.warnings)
    assert any(w.startswith("process.selinuxLabel:") for w in c.warnings)


def test_refused_id_mapping_fails_create(root, image, tmp_path):
    """Overlapping uid ranges: the kernel refuses the map, so `create` fails
    (exit 2, naming the field) and leaves no state, never a dead container
    reported as created."""
    import subprocess
    import sys

    from common.paths import ROOT
    cfg = default_spec(["/bin/true"], root=image.rootfs)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 100},
                                   {"containerID": 50, "hostID": 300000, "size": 100}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 100}]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    st = tmp_path / "state"
    cid = f"cvbench-badmap-{os.getpid()}"
    r = subprocess.run([sys.executable, "-m", "runtime", "--root", str(st), "create", "-b", str(tmp_path), cid],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "uidMappings" in r.stderr, r.stderr
    assert not st.exists() or not any(st.iterdir())


def test_pids_limit_minus_one_is_unlimited(root, image, tmp_path):
    cfg = default_spec(["/bin/sh", "-c", "sleep 5"], root=image.rootfs)
    cfg["linux"]["resources"]["pids"] = {"limit": -1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with spawn(tmp_path) as c:
        pids = [d for d in c.cgroup_dirs() if "/pids/" in d or d.startswith("/sys/fs/cgroup/cvbench")]
        assert open(f"{pids[0]}/pids.max").read().strip() == "max"


def test_memory_reservation_swap_swappiness_and_oom_killer_are_applied(root, image, tmp_path):
    """The rest of linux.resources.memory lands in the cgroup as runc writes it
    (v1 here; v2 maps reservation and swap and refuses the v1-only two)."""
    from runtime import cgroups
    cfg = _runc_spec(tmp_path)
    cfg["process"]["args"] = ["/probe", "sleep", "-1"]
    mib = 1 << 20
    cfg["linux"]["resources"] = {"memory": {"limit": 64 * mib, "reservation": 32 * mib, "swap": 96 * mib,
                                            "swappiness": 7, "disableOOMKiller": True}}
    b = _bundle(tmp_path, image, cfg)
    if cgroups.backend().version != "v1":
        with pytest.raises(CvbError, match="swappiness"):
            spawn(str(b), None, Isolation.full())
        return
    with spawn(str(b), None, Isolation.full()) as c:
        d = cgroups.backend().memory_dir(c.cgroup_dirs())
        read = lambda f: open(f"{d}/{f}").read().split()  # noqa: E731
        assert int(read("memory.limit_in_bytes")[0]) == 64 * mib
        assert int(read("memory.soft_limit_in_bytes")[0]) == 32 * mib
        if os.path.exists(f"{d}/memory.memsw.limit_in_bytes"):
            assert int(read("memory.memsw.limit_in_bytes")[0]) == 96 * mib
        assert int(read("memory.swappiness")[0]) == 7
        oom = read("memory.oom_control")
        assert oom[oom.index("oom_kill_disable") + 1] == "1"
        c.kill()


def test_v2_swap_is_memory_plus_swap_and_v1_only_fields_are_refused():
    from runtime import cgroups
    v2 = cgroups.V2.__new__(cgroups.V2)
    assert v2.files(cgroups.Limits(memory_bytes=64, memory_swap=96, memory_reservation=32)) == {
        "memory.max": "64", "memory.low": "32", "memory.swap.max": "32"}
    assert v2.files(cgroups.Limits(memory_bytes=64, memory_swap=-1))["memory.swap.max"] == "max"
    for lim, field in ((cgroups.Limits(memory_swap=96), "swap"), (cgroups.Limits(memory_swappiness=5), "swappiness"),
                       (cgroups.Limits(oom_kill_disable=True), "disableOOMKiller")):
        with pytest.raises(CvbError, match=field):
            v2.files(lim)
