"""Where libvirt's extra time goes, read from libvirtd's own debug log.

``python -m vm_backend trace-libvirt`` turns libvirtd's debug log on at run
time through virt-admin (no restart, nothing written to its config), boots one
guest, puts the daemon's previous log filters and outputs back, and splits the
guest's life into the phases libvirtd logged with millisecond timestamps:
starting QEMU, its cgroups, waiting for QMP, reading the guest CPU's features
(one ``qom-get`` per feature), the remaining QMP calls, ``cont``; and after the
guest powers off, the SHUTDOWN event, the kill and the moment libvirtd has
finished with the QEMU process.  It also times how long this host's PID 1
leaves an orphan's zombie unreaped: libvirt's QEMU is a daemon whose parent is
PID 1, and libvirt waits for the pid to vanish before the domain is gone.

A diagnostic, not part of a benchmark: debug logging slows libvirtd a little
for the few seconds the guest runs.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from datetime import datetime

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})[+-]\d{4}: (\d+): \w+ : (\S+?):\d+ : (.*)$")
FILTERS = ("1:qemu.qemu_process 1:qemu.qemu_monitor 1:qemu.qemu_domain 1:qemu.qemu_driver "
           "1:qemu.qemu_cgroup 1:util.command 4:*")


def _virt_admin(*args: str) -> str:
    return subprocess.run(["virt-admin", *args], capture_output=True, text=True, check=True).stdout


def _current(kind: str) -> str:
    out = _virt_admin(f"daemon-log-{kind}")
    return out.split(":", 1)[1].strip() if ":" in out else ""


def parse(text: str, name: str) -> dict:
    """Phase durations (seconds) of guest ``name`` from a libvirtd debug log."""
    lines = []
    for ln in text.splitlines():
        m = _LINE.match(ln)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            lines.append((t, m.group(2), m.group(3), m.group(4)))
    start = next((x for x in lines if x[2] == "qemuProcessStart" and f"name={name} " in x[3] + " "), None)
    if start is None:
        raise ValueError(f"no qemuProcessStart for {name} in the log")
    vm = re.search(r"vm=(0x[0-9a-f]+)", start[3]).group(1)
    tid = start[1]
    job = [x for x in lines if x[1] == tid and x[0] >= start[0]]

    def first(rows, pred, after=0.0):
        return next((x[0] for x in rows if x[0] >= after and pred(x)), None)
    t0 = start[0]
    t_exec = first(job, lambda x: "running with pid=" in x[3])
    t_cg = first(job, lambda x: "Setting up domain cgroup" in x[3])
    t_cg_end = first(job, lambda x: "Setting up domain perf" in x[3])
    t_qmp = first(job, lambda x: '"execute":"qmp_capabilities"' in x[3])
    t_qmp_ok = first(job, lambda x: "QEMU_MONITOR_SEND_MSG" in x[3] and "qmp_capabilities" not in x[3])
    t_cpu = first(job, lambda x: "Verifying and updating provided guest CPU" in x[3])
    t_cpu_end = first(job, lambda x: "Detecting IOThread PIDs" in x[3])
    qom = sum(1 for x in job if t_cpu and t_cpu_end and t_cpu <= x[0] <= t_cpu_end
              and "QEMU_MONITOR_SEND_MSG" in x[3] and '"qom-' in x[3])
    t_cont = first(job, lambda x: "QEMU_MONITOR_SEND_MSG" in x[3] and '"execute":"cont"' in x[3])
    mine = [x for x in lines if vm in x[3] or f"name={name}" in x[3]]
    t_shut = first(mine, lambda x: x[2] == "qemuProcessHandleShutdown", t0)
    t_kill = first(mine, lambda x: x[2] == "qemuProcessKill", t_shut or t0)
    t_stop = first(mine, lambda x: x[2] == "qemuProcessStop", t_shut or t0)

    def d(a, b):
        return None if a is None or b is None else round(b - a, 4)
    return {"name": name, "qom_calls": qom,
            "start_to_qemu_exec_s": d(t0, t_exec), "cgroup_setup_s": d(t_cg, t_cg_end),
            "qmp_wait_s": d(t_qmp, t_qmp_ok), "guest_cpu_check_s": d(t_cpu, t_cpu_end),
            "other_until_cont_s": d(t_cpu_end, t_cont), "start_to_cont_s": d(t0, t_cont),
            "shutdown_to_kill_s": d(t_shut, t_kill), "kill_to_stopped_s": d(t_kill, t_stop)}


def orphan_reap_s() -> float | None:
    """How long PID 1 leaves an orphaned child's zombie in the process table."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                      # middle process: fork the orphan-to-be, then exit
        g = os.fork()
        if g == 0:
            time.sleep(0.05)
            os._exit(0)
        os.write(w, str(g).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    g = int(os.read(r, 32))
    os.close(r)
    zombie, end = None, time.monotonic() + 30
    while time.monotonic() < end:
        try:
            with open(f"/proc/{g}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):   # reaped (before we saw the zombie: 0)
            return 0.0 if zombie is None else round(time.monotonic() - zombie, 3)
        if state == "Z" and zombie is None:
            zombie = time.monotonic()
        time.sleep(0.002)
    return None


def trace(kernel: str, initramfs: str, uri: str = "qemu:///system") -> dict:
    """Boot one libvirt guest with libvirtd's debug log on; its phases and our timing points."""
    from .libvirt_vm import LibvirtVM
    old_filters, old_outputs = _current("filters"), _current("outputs")
    fd, log = tempfile.mkstemp(prefix="cvbench-libvirtd-", suffix=".log")
    os.close(fd)
    os.chmod(log, 0o666)
    try:
        _virt_admin("daemon-log-filters", FILTERS)
        _virt_admin("daemon-log-outputs", f"1:file:{log}")
        vm = LibvirtVM(kernel, initramfs, ["ready"], uri=uri, timeout=90)
        r = vm.run()
    finally:
        _virt_admin("daemon-log-filters", old_filters)
        _virt_admin("daemon-log-outputs", old_outputs or "3:stderr")
    try:
        with open(log, errors="replace") as f:
            phases = parse(f.read(), vm.name)
    finally:
        os.unlink(log)
    phases.update({"createXML_s": round(r.created_s, 4), "ready_s": round(r.ready_s, 4),
                   "console_eof_to_gone_s": round((r.gone_ns - r.eof_ns) / 1e9, 4) if r.eof_ns else None,
                   "pid1_orphan_reap_s": orphan_reap_s(), "accel": r.accel})
    return phases
