"""OCI hooks (runtime-spec config.md, "POSIX-platform Hooks"), with runc's
failure semantics.

Each hook gets the container's state JSON on stdin.  Where they run:

    prestart, createRuntime   the runtime's namespaces, after the container's exist
    createContainer           the container's namespaces, before pivot_root
    startContainer            inside the container, just before the user process
    poststart                 the runtime's namespaces, after the process started
    poststop                  the runtime's namespaces, after the container is gone

A failing (non-zero, timed out, not executable) hook stops the start and the
container is destroyed; a failing poststop hook is only a warning, because
everything it could guard is already gone (runc does the same).  subprocess
is imported by the runtime before the fork, so the child can run hooks after
pivot_root, when no further import would work.
"""
from __future__ import annotations

import json

from common.errors import EXIT_FAILED, CvbError


def state(cid: str, status: str, pid: int, bundle: str, annotations: dict) -> bytes:
    return json.dumps({"ociVersion": "1.0.2", "id": cid, "status": status, "pid": pid,
                       "bundle": bundle, "annotations": annotations or {}}).encode()


def run(cfg, kinds: tuple[str, ...], cid: str, status: str, pid: int) -> None:
    """Run every hook of these kinds in order; raise on the first failure.
    subprocess is imported here, not by `import runtime` (a CLI start pays
    for it only with hooks); the child's hooks need it loaded before the
    fork, which container.spawn does (preload)."""
    import subprocess
    for kind in kinds:
        for i, h in enumerate(cfg.hooks.get(kind, ())):
            where = f"hooks.{kind}[{i}] ({h['path']})"
            env = dict(e.split("=", 1) for e in h.get("env") or () if "=" in e)
            try:
                r = subprocess.run(h.get("args") or [h["path"]], executable=h["path"], env=env,
                                   input=state(cid, status, pid, cfg.bundle, cfg.annotations),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   timeout=h.get("timeout"), close_fds=True)
            except subprocess.TimeoutExpired:
                raise CvbError(where, f"timed out after {h['timeout']} s", "fix the hook",
                               status=EXIT_FAILED) from None
            except OSError as e:
                raise CvbError(where, f"cannot run: {e.strerror}", "fix the hook's path",
                               status=EXIT_FAILED) from None
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise CvbError(where, f"exited with status {r.returncode} {err[0]}".strip(),
                               "fix the hook", status=EXIT_FAILED)


def poststop(cfg, cid: str) -> list[str]:
    """poststop hooks; failures become warnings (returned)."""
    out = []
    for i, h in enumerate(cfg.hooks.get("poststop", ())):
        try:
            run(_One(cfg, h), ("poststop",), cid, "stopped", 0)
        except CvbError as e:
            out.append(f"hooks.poststop[{i}]: {e.why}")
    return out


class _One:
    """cfg with one poststop hook, so run() can report and continue per hook."""

    def __init__(self, cfg, hook):
        self.hooks = {"poststop": [hook]}
        self.bundle, self.annotations = cfg.bundle, cfg.annotations
