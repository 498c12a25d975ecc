"""The host side of the boundary: the distinct host syscalls that everything a
backend runs (runtime, its init, the workload; or QEMU) enters during one fixed
workload, and whether the host kernel functions behind them can be counted.

For a container the workload's own syscalls are host syscalls (one kernel), so
they count; under a VM only QEMU's reach the host (QEMU started through a
wrapper that execs it under the tracer: named by CVBENCH_QEMU for raw QEMU, by
the domain XML's <emulator> for libvirt).  One definition for every
row: each syscall entered, by name, from the tracer's full event log (so
``exit_group``, which never returns, counts too).  The tracer is ``strace -f``,
except where strace cannot follow (see TRACEPOINT_TOOL); a test checks that the
two tools give the same set on the same command.  Run once, outside any timing
(tracing slows everything it traces).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The fixed workload: every probe op a few hundred times.
WORKLOAD = ["ops", "--iters", "300", "getppid", "read_zero", "open_close", "mmap_touch", "fork_wait",
            "pipe_pingpong"]

# Raw QEMU backends start the binary named by CVBENCH_QEMU (vm_backend/qemu_vm.py),
# so a wrapper can put QEMU under the tracer; libvirt's QEMU is libvirtd's child.
RAW_QEMU = ("qemu", "qemu-microvm")
# gVisor's ptrace platform ptraces its own stub processes, and a process has one
# tracer at most, so strace -f cannot follow them.  perf trace reads the
# raw_syscalls tracepoints instead (no ptrace involved).
TRACEPOINT_TOOL = ("runsc",)
# builtin is a library call inside the harness's worker, not a process of its
# own; the same runtime on the same bundle as a process is the builtin-cli backend.
PROCESS_FORM = {"builtin": "builtin-cli"}

_STRACE_LINE = re.compile(r"^(?:\d+\s+)?(?:<\.\.\. ([a-z0-9_]+) resumed>|([a-z0-9_]+)\()")
_PERF_LINE = re.compile(r"\): .*?/\d+\s+(?:\.\.\.\s+\[continued\]:\s+)?([a-z0-9_]+)\(")


def strace_names(text: str) -> list[str]:
    """Syscall names from ``strace -f -o FILE`` (one line per call, pid first)."""
    names = set()
    for line in text.splitlines():
        m = _STRACE_LINE.match(line)
        if m:
            names.add(m.group(1) or m.group(2))
    return sorted(names)


def perf_names(text: str) -> list[str]:
    """Syscall names from ``perf trace -o FILE`` (``time (dur): comm/pid name(...``)."""
    return sorted({m.group(1) for m in map(_PERF_LINE.search, text.splitlines()) if m})


def tracer(tool: str, out: Path) -> tuple[list[str] | None, str]:
    """(argv prefix that traces a command and its children into ``out``, or None; why not)."""
    if tool == "perf":
        # perf mounts tracefs at /sys/kernel/tracing when it isn't, and leaves it:
        # in a private mount namespace that mount ends with perf (the traced
        # command starts there too, on a copy of the host's mounts).  A 16 MiB
        # buffer: with perf's default, runsc's run here lost events.
        perf, unshare = shutil.which("perf"), shutil.which("unshare")
        if not perf or not unshare:
            return None, "perf or unshare not installed (apt-get install linux-perf util-linux; make setup does)"
        return [unshare, "--mount", "--propagation", "private", perf, "trace", "--mmap-pages", "16M", "-o", str(out)], ""
    strace = shutil.which("strace")
    return ([strace, "-f", "-qq", "-o", str(out)], "") if strace else \
        (None, "strace not installed (apt-get install strace; make setup does)")


def read_names(tool: str, out: Path) -> tuple[list[str], str]:
    """(names, why they can't be trusted or ""): perf drops events when its
    buffer overflows, and says so with a LOST line."""
    text = out.read_text(errors="replace") if out.exists() else ""
    if tool == "perf":
        lost = re.search(r"LOST (\d+) events", text)
        if lost:
            return [], f"perf trace lost {lost.group(1)} events (a partial set would undercount)"
        return perf_names(text), ""
    return strace_names(text), ""


def _guest_run(backend, env: dict, timeout: float) -> tuple[int, str, int]:
    """One guest boot running WORKLOAD in a child Python (vm_backend reads the
    emulator variables at import or spec time); (rc, last line of its output,
    its pid: the owner pid in the guest's name)."""
    code = ("import sys\nfrom bench import backends\nfrom bench.strength_host import WORKLOAD\n"
            f"t = backends.get({backend.name!r}).run(WORKLOAD, timeout={timeout!r})\n"
            "sys.exit(0 if t.rc == 0 else 1)\n")
    try:
        r = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, **env}, cwd=ROOT)
    except OSError as e:
        return -1, str(e), 0
    try:
        out, _ = r.communicate(timeout=timeout * 2)
    except subprocess.TimeoutExpired:
        # SIGINT: its VM backend destroys the guest on the way out (KeyboardInterrupt
        # runs its finally blocks); SIGKILL only if that hangs, then the guest's owner
        # is dead and a sweep removes it
        r.send_signal(signal.SIGINT)
        try:
            r.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            r.kill()
            r.communicate()
        return -1, f"the guest under strace did not finish in {timeout * 2:.0f} s", r.pid
    return r.returncode, (out.strip().splitlines()[-1:] or ["no output"])[0][:200], r.pid


def _measured_guest(rc: int, tail: str, names: list[str], command: str) -> dict:
    if rc != 0 or not names:
        return {"measured": False, "why": f"the guest under strace ended with rc={rc}: {tail}"}
    return {"measured": True, "distinct": len(names), "names": names, "tool": "strace -f",
            "command": f"{command} (one boot of the guest running probe {' '.join(WORKLOAD)})"}


def _qemu_syscalls(backend, timeout: float) -> dict:
    """Raw QEMU: CVBENCH_QEMU names a wrapper that execs QEMU under strace -f."""
    qemu = shutil.which(os.environ.get("CVBENCH_QEMU", "qemu-system-x86_64"))
    if not qemu:
        return {"measured": False, "why": "qemu-system-x86_64 not found"}
    with tempfile.TemporaryDirectory(prefix="cvbench-strace-") as tmp:
        out, wrapper = Path(tmp, "trace.txt"), Path(tmp, "qemu")
        prefix, why = tracer("strace", out)
        if prefix is None:
            return {"measured": False, "why": why}
        wrapper.write_text(f'#!/bin/sh\nexec {" ".join(prefix)} -- {qemu} "$@"\n')
        wrapper.chmod(0o755)
        rc, tail, _ = _guest_run(backend, {"CVBENCH_QEMU": str(wrapper)}, timeout)
        names, _ = read_names("strace", out)
    return _measured_guest(rc, tail, names, f"strace -f -- {qemu}")


# libvirtd starts the domain's QEMU (as its qemu user, with a clean environment),
# so the wrapper is named in the domain XML (<emulator>, CVBENCH_LIBVIRT_EMULATOR).
# Its path is fixed: libvirt probes and caches the capabilities of every emulator
# path it meets.  It traces only cvbench's guests, into a directory the qemu user
# can create files in but not list (1733), one file per domain, named after it.
# strace -D: QEMU stays the process libvirt started and signals (under a tracer in
# between, which blocks fatal signals, each teardown waited ~30 s for a SIGKILL).
LIBVIRT_WRAPPER = """#!/bin/sh
# cvbench strength (bench/strength_host.py): a cvbench guest's QEMU under strace -f
name=""; prev=""
for a in "$@"; do
  [ "$prev" = "-name" ] && {{ name=${{a#guest=}}; name=${{name%%,*}}; }}
  prev=$a
done
case "$name" in
  cvbench-*[!A-Za-z0-9-]*) ;;
  cvbench-*) exec {strace} -D -f -qq -o "{traces}/$name.trace" -- {qemu} "$@" ;;
esac
exec {qemu} "$@"
"""


def _libvirt_wrapper(strace: str, qemu: str) -> tuple[Path, Path]:
    """(wrapper, trace dir), rewritten only when its content changes (a new
    mtime would make libvirt probe it again)."""
    from common.paths import state_dir
    base = state_dir() / "strength-libvirt"
    traces = base / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    traces.chmod(0o1733)
    wrapper = base / "qemu"
    text = LIBVIRT_WRAPPER.format(strace=strace, qemu=qemu, traces=traces)
    if not wrapper.exists() or wrapper.read_text() != text:
        tmp = wrapper.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, wrapper)
    for f in traces.glob("cvbench-*.trace"):   # a killed run's files: only dead owners
        pid = f.name.split("-")[2] if f.name.count("-") >= 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            f.unlink(missing_ok=True)
    return wrapper, traces


