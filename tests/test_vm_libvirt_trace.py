"""trace-libvirt's reading of libvirtd's debug log (lines in libvirt 9.0's
format), and the PID-1 reaping measurement it reports alongside."""
from __future__ import annotations

from vm_backend.libvirt_trace import orphan_reap_s, parse

VM, MON = "0x7f79fc0143f0", "0x7f79f400b8b0"


def _ln(t: str, tid: int, func: str, msg: str) -> str:
    return f"2026-12-02 04:27:{t}+0000: {tid}: debug : {func}:100 : {msg}"


LOG = "\n".join([
    _ln("51.157", 3512, "qemuProcessStart", f"conn=0x1 driver=0x2 vm={VM} name=cvbench-vm-1-abc id=-1"),
    _ln("51.157", 3600, "qemuProcessStart", "conn=0x1 driver=0x2 vm=0x9 name=cvbench-vm-2-other id=-1"),
    _ln("51.176", 3512, "qemuProcessLaunch", f"QEMU vm={VM} name=cvbench-vm-1-abc running with pid=6695"),
    _ln("51.182", 3512, "qemuProcessLaunch", "Setting up domain cgroup (if required)"),
    _ln("51.198", 3512, "qemuProcessLaunch", "Setting up domain perf (if required)"),
    _ln("51.204", 3512, "qemuMonitorSend", f'QEMU_MONITOR_SEND_MSG: mon={MON} msg={{"execute":"qmp_capabilities"}}'),
    _ln("51.248", 3512, "qemuMonitorSend", f'QEMU_MONITOR_SEND_MSG: mon={MON} msg={{"execute":"query-chardev"}}'),
    _ln("51.250", 3512, "qemuProcessLaunch", "Verifying and updating provided guest CPU"),
    *[_ln(f"51.{260 + i:03d}", 3512, "qemuMonitorSend",
          f'QEMU_MONITOR_SEND_MSG: mon={MON} msg={{"execute":"qom-get"}}') for i in range(3)],
    _ln("51.300", 3600, "qemuMonitorSend", 'QEMU_MONITOR_SEND_MSG: mon=0x5 msg={"execute":"qom-get"}'),
    _ln("51.522", 3512, "qemuProcessLaunch", "Detecting IOThread PIDs"),
    _ln("51.529", 3512, "qemuMonitorSend", f'QEMU_MONITOR_SEND_MSG: mon={MON} msg={{"execute":"cont"}}'),
    _ln("53.601", 6698, "qemuProcessHandleShutdown", f"vm={VM}"),
    _ln("53.602", 6698, "qemuProcessKill", f"vm={VM} name=cvbench-vm-1-abc pid=6695 flags=0x2"),
    _ln("55.213", 5874, "qemuProcessStop", f"Shutting down vm={VM} name=cvbench-vm-1-abc id=8 pid=6695"),
])


def test_phases_are_read_for_our_guest_only():
    p = parse(LOG, "cvbench-vm-1-abc")
    assert p["qom_calls"] == 3                       # the other guest's qom-get is not ours
    assert p["start_to_qemu_exec_s"] == 0.019 and p["cgroup_setup_s"] == 0.016
    assert p["qmp_wait_s"] == 0.044 and p["guest_cpu_check_s"] == 0.272
    assert p["start_to_cont_s"] == 0.372
    assert p["shutdown_to_kill_s"] == 0.001 and p["kill_to_stopped_s"] == 1.611


def test_orphan_reaping_is_measured():
    s = orphan_reap_s()
    assert s is not None and 0 <= s < 30
