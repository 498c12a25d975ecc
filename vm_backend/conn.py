"""Opening libvirt, and turning its failures into errors a user can act on.

libvirt prints every error to stderr from its default handler, including the
expected "Domain not found" of a transient domain that just stopped; a quiet
handler is installed once so that only cvbench decides what the user sees.
"""
from __future__ import annotations

import threading
from urllib.parse import urlparse

from .errors import VMEnvError, VMError

_quiet_installed = False
_lock = threading.Lock()


def libvirt_module():
    try:
        import libvirt
    except ImportError as e:
        raise VMEnvError("libvirt", f"libvirt-python is not importable ({e})",
                         "run 'make setup' (it installs libvirt-python into .venv)") from None
    global _quiet_installed
    with _lock:
        if not _quiet_installed:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet_installed = True
    return libvirt


def is_remote(uri: str) -> bool:
    """True for URIs that name another host (qemu+ssh://host/system)."""
    u = urlparse(uri)
    transport = u.scheme.partition("+")[2]
    return bool(u.hostname) or transport in ("ssh", "libssh", "libssh2", "tcp", "tls")


def fix_for(uri: str) -> str:
    if is_remote(uri):
        return (f"check that {urlparse(uri).hostname or uri} is reachable (for qemu+ssh: "
                "'ssh HOST true' without a password prompt) and that libvirtd runs there")
    return "start the daemons: 'virtlogd -d && libvirtd -d' (make setup does, as root)"


def open_conn(uri: str):
    """A read-write connection to ``uri``, or a VMEnvError saying how to fix it."""
    libvirt = libvirt_module()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise VMEnvError("libvirt", f"cannot connect to {uri}: {e.get_error_message()}",
                         fix_for(uri)) from None
    if conn is None:
        raise VMEnvError("libvirt", f"cannot connect to {uri}", fix_for(uri))
    return conn


def domain_names(uri: str) -> set[str]:
    """Names of every domain libvirt knows at ``uri`` (what a sweep or a leak check compares)."""
    conn = open_conn(uri)
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def is_gone(err) -> bool:
    """True when a libvirt error only says the (transient) domain no longer exists."""
    libvirt = libvirt_module()
    return err.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)


def create_error(uri: str, err) -> VMError:
    """Explain a createXML failure; virtlogd being down is the common one here."""
    msg = err.get_error_message()
    if "virtlogd" in msg:
        return VMEnvError("libvirt", f"cannot start a domain: {msg}",
                          "start the log daemon: 'virtlogd -d' (make setup does)")
    if "kvm" in msg.lower() and ("permission" in msg.lower() or "/dev/kvm" in msg):
        return VMEnvError("libvirt", f"cannot start a KVM domain: {msg}",
                          "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (make setup does), or use --accel tcg")
    if "Permission denied" in msg:
        return VMEnvError("libvirt", f"cannot start a domain: {msg}",
                          "make the kernel, initramfs and their folders readable by libvirt's qemu user")
    return VMError("libvirt", f"createXML failed on {uri}: {msg}", "see /var/log/libvirt/libvirtd.log")
