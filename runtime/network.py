"""Container networking: none, loopback only, or a veth pair (pyroute2).

For a veth, the far end lives in a network namespace cvbench creates for the
purpose (``/run/netns/cvbench-rt-*``, visible to ``ip netns``), never in the
host's: the pair is created inside that namespace with its peer placed
straight into the container's, so no interface ever appears on the host.
Both ends get a /30 from 10.231.0.0/16, so traffic can only flow between the
two namespaces.  pyroute2 is imported here only, when a veth is asked for.
"""
from __future__ import annotations

import os
import secrets
import threading

from common.naming import PREFIX

from . import syscalls as sc

NETNS_DIR = "/run/netns"
NETNS_PREFIX = f"{PREFIX}-rt-"


def _in_thread(fn, *args):
    """Run fn in a fresh thread: setns/unshare of the net namespace then only
    moves that thread, never the caller."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e
    t = threading.Thread(target=run, name="cvbench-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, sc.CLONE_NEWNET)
    finally:
        os.close(fd)


def create_netns(name: str) -> str:
    """A new, named network namespace (what `ip netns add` does)."""
    path = os.path.join(NETNS_DIR, name)
    os.makedirs(NETNS_DIR, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def make():
        sc.unshare(sc.CLONE_NEWNET)
        sc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, sc.MS_BIND)
    try:
        _in_thread(make)
    except BaseException:
        os.unlink(path)
        raise
    return path


def delete_netns(name: str) -> bool:
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        return False
    try:
        sc.umount2(path, sc.MNT_DETACH)
    except OSError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


class Veth:
    def __init__(self, netns: str, host_if: str, ctr_if: str, host_addr: str, ctr_addr: str):
        self.netns, self.host_if, self.ctr_if = netns, host_if, ctr_if
        self.host_addr, self.ctr_addr = host_addr, ctr_addr

    @classmethod
    def new(cls, cid: str) -> Veth:
        """Names and addresses only, so the state file can claim them before
        anything exists (a concurrent sweep must never take them for litter)."""
        tag = secrets.token_hex(3)
        n = int(tag, 16)
        base, last = f"10.231.{(n >> 6) & 0xFF}", (n & 0x3F) * 4
        # 14 bytes each, under IFNAMSIZ
        return cls(NETNS_PREFIX + tag, f"{PREFIX}{tag}p", f"{PREFIX}{tag}c",
                   f"{base}.{last + 1}", f"{base}.{last + 2}")

    def create(self, pid: int) -> None:
        """Wire the pair between a new cvbench netns and the netns of `pid`."""
        try:
            from pyroute2 import IPRoute
        except ImportError as e:
            from common.errors import EnvError
            raise EnvError("veth", f"pyroute2 unavailable ({e})", "pip install pyroute2 (make setup does)") from None
        path = create_netns(self.netns)
        try:
            def far_end():
                _enter(path)
                with IPRoute() as ipr:
                    ipr.link("add", ifname=self.host_if, kind="veth",
                             peer={"ifname": self.ctr_if, "net_ns_pid": pid})
                    idx = ipr.link_lookup(ifname=self.host_if)[0]
                    ipr.addr("add", index=idx, address=self.host_addr, prefixlen=30)
                    ipr.link("set", index=idx, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

            def near_end():
                _enter(f"/proc/{pid}/ns/net")
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=self.ctr_if)[0]
                    ipr.addr("add", index=idx, address=self.ctr_addr, prefixlen=30)
                    ipr.link("set", index=idx, state="up")
            _in_thread(far_end)
            _in_thread(near_end)
        except BaseException:
            delete_netns(self.netns)
            raise

    def record(self) -> dict:
        return {"netns": self.netns, "host_if": self.host_if, "ctr_if": self.ctr_if,
                "host_addr": self.host_addr, "ctr_addr": self.ctr_addr}

    def remove(self) -> None:
        """Deleting the far namespace deletes the pair with it."""
        delete_netns(self.netns)


def remove_record(rec: dict) -> list[str]:
    return [f"netns {rec['netns']}"] if delete_netns(rec["netns"]) else []


def sweep_netns(claimed_netns: set[str]) -> list[str]:
    """Named cvbench netns that no live state file claims."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return [f"netns {n}" for n in names
            if n.startswith(NETNS_PREFIX) and n not in claimed_netns and delete_netns(n)]
