"""The seccomp compiler: libseccomp through ctypes, no pyseccomp.

It must emit the very filter pyseccomp's SyscallFilter emitted (same calls,
same order), so the switch cannot weaken or change a container's profile;
and it must not run `ldconfig` (what made the CLI slow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import seccomp

ROOT = Path(__file__).resolve().parents[1]


def _pyseccomp_bpf(profile: dict) -> bytes:
    """The reference: the same profile through pyseccomp's SyscallFilter."""
    ps = pytest.importorskip("pyseccomp")
    import errno
    import os

    def act(name, ret):
        return {"SCMP_ACT_KILL": ps.KILL, "SCMP_ACT_KILL_THREAD": ps.KILL,
                "SCMP_ACT_KILL_PROCESS": ps.KILL_PROCESS, "SCMP_ACT_TRAP": ps.TRAP,
                "SCMP_ACT_ALLOW": ps.ALLOW, "SCMP_ACT_LOG": ps.LOG,
                "SCMP_ACT_ERRNO": ps.ERRNO(errno.EPERM if ret is None else ret),
                "SCMP_ACT_TRACE": ps.TRACE(ret or 0)}[name]
    default = act(profile["defaultAction"], profile.get("defaultErrnoRet"))
    f = ps.SyscallFilter(default)
    for a in profile.get("architectures") or []:
        arch = getattr(ps.Arch, seccomp.ARCHES[a])
        if arch != ps.system_arch():
            try:
                f.add_arch(arch)
            except OSError:
                pass
    for rule in profile.get("syscalls") or []:
        a = act(rule["action"], rule.get("errnoRet"))
        if a == default:
            continue
        args = [ps.Arg(x["index"], seccomp.OPS[x["op"]], x.get("value", 0), x.get("valueTwo", 0))
                for x in rule.get("args") or []]
        for name in rule["names"]:
            try:
                f.add_rule(a, name, *args)
            except (OSError, ValueError, RuntimeError):
                pass
    fd = os.memfd_create("ref")
    try:
        f.export_bpf(type("F", (), {"fileno": lambda self: fd})())
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def test_default_profile_matches_pyseccomp_byte_for_byte():
    assert seccomp.compile_bpf(None) == _pyseccomp_bpf(seccomp.DEFAULT_PROFILE)


def test_bundle_profile_matches_pyseccomp_byte_for_byte(image):
    profile = json.loads(Path(image.bundle, "config.json").read_text())["linux"]["seccomp"]
    ours = seccomp.compile_bpf(profile)
    assert len(ours) // 8 > 500  # the containers-common profile, not an empty filter
    assert ours == _pyseccomp_bpf(profile)


def test_unknown_syscall_is_a_warning_and_the_rest_is_kept():
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall_cvb", "reboot"], "action": "SCMP_ACT_ERRNO"}]}
    warnings: list[str] = []
    bpf = seccomp.compile_bpf(profile, warnings)
    assert warnings == ["seccomp: syscall 'no_such_syscall_cvb' unknown to libseccomp here, skipped"]
    assert bpf == _pyseccomp_bpf(profile)
    assert len(bpf) > len(seccomp.compile_bpf({"defaultAction": "SCMP_ACT_ALLOW"}))


def test_compiling_runs_no_ldconfig():
    code = ("import subprocess, sys\n"
            "real = subprocess.Popen.__init__\n"
            "def spy(self, args, *a, **k):\n"
            "    sys.stderr.write('SPAWNED %r\\n' % (args,)); return real(self, args, *a, **k)\n"
            "subprocess.Popen.__init__ = spy\n"
            "from runtime import seccomp\n"
            "print(len(seccomp.compile_bpf(None)) // 8)\n"
            "print('pyseccomp' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "SPAWNED" not in out.stderr
    assert out.stdout.split() == [str(len(seccomp.compile_bpf(None)) // 8), "False"]
