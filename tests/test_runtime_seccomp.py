"""The seccomp compilers: libseccomp through ctypes (compile_bpf), and the
cvbench-seccomp process a spawn uses (runtime/stage/seccomp.c: its own
generator where it reproduces libseccomp exactly, else libseccomp, rules
in the profile's order either way); no pyseccomp.

Both must emit the very filter pyseccomp's SyscallFilter emitted (the same
calls in the same order, as crun makes them), so neither can weaken or
change a container's profile; and no compile may run `ldconfig` (what made
the CLI slow).  tests/test_runtime_seccomp_gen.py checks the generator
against libseccomp on many more profiles."""
from __future__ import annotations

import json
import os
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


@pytest.fixture(params=["ctypes", "helper"])
def compile_with(request):
    """Each compiler in turn; the helper is built as `make setup` builds it."""
    if request.param == "ctypes":
        return seccomp.compile_bpf
    from runtime import stage
    stage.build()
    stage._found = None
    return seccomp.compile_in_helper


def test_default_profile_matches_pyseccomp_byte_for_byte(compile_with):
    assert compile_with(None) == _pyseccomp_bpf(seccomp.DEFAULT_PROFILE)


def test_bundle_profile_matches_pyseccomp_byte_for_byte(image, compile_with):
    profile = json.loads(Path(image.bundle, "config.json").read_text())["linux"]["seccomp"]
    ours = compile_with(profile)
    assert len(ours) // 8 > 500  # the containers-common profile, not an empty filter
    assert ours == _pyseccomp_bpf(profile)