def _libvirt_syscalls(backend, timeout: float) -> dict:
    strace, qemu = shutil.which("strace"), shutil.which("qemu-system-x86_64")
    if not strace or not qemu:
        return {"measured": False, "why": "strace or qemu-system-x86_64 not installed (make setup installs them)"}
    wrapper, traces = _libvirt_wrapper(strace, qemu)
    rc, tail, pid = _guest_run(backend, {"CVBENCH_LIBVIRT_EMULATOR": str(wrapper)}, timeout)
    mine = list(traces.glob(f"cvbench-*-{pid}-*.trace"))   # the guest the child named (vm_backend/owner.py)
    names = sorted({n for f in mine for n in read_names("strace", f)[0]})
    for f in mine:
        f.unlink(missing_ok=True)
    if len(mine) > 1:
        return {"measured": False, "why": f"{len(mine)} guests traced for one boot: expected one"}
    return _measured_guest(rc, tail, names, f"strace -f -- {qemu}, as the domain's <emulator> wrapper")


def _traced(cmd, tool: str, timeout: float) -> dict:
    """Run one CrossCommand under ``tool``; the distinct syscall names entered."""
    argv = [a.replace("{id}", cmd.ids[0]) for a in cmd.argv] if cmd.ids else list(cmd.argv)
    try:
        with tempfile.TemporaryDirectory(prefix="cvbench-strace-") as tmp:
            out = Path(tmp, "trace.txt")
            prefix, why = tracer(tool, out)
            if prefix is None:
                return {"measured": False, "why": why}
            try:
                r = subprocess.run([*cmd.wrapper, *prefix, "--", *argv], capture_output=True, text=True,
                                   timeout=timeout, **cmd.kw)
            except subprocess.TimeoutExpired:
                return {"measured": False, "why": f"{tool} of the workload did not finish in {timeout:.0f} s"}
            names, lost = read_names(tool, out)
    finally:
        if cmd.cleanup:
            cmd.cleanup()
    if lost:
        return {"measured": False, "why": lost, "lost": True}
    if r.returncode != 0 or "CVB DONE rc=0" not in r.stdout or not names:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"measured": False, "why": f"the workload under {tool} ended with rc={r.returncode}: {tail[0][:200]}"}
    label = "perf trace" if tool == "perf" else "strace -f"
    return {"measured": True, "distinct": len(names), "names": names, "tool": label,
            "command": f"{label} -- " + " ".join(argv[:3]) + " ... probe " + " ".join(WORKLOAD)}


