"""The VM's ``user-mode`` column: a guest whose NIC is served by passt.

Raw QEMU (``qemu``): cvbench starts passt itself, inside a cvbench netns
``cvbench-n<pid>-<slot>passt``, and QEMU joins it with ``-netdev stream``
on passt's unix socket (QEMU >= 7.2).  passt needs a routable "template"
interface, so that netns gets a veth pair with both ends inside it and a
default route over it: whatever passt opens for the guest lands in that
netns, never in the host's.  passt gets the guest's address and a gateway
from the checked range (``-a``, ``-g``), no DHCP/NDP/RA, no DNS, no port
forwards.  The guest's client (the image's static probe) dials the gateway,
which passt maps to 127.0.0.1 of that netns (its default, ``--map-gw``), where
the server (host process) listens: the same direction and probe workloads as
every other column.  passt runs tagged with the owner (CVBENCH_OWNER), so
bench.sweep kills it after a crash; its CPU over a client run counts with the
client's (QEMU's), and it is left unpinned, like slirp4netns.

libvirt (``libvirt``): ``<interface type='user'><backend type='passt'/>``,
where this libvirt offers it.  Whether it does is asked of libvirt itself (a
parse-only define of a cvbench domain, undefined at once); Debian 12's
libvirt 9.0.0 rejects it (its package carries a patch that disables passt),
and the row says so.
"""
from __future__ import annotations

import functools
import gzip
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path as FsPath

from common.errors import CvbError, EnvError
from common.paths import state_dir
from common.procs import cpu_seconds, stop_process

from .netpath import MIN_MTU, PathEnv, _env, _ip, add_netns, add_veth
from .netpath_vm import GuestClient, mac

PASST_MAX_MTU = 65520           # passt --help: "maximum 802.3 MTU minus 802.3 header length"
PASST_USER = "nobody"           # passt refuses to keep root; this is its default
SOCK_DIR_RE = re.compile(r"^cvbench-passt-(\d+)-")
DEBIAN_CHANGELOG = "/usr/share/doc/libvirt-daemon/changelog.Debian.gz"


def _sock_dir(slot: str) -> FsPath:
    return state_dir() / f"cvbench-passt-{os.getpid()}-{slot or 'host-'}dir"


