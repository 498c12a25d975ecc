"""Each isolation mechanism, observed from inside a real container of the
shared image, for every rung the isolation ladder uses (only(m), cumulative(n),
bare and full): what is switched on must show, and what is off must not."""
from __future__ import annotations

import os
import socket

import pytest

from runtime import Isolation, spawn

NS = {"mountns": "mnt", "utsns": "uts", "ipcns": "ipc", "netns": "net", "pidns": "pid",
      "userns": "user", "cgroupns": "cgroup", "timens": "time"}
OCI_CAPS = 0x20000420  # CAP_AUDIT_WRITE | CAP_KILL | CAP_NET_BIND_SERVICE
OCI_NS = {"pid": "pidns", "network": "netns", "ipc": "ipcns", "uts": "utsns", "mount": "mountns",
          "user": "userns", "cgroup": "cgroupns", "time": "timens"}


def bundle_ns() -> set[str]:
    """What the image's config.json asks for (runc spec plus a cgroup namespace)."""
    import json

    from bench import image
    cfg = json.loads(open(f"{image.load().bundle}/config.json").read())
    return {OCI_NS[n["type"]] for n in cfg["linux"]["namespaces"]}

# One busybox script prints every observation; $1 is the host's mount namespace.
SCRIPT = r"""
echo "pid=$$"
echo "hostname=$(hostname)"
for n in mnt uts ipc net pid user cgroup time; do echo "ns_$n=$(readlink /proc/self/ns/$n)"; done
echo "procs=$(ls -d /proc/[0-9]* | wc -l)"
echo "work=$(test -e /work/main && echo yes || echo no)"
echo "links=$(ip -o link | cut -d: -f2 | tr -d ' ' | cut -d@ -f1 | tr '\n' ,)"
echo "lo=$(ip -o link show lo | grep -q '[<,]UP[,>]' && echo up || echo down)"
echo "uidmap=$(tr -s ' ' < /proc/self/uid_map | sed 's/^ //')"
echo "cgroup=$( (grep ':memory:' /proc/self/cgroup || grep '^0::' /proc/self/cgroup) | head -1 | cut -d: -f3)"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d ' \t' | sed 's/:/=/'
echo "unshare_user=$(unshare -U true 2>/dev/null && echo ok || echo denied)"
if [ "$(readlink /proc/self/ns/mnt)" != "$1" ]; then
  echo "mount=$(mount -t tmpfs cvbench-test /mnt 2>/dev/null && echo ok || echo denied)"
fi
if [ ! -e /work/main ]; then
  echo "timer_list=$(wc -c < /proc/timer_list)"
  echo "rootfs=$(touch /cvbench-w 2>/dev/null && rm -f /cvbench-w && echo rw || echo ro)"
  echo "dev=$(ls /dev | tr '\n' ,)"
  echo "proc_sys=$(grep ' /proc/sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
fi
"""


def observe(bundle: str, iso: Isolation) -> tuple[dict, object]:
    host_mnt = os.readlink("/proc/self/ns/mnt")
    links_before = set(os.listdir("/sys/class/net"))
    with spawn(bundle, ["/bin/sh", "-c", SCRIPT, "sh", host_mnt], iso) as c:
        out = c.stdout.read().decode()
        rc = c.wait(timeout=20)
    assert rc == 0, out
    obs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    # other tests on this host may add or remove links meanwhile
    obs["host_links"] = (links_before, set(os.listdir("/sys/class/net")))
    return obs, c


def profile_allows(name: str) -> bool:
    """Whether the bundle's seccomp profile (the one every seccomp rung loads)
    lets a syscall through unconditionally."""
    import json

    from bench import image
    prof = json.loads(open(f"{image.load().bundle}/config.json").read())["linux"].get("seccomp")
    if prof is None:
        return False  # the ladder's default profile denies unshare
    for rule in prof.get("syscalls", []):
        if name in rule["names"] and not rule.get("args"):
            return rule["action"] == "SCMP_ACT_ALLOW"
    return prof["defaultAction"] == "SCMP_ACT_ALLOW"


def effective(iso: Isolation) -> dict[str, bool]:
    """Which namespaces the container gets: full() follows the bundle."""
    want = bundle_ns() if iso.follow_bundle else set()
    return {k: (k in want if iso.follow_bundle else getattr(iso, k)) for k in NS}