def host_syscalls(backend, timeout: float, tool: str | None = None, rung: str = "") -> dict:
    """{"measured": True, "distinct": N, "names": [...], "tool": ..., "command": ...}
    or {"measured": False, "why": ...}: never a silent gap.  ``tool`` overrides
    the choice of tracer (the tools' agreement test); ``rung`` is a builtin
    ladder rung, run by the runtime CLI's ``--isolation`` (the names are shared)."""
    if backend.name in RAW_QEMU:
        return _qemu_syscalls(backend, timeout)
    if backend.name == "libvirt":
        return _libvirt_syscalls(backend, timeout)
    from . import backends
    twin = PROCESS_FORM.get(backend.name)
    target = backends.get(twin) if twin else backend
    tool = tool or ("perf" if backend.name in TRACEPOINT_TOOL else "strace")
    if rung and not twin:
        return {"measured": False, "why": f"{backend.name} has no command that takes a ladder rung"}
    for attempt in (1, 2):   # a run whose tracer lost events is measured again, once
        try:
            cmd = target.command_for(WORKLOAD, 1)
        except NotImplementedError:
            return {"measured": False, "why": f"{target.name} exposes no single command (command_for) to trace"}
        if rung:
            at = cmd.argv.index("run") + 1
            cmd.argv[at:at] = ["--isolation", rung]
        res = _traced(cmd, tool, timeout)
        if not res.pop("lost", False):
            break
        res["why"] += f" (attempt {attempt} of 2)"
    if twin and res["measured"]:
        res["via"] = f"{twin}{' --isolation ' + rung if rung else ''}"
        res["via_why"] = (f"the same runtime and bundle as a process (Python interpreter start included); "
                          f"{backend.name} itself is a library call inside the harness")
    if backend.name in TRACEPOINT_TOOL and res["measured"]:
        res["why_tool"] = ("its ptrace platform ptraces its own stubs, so strace -f cannot follow them; perf "
                           "runs in a private mount namespace (its tracefs mount must not outlive it), so the "
                           "traced runsc starts on a copy of the host's mounts")
    return res


