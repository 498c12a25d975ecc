"""Remove what killed cvbench runs left: domains, QEMU processes, console sockets.

Only leftovers whose owner is dead are touched: other cvbench processes (and
other engineers' tests) run concurrently on the same host and their guests are
named the same way.  The owner is read from the domain's <metadata> (pid, start
time, host), else from the pid in the name (``cvbench-<kind>-<pid>-<hex>``).
"""
from __future__ import annotations

import os
import signal
import time

from common.naming import PREFIX
from common.procs import cmdlines

from . import owner
from .conn import is_gone, is_remote, libvirt_module, open_conn
from .domain_xml import owner_from_xml


def _owner_dead(name: str, xml: str = "", remote: bool = False) -> bool:
    rec = owner_from_xml(xml) if xml else None
    if rec:
        pid, start, host = rec
        if host and host != owner.hostname():
            return False            # another host's run: not ours to judge
        return not owner.alive(pid, start)
    if remote:
        return False
    pid = owner.pid_from_name(name)
    return pid is not None and not owner.alive(pid)


def qemu_processes() -> list[tuple[int, str]]:
    """(pid, guest name) of every local QEMU whose -name is a cvbench name."""
    found = []
    for d, argv in cmdlines():
        if b"qemu-system" not in argv[0]:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name":
                val = argv[i + 1].decode(errors="replace")
                name = val.split("guest=", 1)[-1].split(",", 1)[0]
                if name.startswith(PREFIX + "-"):
                    found.append((int(d), name))
    return found


def _sweep_domains(uri: str) -> tuple[list[str], set[str]]:
    """Remove dead owners' domains; returns what was removed and the names of
    the domains left (so the process sweep needs no second listing)."""
    libvirt = libvirt_module()
    conn = open_conn(uri)
    removed, left = [], set()
    try:
        for dom in conn.listAllDomains():
            try:
                name = dom.name()
                if not name.startswith(PREFIX + "-") or not _owner_dead(name, dom.XMLDesc(0), is_remote(uri)):
                    left.add(name)
                    continue
                persistent = dom.isPersistent()
                removed.append(f"domain {name}")
                if dom.isActive():
                    dom.destroy()       # a transient domain is gone after this
                if persistent:
                    dom.undefine()
            except libvirt.libvirtError as e:
                if not is_gone(e):
                    raise
    finally:
        conn.close()
    return removed, left


def _process_owner_dead(pid: int, name: str) -> bool:
    """A child cannot start before its owner: an "alive" owner pid that is
    younger than the QEMU process is a reused pid, so the owner is dead."""
    opid = owner.pid_from_name(name)
    if opid is None:
        return False
    ost, st = owner.start_time(opid), owner.start_time(pid)
    return ost is None or (st is not None and ost > st)


def _sweep_processes(libvirt_names: set[str]) -> list[str]:
    removed = []
    for pid, name in qemu_processes():
        if name in libvirt_names or not _process_owner_dead(pid, name):
            continue
        st = owner.start_time(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        for _ in range(200):
            if owner.start_time(pid) != st:
                break
            time.sleep(0.01)
        removed.append(f"qemu process {pid} ({name})")
    return removed


def _sweep_sockets() -> list[str]:
    from .console import socket_dir
    removed = []
    for p in socket_dir().glob(f"{PREFIX}-*"):
        if _owner_dead(p.name.rsplit(".", 1)[0]):
            p.unlink(missing_ok=True)
            removed.append(f"file {p}")
    return removed


def sweep(uri: str | None = "qemu:///system") -> list[str]:
    """Remove leftovers of dead owners; returns what was removed."""
    removed, left = _sweep_domains(uri) if uri else ([], set())
    # libvirt's own QEMU processes are judged through their domains above;
    # a remote URI's domains run elsewhere, so none of the local ones are its.
    live = left if uri and not is_remote(uri) else set()
    removed += _sweep_processes(live)
    removed += _sweep_sockets()
    from . import cgroup
    removed += cgroup.sweep()      # after the processes: a cgroup with tasks stays
    return removed