def check(obs: dict, iso: Isolation, cid: str) -> None:
    ns = effective(iso)
    for kind, name in NS.items():
        differs = obs[f"ns_{name}"] != os.readlink(f"/proc/self/ns/{name}")
        assert differs == ns[kind], f"{kind}: inside {obs[f'ns_{name}']}"
    # pid namespace: the container's first process is pid 1
    assert (obs["pid"] == "1") == ns["pidns"]
    # uts: its own hostname (the host must not be called cvbench for this to mean anything)
    assert socket.gethostname() != "cvbench"
    assert obs["hostname"] == ("cvbench" if ns["utsns"] else socket.gethostname())
    # network: only lo (and the veth) in its own namespace; the host's links otherwise
    links = {x for x in obs["links"].split(",") if x}
    if ns["netns"]:
        extra = links - {"lo"}
        if iso.network == "veth":
            assert len(extra) == 1 and next(iter(extra)).startswith("cvbench"), links
        else:
            assert not extra, links
        assert obs["lo"] == ("down" if iso.network == "none" else "up")
    else:
        before, after = obs["host_links"]
        assert before & after <= links <= before | after, links
    # user namespace: root inside is host id 100000
    assert obs["uidmap"] == ("0 100000 65536" if ns["userns"] else "0 0 4294967295")
    # cgroup: its own under cvbench/<id>; a cgroup namespace shows it as /
    if ns["cgroupns"]:
        assert obs["cgroup"] == "/"
    elif iso.cgroup:
        assert obs["cgroup"].endswith(f"/cvbench/{cid}")
    else:
        assert "cvbench" not in obs["cgroup"]
    # capabilities: the OCI default set, or everything
    eff, bnd = int(obs["CapEff"], 16), int(obs["CapBnd"], 16)
    if iso.caps:
        assert eff == bnd == OCI_CAPS
    else:
        assert eff == bnd and eff & (1 << 21)  # CAP_SYS_ADMIN kept
    if "mount" in obs:  # only run inside a mount namespace of its own
        assert obs["mount"] == ("denied" if iso.caps or iso.seccomp else "ok")
    assert obs["NoNewPrivs"] == ("1" if iso.no_new_privs else "0")
    # seccomp: filter mode, and a denied syscall (unshare) fails
    assert obs["Seccomp"] == ("2" if iso.seccomp else "0")
    assert obs["unshare_user"] == ("denied" if iso.seccomp and not profile_allows("unshare") else "ok")
    # root switch: the host tree is gone, /proc is its own, masked paths read empty
    assert obs["work"] == ("no" if iso.pivot_root else "yes")
    if iso.pivot_root:
        # its own /proc shows only its own few processes exactly when it has a pid namespace
        assert (int(obs["procs"]) < 10) == ns["pidns"], obs["procs"]
        assert obs["timer_list"] == "0"
        dev = set(obs["dev"].strip(",").split(","))
        assert {"null", "zero", "full", "random", "urandom", "tty"} <= dev
        assert dev <= {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                       "stderr", "ptmx", "pts", "shm", "mqueue"}, dev
        if iso.follow_bundle:
            assert obs["rootfs"] == "ro" and obs["proc_sys"] == "ro"
    else:
        assert int(obs["procs"]) > 10


RUNGS = ([("bare", Isolation.bare()), ("full", Isolation.full())]
         + [(f"only:{m}", Isolation.only(m)) for m in Isolation.MECHANISMS]
         + [(f"cum:{n}", Isolation.cumulative(n)) for n in range(1, len(Isolation.MECHANISMS) + 1)])


@pytest.mark.parametrize("label,iso", RUNGS, ids=[r[0] for r in RUNGS])
def test_isolation_observed_from_inside(root, image, label, iso):
    from runtime import namespaces
    missing = [k for k, on in effective(iso).items() if on and not namespaces.available()[k]]
    if missing:
        pytest.skip(f"this kernel has no {', '.join(missing)} (no /proc/self/ns entry)")
    obs, c = observe(image.bundle, iso)
    check(obs, iso, c.id)


def test_userns_root_is_the_configured_host_uid(root, image):
    """uid 0 inside is host uid 100000 (the default mapping) as the host sees it."""
    iso = Isolation.cumulative(Isolation.MECHANISMS.index("userns") + 1).replace(host_id=123456)
    with spawn(image.bundle, ["/bin/sh", "-c", "id -u; sleep 5"], iso) as c:
        assert c.stdout.readline() == b"0\n"
        with open(f"/proc/{c.pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == ["123456"] * 4


def test_veth_reaches_only_its_peer_namespace(root, image):
    """The veth's far end is in a cvbench netns, not the host's; they talk."""
    script = ('n=$(ip -4 route | cut -d/ -f1 | cut -d" " -f1); '
              'ping -c 1 -W 5 ${n%.*}.$(( ${n##*.} + 1 ))')
    host_links = set(os.listdir("/sys/class/net"))
    with spawn(image.bundle, ["/bin/sh", "-c", script], Isolation.only("veth")) as c:
        rec = c._net.record()
        assert os.path.exists(f"/run/netns/{rec['netns']}")
        assert not host_links ^ set(os.listdir("/sys/class/net"))  # nothing new on the host
        out = c.stdout.read().decode()
        assert c.wait(timeout=20) == 0, out
        assert "1 packets received" in out
    assert not os.path.exists(f"/run/netns/{rec['netns']}")
