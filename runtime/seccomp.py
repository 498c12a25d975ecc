"""Seccomp: the OCI profile format and a default profile, through libseccomp.

libseccomp (via pyseccomp) compiles a profile to classic BPF in the parent,
on every spawn (runc and crun compile theirs on every start too, so a timed
start pays the same); the child installs the bytes with one seccomp() call
just before exec.  DEFAULT_PROFILE is only for the isolation ladder's seccomp
rung on a bundle without a profile: a bundle's own container gets exactly
the filter its config.json asks for, or none.
pyseccomp is imported only when seccomp is on, to keep `import runtime` light.
"""
from __future__ import annotations

import errno
import os

# In the spirit of Docker's default profile, written as a deny list: what a
# container must never do to the shared kernel (load code, reboot, reach
# other keyrings or processes, change the clock, re-create namespaces).
DENIED = ["kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
          "reboot", "keyctl", "add_key", "request_key", "acct", "swapon", "swapoff",
          "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
          "syslog", "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at",
          "name_to_handle_at", "lookup_dcookie", "quotactl", "uselib", "unshare", "setns",
          "mount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree",
          "fspick", "process_vm_readv", "process_vm_writev", "kcmp", "personality",
          "get_mempolicy", "set_mempolicy", "mbind", "move_pages", "vhangup", "nfsservctl"]

DEFAULT_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        # ptrace of anyone else; PTRACE_TRACEME (0) stays allowed.
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]},
    ],
}

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
ARCHES = {"SCMP_ARCH_X86": "X86", "SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X32": "X32",
          "SCMP_ARCH_ARM": "ARM", "SCMP_ARCH_AARCH64": "AARCH64", "SCMP_ARCH_PPC64LE": "PPC64LE",
          "SCMP_ARCH_S390X": "S390X", "SCMP_ARCH_RISCV64": "RISCV64"}


def check_profile(p: dict, bad, warnings: list[str]) -> None:
    """Validate linux.seccomp at config-read time; bad(path, why) makes the error."""
    base = "linux.seccomp"
    if p.get("defaultAction") not in ACTIONS:
        raise bad(f"{base}.defaultAction", f"must be one of {', '.join(ACTIONS)}")
    for i, a in enumerate(p.get("architectures") or []):
        if a not in ARCHES:
            raise bad(f"{base}.architectures[{i}]", f"unknown architecture {a!r}")
    for k in p:
        if k not in ("defaultAction", "defaultErrnoRet", "architectures", "syscalls", "flags",
                     "listenerPath", "listenerMetadata"):
            warnings.append(f"{base}.{k}: unknown field, ignored")
    if not isinstance(p.get("syscalls", []), list):
        raise bad(f"{base}.syscalls", "must be a list")
    for i, rule in enumerate(p.get("syscalls") or []):
        rp = f"{base}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise bad(rp, "must be an object")
        if not isinstance(rule.get("names"), list) or not all(isinstance(n, str) for n in rule["names"]):
            raise bad(f"{rp}.names", "must be a list of syscall names")
        if rule.get("action") not in ACTIONS:
            raise bad(f"{rp}.action", f"must be one of {', '.join(ACTIONS)}")
        for j, arg in enumerate(rule.get("args") or []):
            if not isinstance(arg, dict) or arg.get("op") not in OPS or not isinstance(arg.get("index"), int):
                raise bad(f"{rp}.args[{j}]", "needs an integer index, a value and an op SCMP_CMP_*")


def _action(ps, name: str, errno_ret: int | None) -> int:
    return {"SCMP_ACT_KILL": ps.KILL, "SCMP_ACT_KILL_THREAD": ps.KILL,
            "SCMP_ACT_KILL_PROCESS": ps.KILL_PROCESS, "SCMP_ACT_TRAP": ps.TRAP,
            "SCMP_ACT_ALLOW": ps.ALLOW, "SCMP_ACT_LOG": ps.LOG,
            "SCMP_ACT_ERRNO": ps.ERRNO(errno.EPERM if errno_ret is None else errno_ret),
            "SCMP_ACT_TRACE": ps.TRACE(errno_ret or 0)}[name]


class _Fd:
    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def compile_bpf(profile: dict | None = None, warnings: list[str] | None = None) -> bytes:
    """The profile as BPF bytes (DEFAULT_PROFILE when None), compiled afresh."""
    profile = DEFAULT_PROFILE if profile is None else profile
    try:
        import pyseccomp as ps
    except (ImportError, OSError) as e:
        from common.errors import EnvError
        raise EnvError("seccomp", f"pyseccomp/libseccomp unavailable ({e})",
                       "apt-get install libseccomp2 and pip install pyseccomp (make setup does)") from None
    f = ps.SyscallFilter(_action(ps, profile["defaultAction"], profile.get("defaultErrnoRet")))
    native = ps.system_arch()
    for a in profile.get("architectures") or []:
        arch = getattr(ps.Arch, ARCHES[a])
        if arch != native:
            try:
                f.add_arch(arch)
            except OSError:
                pass  # libseccomp refuses an arch this host cannot run; harmless
    for rule in profile.get("syscalls") or []:
        act = _action(ps, rule["action"], rule.get("errnoRet"))  # EPERM unless given (runc)
        if act == _action(ps, profile["defaultAction"], profile.get("defaultErrnoRet")):
            continue
        args = [ps.Arg(a["index"], OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                for a in rule.get("args") or []]
        for name in rule["names"]:
            try:
                f.add_rule(act, name, *args)
            except (OSError, ValueError, RuntimeError):
                if warnings is not None:
                    warnings.append(f"seccomp: syscall {name!r} unknown to libseccomp here, skipped")
    fd = os.memfd_create("cvbench-seccomp")
    try:
        f.export_bpf(_Fd(fd))
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
