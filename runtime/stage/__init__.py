"""cvbench-stage: the C stage a plan without namespaces is started through.

Forking the Python caller copies its page tables (a large harness takes
about a millisecond) and then runs Python in the child.  For a plan whose
child only drops groups and ids, changes directory, resets signals and fds
and execs (the isolation ladder's bare rung and the like), spawn() starts
stage.c with posix_spawn instead (vfork: nothing copied), and the stage does
exactly those steps of runtime/child.py in C.  Every other plan keeps the
Python child.  `make setup` builds the binary (python -m runtime.stage); a
checkout without it uses the Python child, and Container.stage says which.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.errors import CvbError, EnvError
from common.paths import build_dir

SOURCE = Path(__file__).with_name("stage.c")
CC_FLAGS = ["-O2", "-static", "-Wall", "-Wextra", "-Werror"]
_found: tuple[str, str | None] | None = None  # (build dir, binary or None), per process


def path() -> Path:
    """Where the binary for this source and these flags lives (content-addressed)."""
    import hashlib
    h = hashlib.sha256(SOURCE.read_bytes() + " ".join(CC_FLAGS).encode()).hexdigest()[:16]
    return build_dir() / "stage" / h / "cvbench-stage"


def build() -> Path:
    out = path()
    if out.is_file():
        return out
    import shutil
    import subprocess
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise EnvError("runtime stage", "no C compiler", "apt-get install gcc (make setup does)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([cc, *CC_FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CvbError("runtime stage", f"{SOURCE.name} does not compile:\n{r.stderr}",
                       "fix the C source; static linking needs libc6-dev")
    os.replace(tmp, out)
    return out


def binary() -> str | None:
    """The built stage, or None; looked up once per process (not per spawn)."""
    global _found
    where = str(build_dir())
    if _found is None or _found[0] != where:
        p = path()
        _found = (where, str(p) if os.access(p, os.X_OK) else None)
    return _found[1]


def eligible(p) -> bool:
    """True when runtime/child.py would do nothing for this plan beyond what
    stage.c does: no namespace, cgroup, keyring, root change, capabilities,
    no_new_privs, seccomp, rlimits, oom_score_adj, hooks, fifo or kept fds."""
    iso, cfg = p.iso, p.cfg
    return not (p.ns_new or p.ns_join or p.limits is not None or p.keyring or p.chroot
                or p.caps is not None or p.seccomp or p.hooks or p.detached or p.preserve_fds
                or p.sysctl or p.uid_map or p.pre_pid or p.handshake or p.double_fork
                or iso.mountns or iso.pivot_root or iso.no_new_privs or iso.follow_bundle
                or cfg.oom_score_adj is not None)


def start(exe: str, p, status_w: int, go_r: int, stdio: tuple[int, int, int]) -> int:
    """posix_spawn the stage for plan p; returns its pid (the container's)."""
    cfg = p.cfg
    gids = ",".join(str(g) for g in cfg.additional_gids) or "-"
    umask = 0o022 if cfg.umask is None else cfg.umask
    argv = [exe, str(status_w), str(go_r), "0" if p.detached else "1", p.cwd, f"{umask:o}", gids,
            str(cfg.uid), str(cfg.gid), p.exe, *p.argv]
    # the same dup2 of 0-2 as the Python child; status and go fds stay open
    # (a dup2 onto itself clears close-on-exec)
    actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(stdio) if fd != i]
    actions += [(os.POSIX_SPAWN_DUP2, status_w, status_w), (os.POSIX_SPAWN_DUP2, go_r, go_r)]
    return os.posix_spawn(exe, argv, p.env, file_actions=actions)