def test_profile_with_every_op_and_repeated_syscalls_matches_pyseccomp(compile_with):
    """Several rules for one syscall (their order matters), 64-bit values,
    masked compares, ERRNO/TRACE data and the 32-bit architectures."""
    ops = list(seccomp.OPS)
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [
                   {"names": ["write", "read", "close"], "action": "SCMP_ACT_ALLOW"},
                   *({"names": ["personality", "clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": i % 3, "value": 2**40 + i, "valueTwo": 0xff, "op": op}]}
                     for i, op in enumerate(ops)),
                   {"names": ["ioctl"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
                   {"names": ["kill", "getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    assert compile_with(profile) == _pyseccomp_bpf(profile)


def test_unknown_syscall_is_a_warning_and_the_rest_is_kept(compile_with):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall_cvb", "reboot"], "action": "SCMP_ACT_ERRNO"}]}
    warnings: list[str] = []
    bpf = compile_with(profile, warnings)
    assert warnings == ["seccomp: syscall 'no_such_syscall_cvb' unknown to libseccomp here, skipped"]
    assert bpf == _pyseccomp_bpf(profile)
    assert len(bpf) > len(compile_with({"defaultAction": "SCMP_ACT_ALLOW"}))


def test_helper_reports_a_bad_input_and_sends_no_filter():
    from runtime import stage
    exe = str(stage.build().with_name("cvbench-seccomp"))
    r, w = os.pipe()
    out = subprocess.run([exe, str(w)], input=seccomp.encode(None)[:-3], capture_output=True,
                         pass_fds=(w,), timeout=10)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"\0\0\0\0"  # length 0: the stage stops rather than run unfiltered
    assert out.returncode == 1 and out.stdout.startswith(b"Ecvbench-seccomp: truncated input")


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


def _profile_bundle(tmp_path, image, profile: dict, args: list[str]):
    from runtime.spec import default_spec
    cfg = default_spec(args, root=image.rootfs)
    cfg["linux"]["seccomp"] = profile
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


DENY_SETHOSTNAME = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}


@pytest.fixture
def no_helper(monkeypatch):
    """The compile on a thread of the caller, as without cvbench-seccomp."""
    from runtime import stage
    monkeypatch.setattr(stage, "seccomp_binary", lambda: None)


def test_child_waits_for_a_slow_compile(root, image, tmp_path, monkeypatch, no_helper):
    """The filter is compiled beside the child: however late it is ready,
    the child loads it before exec, never runs without it."""
    import time as _time
    real = seccomp.compile_bpf

    def slow(*a, **k):
        _time.sleep(0.3)
        return real(*a, **k)
    monkeypatch.setattr(seccomp, "compile_bpf", slow)
    from runtime import spawn
    bundle = _profile_bundle(tmp_path, image, DENY_SETHOSTNAME,
                             ["/bin/sh", "-c", "hostname x 2>&1; echo rc=$?"])
    with spawn(bundle) as c:
        out = c.stdout.read().decode()
    assert "Permission denied" in out and "rc=1" in out, out


def _nothing_left(name: str) -> None:
    from runtime import cgroups, state
    assert not (state.root() / name).exists() and not list(state.root().glob(f"{name}*"))
    for r in cgroups.all_roots():
        for dirpath, dirnames, _ in os.walk(r):
            assert not [d for d in dirnames if name in d], dirpath


def test_failed_helper_compile_stops_the_start_and_leaves_nothing(root, image, tmp_path, monkeypatch):
    from common.errors import CvbError
    from runtime import spawn, stage
    stage.build()
    stage._found = None
    real = seccomp.encode
    monkeypatch.setattr(seccomp, "encode", lambda p: real(p)[:-3])
    bundle = _profile_bundle(tmp_path, image, DENY_SETHOSTNAME, ["/probe", "ready"])
    name = f"cvbench-shfail{os.getpid()}"
    with pytest.raises(CvbError, match="compiling the filter failed .*truncated input"):
        spawn(bundle, name=name)
    _nothing_left(name)


def test_failed_compile_stops_the_start_and_leaves_nothing(root, image, tmp_path, monkeypatch, no_helper):
    from common.errors import EnvError
    from runtime import spawn

    def broken(*a, **k):
        raise EnvError("seccomp", "libseccomp unavailable (test)", "install it")
    monkeypatch.setattr(seccomp, "compile_bpf", broken)
    bundle = _profile_bundle(tmp_path, image, DENY_SETHOSTNAME, ["/probe", "ready"])
    name = f"cvbench-sfail{os.getpid()}"
    with pytest.raises(EnvError, match="libseccomp unavailable"):
        spawn(bundle, name=name)
    _nothing_left(name)


def test_more_than_six_args_is_refused_when_config_is_read(root, image, tmp_path):
    from common.errors import CvbError
    from runtime import spawn
    arg = {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [arg] * 7}]}
    with pytest.raises(CvbError, match=r"linux.seccomp.syscalls\[0\].args"):
        spawn(_profile_bundle(tmp_path, image, profile, ["/probe", "ready"]))


def test_cli_prestarted_compile_is_used_only_for_its_own_profile(root, image, tmp_path):
    """seccomp.prestart() (the CLI's early compile) is adopted by spawn() only
    when the plan's profile is the very one it compiles; any other is left
    alone and the container gets a filter of its own profile."""
    from runtime import spawn, stage
    stage.build()
    stage._found = None
    cmd = ["/bin/sh", "-c", "hostname x 2>&1; echo rc=$?"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    deny = _profile_bundle(tmp_path / "a", image, DENY_SETHOSTNAME, cmd)
    allow = _profile_bundle(tmp_path / "b", image, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]}, cmd)
    early = seccomp.prestart(str(deny))
    assert early is not None and early.pid
    with spawn(deny, seccomp_started=early) as c:
        out = c.stdout.read().decode()
    assert "Permission denied" in out and "rc=1" in out, out
    assert early.pid == 0 and early.r == -1  # adopted: spawn() joined it
    early = seccomp.prestart(str(allow))
    try:
        with spawn(deny, seccomp_started=early) as c:
            out = c.stdout.read().decode()
        assert "Permission denied" in out and "rc=1" in out, out  # deny's own filter
        assert early.pid  # not adopted: still the caller's to join
    finally:
        early.join()
    assert seccomp.prestart(str(tmp_path)) is None  # no config.json: spawn() will say why
