"""The host side of the boundary: the distinct host syscalls that everything a
backend runs (runtime, its init, the workload; or QEMU) makes during one fixed
workload, counted with ``strace -f -c``.

For a container the workload's own syscalls are host syscalls (one kernel), so
they count; under a VM only QEMU's reach the host (raw QEMU rows: QEMU started
through a wrapper that execs it under strace).  Run once, outside any
timing (strace slows everything it traces).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The fixed workload: every probe op a few hundred times.
WORKLOAD = ["ops", "--iters", "300", "getppid", "read_zero", "open_close", "mmap_touch", "fork_wait",
            "pipe_pingpong"]


def parse_summary(text: str) -> list[str]:
    """Syscall names from an ``strace -c`` table (the total row left out)."""
    names = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][:1].isdigit() and parts[-1] != "total":
            names.append(parts[-1])
    return sorted(set(names))


# Raw QEMU backends start the binary named by CVBENCH_QEMU (vm_backend/qemu_vm.py),
# so a wrapper can put QEMU under strace; libvirt's QEMU is libvirtd's child.
RAW_QEMU = ("qemu", "qemu-microvm")


def _qemu_syscalls(backend, strace: str, timeout: float) -> dict:
    """One guest boot running WORKLOAD, its QEMU under strace -f -c (in a child
    Python, since vm_backend reads CVBENCH_QEMU at import)."""
    qemu = shutil.which(os.environ.get("CVBENCH_QEMU", "qemu-system-x86_64"))
    if not qemu:
        return {"measured": False, "why": "qemu-system-x86_64 not found"}
    with tempfile.TemporaryDirectory(prefix="cvbench-strace-") as tmp:
        out, wrapper = Path(tmp, "summary.txt"), Path(tmp, "qemu")
        wrapper.write_text(f'#!/bin/sh\nexec {strace} -f -qq -c -o {out} -- {qemu} "$@"\n')
        wrapper.chmod(0o755)
        code = ("import sys\nfrom bench import backends\nfrom bench.strength_host import WORKLOAD\n"
                f"t = backends.get({backend.name!r}).run(WORKLOAD, timeout={timeout!r})\n"
                "sys.exit(0 if t.rc == 0 else 1)\n")
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=timeout * 2, env={**os.environ, "CVBENCH_QEMU": str(wrapper)},
                               cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:
            return {"measured": False, "why": f"the guest under strace did not finish in {timeout * 2:.0f} s"}
        names = parse_summary(out.read_text()) if out.exists() else []
    if r.returncode != 0 or not names:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"measured": False, "why": f"the guest under strace ended with rc={r.returncode}: {tail[0][:200]}"}
    return {"measured": True, "distinct": len(names), "names": names,
            "command": f"strace -f -c -- {qemu} (one boot of the guest running probe {' '.join(WORKLOAD)})"}


def host_syscalls(backend, timeout: float) -> dict:
    """{"measured": True, "distinct": N, "names": [...], "command": ...} or
    {"measured": False, "why": ...}: never a silent gap."""
    strace = shutil.which("strace")
    if not strace:
        return {"measured": False, "why": "strace not installed (apt-get install strace; make setup does)"}
    if backend.name in RAW_QEMU:
        return _qemu_syscalls(backend, strace, timeout)
    if backend.name == "libvirt":
        return {"measured": False, "why": "libvirt's QEMU is started by libvirtd, outside cvbench's process "
                                          "tree; the raw qemu row counts the same QEMU binary"}
    try:
        cmd = backend.command_for(WORKLOAD, 1)
    except NotImplementedError:
        return {"measured": False, "why": f"{backend.name} exposes no single command (command_for) to run "
                                          "under strace yet: the cvbench-runtime backends lack one"}
    argv = [a.replace("{id}", cmd.ids[0]) for a in cmd.argv] if cmd.ids else list(cmd.argv)
    try:
        with tempfile.TemporaryDirectory(prefix="cvbench-strace-") as tmp:
            out = Path(tmp, "summary.txt")
            full = [*cmd.wrapper, strace, "-f", "-qq", "-c", "-o", str(out), "--", *argv]
            try:
                r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, **cmd.kw)
            except subprocess.TimeoutExpired:
                return {"measured": False, "why": f"strace -f of the workload did not finish in {timeout:.0f} s"}
            names = parse_summary(out.read_text()) if out.exists() else []
    finally:
        if cmd.cleanup:
            cmd.cleanup()
    if r.returncode != 0 or "CVB DONE rc=0" not in r.stdout or not names:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        why = f"the workload under strace -f ended with rc={r.returncode}: {tail[0][:200]}"
        if backend.name == "runsc":
            why += " (gVisor's ptrace platform traces its own stub processes, so strace -f cannot follow them)"
        return {"measured": False, "why": why}
    return {"measured": True, "distinct": len(names), "names": names,
            "command": "strace -f -c -- " + " ".join(argv[:3]) + " ... probe " + " ".join(WORKLOAD)}