class PasstPath(GuestClient):
    """A raw-QEMU guest whose NIC is passt (module docstring)."""

    passt: subprocess.Popen | None = None
    guest_mtu = 1500

    def __init__(self, env: PathEnv, backend: str):
        ns = env.netns("passt")
        gw, guest = env.addr(1), env.addr(2)
        tq, tr = env.addr(5), env.addr(6)
        lq, lr = env.link("p"), env.link("q")
        super().__init__("user-mode", str(gw), server_ns=ns, backend=backend, probe=env.probe,
                         client_tools=frozenset({"probe"}), max_mtu=PASST_MAX_MTU,
                         setup=f"{backend} guest, virtio-net on -netdev stream to passt (started by cvbench in "
                               f"netns {ns}; no DHCP/NDP/RA/DNS, no port forwards, unpinned, its CPU counted "
                               f"with the client's); the guest {guest}/30 dials the gateway {gw}, which passt "
                               f"maps to 127.0.0.1 of that netns, where the server listens; passt's template "
                               f"interface is veth {lq}<->{lr} inside that netns ({env.rng['name']})")
        self.sock_dir = _sock_dir(env.slot)
        try:
            add_netns(self, ns)
            add_veth((ns, lq, str(tq)), (ns, lr, str(tr)))
            _ip("-n", ns, "route", "add", "default", "via", str(tr), "dev", lq)
            self.start_passt(ns, lq, guest, gw)
            from vm_backend.iodev import Nic
            self.boot(backend, Nic("", mac("p"), backend="passt", socket=str(self.sock)), f"{guest}/30")
        except BaseException:
            self.close()
            raise

    def start_passt(self, ns: str, link: str, guest, gw) -> None:
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        self.sock_dir.mkdir(parents=True, mode=0o700)
        # passt drops to "nobody" before it binds its socket (and this
        # passt still reports a failed bind as bound): the folder is nobody's.
        who = pwd.getpwnam(PASST_USER)
        os.chown(self.sock_dir, who.pw_uid, who.pw_gid)
        self.sock = self.sock_dir / "passt.sock"
        self._log = tempfile.TemporaryFile()
        self.cleanups.append(self.stop_passt)
        # ip netns exec execs passt itself (-f: no fork), so the pid is passt's.
        self.passt = subprocess.Popen(
            ["ip", "netns", "exec", ns, "passt", "-f", "-q", "-e", "-4", "--runas", PASST_USER, "-i", link, "--socket", str(self.sock),
             "-a", str(guest), "-n", "30", "-g", str(gw), "-t", "none", "-u", "none", "--no-dhcp", "--no-ndp",
             "--no-dhcpv6", "--no-ra", "--no-dhcp-dns", "--no-dhcp-search"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=_env())
        end = time.monotonic() + 10
        while not self.sock.exists():
            if self.passt.poll() is not None or time.monotonic() > end:
                self._log.seek(0)
                err = [ln for ln in self._log.read().decode(errors="replace").splitlines() if "syslog" not in ln]
                raise CvbError("network", f"passt did not open its socket in netns {ns}: "
                               f"{' / '.join(err)[-300:] or 'nothing in 10 s'}",
                               "apt-get install passt (make setup does)", status=1)
            time.sleep(0.02)

    def stop_passt(self) -> None:
        p, self.passt = self.passt, None
        if p is not None:
            stop_process(p)
            self._log.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def extra_cpu_s(self) -> float:
        return cpu_seconds(self.passt.pid) if self.passt is not None else 0.0

    @property
    def mtu_fixed(self) -> bool:
        return False

    def mtu(self) -> int:
        return self.guest_mtu

    def set_mtu(self, mtu: int) -> None:
        if not MIN_MTU <= mtu <= self.max_mtu:
            raise CvbError("mtu", f"{mtu} is outside what passt can carry ({MIN_MTU}..{self.max_mtu})",
                           f"pick an MTU in {MIN_MTU}..{self.max_mtu}")
        if mtu != self.guest_mtu:
            self.set_guest_mtu(mtu, self.max_mtu)
            self.guest_mtu = mtu

    def close(self) -> None:
        try:
            self.stop_guest()
        finally:
            super().close()


def factory(env: PathEnv, backend: str) -> PasstPath:
    if backend != "qemu":
        raise EnvError("network", f"the passt column is built for raw QEMU only, not {backend}",
                       "see bench/netpath_passt.py")
    return PasstPath(env, backend)


def _debian_disabled() -> str:
    try:
        with gzip.open(DEBIAN_CHANGELOG, "rt", errors="replace") as f:
            text = f.read(200_000)
    except OSError:
        return ""
    if "Disable passt support" in text:
        return (f"; this is Debian's package, which disables passt ('patches: Disable passt support' "
                f"in {DEBIAN_CHANGELOG})")
    return ""


@functools.cache
def libvirt_why_not() -> str:
    """Why the libvirt column is not measured here, asked of libvirt itself: a
    parse-only define of a cvbench domain with a passt NIC (undefined at once;
    named and tagged like every cvbench domain, so the sweep removes it if we die
    in between)."""
    if not shutil.which("passt"):
        return "passt is not installed (make setup installs it)"
    from vm_backend.conn import libvirt_module, open_conn
    from vm_backend.domain_xml import DomainSpec, build
    from vm_backend.iodev import GuestIO, Nic
    from vm_backend.owner import vm_name

    from .backends import get
    b = get("libvirt")
    ok, why = b.available()
    if not ok:
        return why
    libvirt = libvirt_module()
    nic = Nic("", mac("l"), backend="passt", ip="169.254.201.2/30")
    xml = build(DomainSpec(name=vm_name("passtcheck"), kernel=b.img.kernel, initramfs=b.img.initramfs,
                           args=["ready"], io=GuestIO(nics=[nic])))
    conn = open_conn(b.vm_kwargs().get("uri", "qemu:///system"))
    try:
        try:
            conn.defineXML(xml).undefine()
        except libvirt.libvirtError as e:
            return (f"libvirt {_version(conn)} rejects <interface type='user'><backend type='passt'/>: "
                    f"{e.get_error_message().rstrip('.')}{_debian_disabled()}")
    finally:
        conn.close()
    return ("this libvirt accepts <backend type='passt'/>, but cvbench's libvirt passt column is not built: "
            "libvirt starts passt in the host's netns with the host's gateway, so the guest's traffic "
            "would leave cvbench's namespaces (the raw-QEMU column runs passt in a cvbench netns)")


def _version(conn) -> str:
    v = conn.getLibVersion()
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def why_not(backend: str) -> str | None:
    if backend == "libvirt":
        return libvirt_why_not()
    if not shutil.which("passt"):
        return "passt is not installed (make setup installs it)"
    from .netpath_vm import _why_not
    return _why_not(backend)


def sweep_dirs(dead) -> list[str]:
    """Socket folders of dead owners (passt itself is killed by its CVBENCH_OWNER tag)."""
    removed = []
    try:
        entries = list(os.scandir(state_dir()))
    except OSError:
        return removed
    for e in entries:
        m = SOCK_DIR_RE.match(e.name)
        if m and dead(m.group(1)):
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(f"passt socket dir {e.path}")
    return removed

