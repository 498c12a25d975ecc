"""cvbench-stage: the C stage most plans are started through.

Forking the Python caller copies its page tables (a large harness takes
about a millisecond) and then runs Python in the child (several more).  For
a plan without user or time namespaces, joined namespaces, hooks, handshakes
or a detached create (the isolation ladder's rungs below the user namespace,
and the default bundle on a v1 host: pid, mount, uts, ipc, net, cgroup
namespaces, v1 cgroups, keyring, mounts, pivot_root, sysctls, masked and
read-only paths, rlimits, capabilities, no_new_privs, seccomp), spawn()
starts stage.c with posix_spawn instead (vfork: nothing copied), and the
stage does exactly those steps of runtime/child.py in C, in the same order:
the mounts and the rest of init()'s kernel work are recorded by program.py
(rootfs.prepare() itself, with a recorder in place of the InRoot) and
replayed by program.c.  Every other plan keeps the Python child.  `make setup`
builds the binary (python -m runtime.stage); a checkout without it uses the
Python child, and Container.stage says which.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.errors import CvbError, EnvError
from common.paths import build_dir

SOURCE = Path(__file__).with_name("stage.c")
SOURCES = [SOURCE, SOURCE.with_name("program.c"), SOURCE.with_name("stage.h")]
CC_FLAGS = ["-O2", "-static", "-Wall", "-Wextra", "-Werror"]
# cvbench-seccomp (seccomp.c, seccomp_gen.c): the filter compile in a process
# of its own, dynamically linked (libseccomp2 ships no static library or header).
SECCOMP_SOURCE = SOURCE.with_name("seccomp.c")
SECCOMP_SOURCES = [SECCOMP_SOURCE, SOURCE.with_name("seccomp_gen.c"), SOURCE.with_name("seccomp_gen.h")]
SECCOMP_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]
SECCOMP_LIBS = ["-l:libseccomp.so.2"]
_found: tuple[str, str | None, str | None] | None = None  # (build dir, stage, seccomp), per process


def path() -> Path:
    """Where the stage for these sources and flags lives (content-addressed);
    cvbench-seccomp lies beside it."""
    import zlib  # not hashlib: it loads OpenSSL (~3 ms of every CLI start); a name, not a seal
    data = b"".join(s.read_bytes() for s in (*SOURCES, *SECCOMP_SOURCES))
    data += " ".join(CC_FLAGS + SECCOMP_FLAGS + SECCOMP_LIBS).encode()
    h = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
    return build_dir() / "stage" / h / "cvbench-stage"


def seccomp_path() -> Path:
    return path().with_name("cvbench-seccomp")


def build() -> Path:
    out = path()
    if out.is_file() and seccomp_path().is_file():
        return out
    import shutil
    import subprocess
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise EnvError("runtime stage", "no C compiler", "apt-get install gcc (make setup does)")
    out.parent.mkdir(parents=True, exist_ok=True)
    for dest, cmd, need in (
            (out, [*CC_FLAGS, *(str(s) for s in SOURCES if s.suffix == ".c")],
             "static linking needs libc6-dev"),
            (seccomp_path(), [*SECCOMP_FLAGS, *(str(s) for s in SECCOMP_SOURCES if s.suffix == ".c"),
                              *SECCOMP_LIBS], "it links libseccomp2")):
        tmp = dest.with_suffix(f".tmp{os.getpid()}")
        r = subprocess.run([cc, "-o", str(tmp), *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise CvbError("runtime stage", f"{dest.name} does not compile:\n{r.stderr}",
                           f"fix the C source; {need}")
        os.replace(tmp, dest)
    return out


def _lookup() -> tuple[str | None, str | None]:
    """The built stage and cvbench-seccomp (or None each); looked up once per
    process (not per spawn)."""
    global _found
    where = str(build_dir())
    if _found is None or _found[0] != where:
        p = path()  # read and hashed once: this runs in every CLI start
        sp = p.with_name("cvbench-seccomp")
        _found = (where, str(p) if os.access(p, os.X_OK) else None,
                  str(sp) if os.access(sp, os.X_OK) else None)
    return _found[1], _found[2]


def binary() -> str | None:
    return _lookup()[0]


def seccomp_binary() -> str | None:
    return _lookup()[1]


def eligible(p) -> bool:
    """True when runtime/child.py would do nothing for this plan beyond what
    stage.c does.  Not: user namespaces, a time namespace (double fork),
    joined namespaces, cgroup v2 (the parent moves the child), veth or hooks
    (handshakes), a fifo (detached create) or kept fds."""
    iso = p.iso
    return not (p.ns_join or p.hooks or p.detached or p.preserve_fds
                or p.uid_map or p.handshake or p.double_fork or p.parent_join
                or p.late_cgroupns or iso.userns or iso.timens
                or any(n in p.child_ns for n in ("userns", "timens")))


def init_program(p) -> bytes | None:
    """The init's recorded kernel work for plan p, or None when it cannot be
    recorded (a mount option rootfs.py refuses): then the Python child runs
    and reports the error as it always does."""
    from .program import build
    try:
        return build(p)
    except (OSError, ValueError):
        return None


def start(exe: str, p, prog: bytes, status_w: int, go_r: int, stdio: tuple[int, int, int]) -> int:
    """posix_spawn the stage for plan p with its init program prog; returns
    its pid (the container's)."""
    from .. import capabilities, namespaces
    iso, cfg = p.iso, p.cfg
    gids = ",".join(str(g) for g in cfg.additional_gids) or "-"
    umask = 0o022 if cfg.umask is None else cfg.umask
    caps = "-" if p.caps is None else ",".join(
        f"{p.caps[k]:x}" for k in ("bounding", "effective", "permitted", "inheritable", "ambient"))
    hostname = "=" + cfg.hostname if iso.utsns and cfg.hostname is not None else "-"
    # the program in a memfd: no size limit, nothing to block on, read once
    mfd = os.memfd_create("cvbench-stage-init", os.MFD_CLOEXEC)
    try:
        os.write(mfd, prog)  # a memfd takes it all in one write
        argv = [exe, str(status_w), str(go_r), "0" if p.detached else "1", p.cwd, f"{umask:o}", gids,
                str(cfg.uid), str(cfg.gid), f"{namespaces.flags(p.child_ns):x}",
                "\n".join(p.self_join) if p.self_join else "-", hostname,
                "1" if p.loopback else "0", "1" if iso.no_new_privs else "0",
                caps, str(capabilities.LAST_CAP), str(p.bpf_fd if p.seccomp else -1), str(mfd),
                p.exe, *p.argv]
        # the same dup2 of 0-2 as the Python child; the status, go, filter and
        # program fds stay open (a dup2 onto itself clears close-on-exec)
        actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(stdio) if fd != i]
        actions += [(os.POSIX_SPAWN_DUP2, fd, fd)
                    for fd in (status_w, go_r, mfd) + ((p.bpf_fd,) if p.seccomp else ())]
        return os.posix_spawn(exe, argv, p.env, file_actions=actions)
    finally:
        os.close(mfd)