# ---- host kernel functions: can the function tracer count them here? ----------

TRACEFS = "/sys/kernel/tracing"
INSTANCE_PREFIX = "cvbench-strength-"


def _errname(e: OSError) -> str:
    import errno
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def _sweep_instances(root: Path) -> None:
    """Remove tracefs instances a dead cvbench process left (only dead owners)."""
    for inst in (root / "instances").glob(INSTANCE_PREFIX + "*"):
        pid = inst.name[len(INSTANCE_PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                inst.rmdir()
            except OSError:
                pass


def tracefs_checks() -> dict:
    """Run inside a private mount namespace (see kernel_functions): mount
    tracefs if it isn't, and try what counting functions per process needs, in
    a tracefs instance of our own (the global tracer is never touched)."""
    root = Path(TRACEFS)
    checks: dict[str, str] = {}
    if not (root / "available_tracers").exists():
        try:
            subprocess.run(["mount", "-t", "tracefs", "cvbench-tracefs", TRACEFS], check=True,
                           capture_output=True, text=True)
            checks["tracefs"] = "mounted by cvbench in a private mount namespace"
        except (OSError, subprocess.CalledProcessError) as e:
            return {"tracefs": f"mount failed: {getattr(e, 'stderr', '') or e}".strip()}
    else:
        checks["tracefs"] = "already mounted"
    tracers = (root / "available_tracers").read_text().split()
    checks["available_tracers"] = " ".join(tracers)
    try:
        (root / "available_filter_functions").open().close()
        checks["available_filter_functions"] = "readable"
    except OSError as e:
        checks["available_filter_functions"] = _errname(e)
    if "function" not in tracers:
        return checks
    _sweep_instances(root)
    inst = root / "instances" / f"{INSTANCE_PREFIX}{os.getpid()}"
    try:
        inst.mkdir()
    except OSError as e:
        checks["instance"] = _errname(e)
        return checks
    try:
        for name, path, value in (("current_tracer=function", "current_tracer", "function"),
                                  ("set_ftrace_pid", "set_ftrace_pid", str(os.getpid()))):
            try:
                (inst / path).write_text(value)
                checks[name] = "ok"
            except OSError as e:
                checks[name] = _errname(e)
    finally:
        try:
            (inst / "current_tracer").write_text("nop")
        except OSError:
            pass
        inst.rmdir()
    return checks


def kernel_functions() -> dict:
    """{"measured": False, "why": ..., "checks": {...}}: whether the host kernel
    functions reached could be counted with the function tracer (ftrace with
    set_ftrace_pid, as nabla-containers did), detected here, not assumed."""
    unshare = shutil.which("unshare")
    if "tracefs" not in Path("/proc/filesystems").read_text():
        return {"measured": False, "why": "the kernel has no tracefs", "checks": {}}
    if not unshare:
        return {"measured": False, "why": "unshare (util-linux) not found", "checks": {}}
    code = "import json\nfrom bench.strength_host import tracefs_checks\nprint(json.dumps(tracefs_checks()))\n"
    try:
        r = subprocess.run([unshare, "--mount", "--propagation", "private", sys.executable, "-c", code],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        checks = json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return {"measured": False, "why": "the tracefs check did not finish", "checks": {}}
    bad = {k: v for k, v in checks.items()
           if k in ("current_tracer=function", "set_ftrace_pid", "instance") and v != "ok"}
    if "function" not in checks.get("available_tracers", "function").split():
        why = "the kernel's tracefs offers no function tracer"
    elif checks.get("tracefs", "").startswith("mount failed"):
        why = f"tracefs: {checks['tracefs']}"
    elif bad:
        why = ("the function tracer is listed but refused: " + ", ".join(f"{k}: {v}" for k, v in bad.items())
               + f" (available_filter_functions: {checks.get('available_filter_functions', '?')})")
    else:
        why = ("the function tracer is usable here, but cvbench does not count functions yet (it could not "
               "be exercised on the development machine, which refuses the tracer)")
    return {"measured": False, "why": why, "checks": checks}
