"""cvbench-seccomp's own BPF generator (runtime/stage/seccomp_gen.c) against
libseccomp 2.5.4, the library crun compiles with.

The generator must emit libseccomp's very program, byte for byte, for every
profile it answers, and leave every other profile to libseccomp: the default
bundle's profile and DEFAULT_PROFILE must go through the generator (that is
the start-up saving), and whatever it declines must still come out right.
The reference is runtime.seccomp.compile_bpf (libseccomp through ctypes,
itself checked against pyseccomp in tests/test_runtime_seccomp.py); the
helper's "both" mode additionally compares the two inside one process."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from runtime import seccomp

X3 = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


@pytest.fixture(scope="module", autouse=True)
def helper_built():
    from runtime import stage
    stage.build()
    stage._found = None


def _compile(profile: dict | None, mode: str | None = None) -> tuple[bytes, str]:
    used: list[str] = []
    bpf = seccomp.compile_in_helper(profile, [], mode, used)
    return bpf, used[0]


def _same_as_libseccomp(profile: dict | None) -> str:
    """The helper's program equals libseccomp's; returns which compiler answered."""
    ours, used = _compile(profile)
    assert ours == seccomp.compile_bpf(profile)
    both, _ = _compile(profile, "both")  # the helper's own check: exits 1 on a mismatch
    assert both == ours
    return used


def test_bundle_profile_is_generated_byte_for_byte(image):
    profile = json.loads(Path(image.bundle, "config.json").read_text())["linux"]["seccomp"]
    assert len(seccomp.compile_bpf(profile)) // 8 > 500  # the containers-common profile
    assert _same_as_libseccomp(profile) == "generator"


def test_default_profile_is_generated_byte_for_byte():
    assert _same_as_libseccomp(None) == "generator"


def _rule(names, action="SCMP_ACT_ALLOW", errno_ret=None, args=None):
    r = {"names": names, "action": action}
    if errno_ret is not None:
        r["errnoRet"] = errno_ret
    if args:
        r["args"] = args
    return r


def _arg(index, value, op="SCMP_CMP_EQ", value_two=0):
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


GENERATED = {
    # one rule per syscall with every comparison, 64-bit values and masks, on one arch
    "every op, x86_64 only": {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [_rule(["read", "write"]),
                     *(_rule([name], "SCMP_ACT_TRACE", 5, [_arg(i % 6, 2**40 + i, op, 0xff00ff00ff)])
                       for i, (name, op) in enumerate(zip(["ioctl", "fcntl", "mmap", "clone", "kill", "dup3", "openat"],
                                                          seccomp.OPS, strict=True)))]},
    # several SCMP_CMP_EQ rules on one argument, values in and above 32 bits, mixed actions
    "EQ ladder with 64-bit values": {
        "defaultAction": "SCMP_ACT_KILL", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [_rule(["exit_group", "exit"]),
                     *(_rule(["personality"], act, 9, [_arg(0, v)]) for v, act in
                       [(0, "SCMP_ACT_ALLOW"), (8, "SCMP_ACT_ERRNO"), (2**33 + 8, "SCMP_ACT_ALLOW"),
                        (2**32, "SCMP_ACT_TRAP"), (0xffffffff, "SCMP_ACT_ALLOW")])]},
    # MASKED_EQ and NE on three arches (x86 and x32 compare 32 bits)
    "masked and NE on three arches": {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": X3,
        "syscalls": [_rule(["clone"], "SCMP_ACT_ERRNO", 1, [_arg(0, 0x7E020000, "SCMP_CMP_MASKED_EQ", 0)]),
                     _rule(["ptrace"], "SCMP_ACT_ERRNO", 1, [_arg(0, 0, "SCMP_CMP_NE")]),
                     _rule(["reboot", "kexec_load", "arch_prctl", "socketcall"], "SCMP_ACT_ERRNO", 38)]},
    # socket calls on x86 reach socketcall() too; a plain socketcall rule covers that
    "socket calls with a plain socketcall": {
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": X3,
        "syscalls": [_rule(["socket", "accept", "recvmmsg", "semop", "shmget", "bind"]),
                     _rule(["socketcall", "ipc"])]},
    # ...and without one, rules on socketcall() comparing argument 0 (SYS_*)
    "socket calls without socketcall": {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": X3,
        "syscalls": [_rule(["socket", "shmget"], "SCMP_ACT_ERRNO", 1), _rule(["accept", "semop"], "SCMP_ACT_TRAP")]},
    # libseccomp's quirk: a syscall x86_64 lacks heads the priority order, so
    # no block of the x86_64+x32 section loads the syscall number
    "a missing syscall heads the order": {
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X32", "SCMP_ARCH_X86"],
        "syscalls": [_rule(["getdents64"], "SCMP_ACT_ERRNO", 38, [_arg(3, 2**32, "SCMP_CMP_GE")]),
                     _rule(["link"], "SCMP_ACT_ALLOW", None, [_arg(2, 1)]),
                     _rule(["link"], "SCMP_ACT_TRACE", 3, [_arg(2, 0)]),
                     _rule(["mq_timedreceive_time64"], "SCMP_ACT_TRACE", 3, [_arg(3, 8, "SCMP_CMP_LT")])]},
    # a masked compare with a zero mask is no compare: the rule is plain and
    # the later plain rule for the same syscall is dropped (first one wins)
    "zero mask makes a plain rule": {
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": X3,
        "syscalls": [_rule(["name_to_handle_at", "process_mrelease"], "SCMP_ACT_ERRNO", 1,
                           [_arg(2, 0, "SCMP_CMP_MASKED_EQ", 0xffffffff)]),
                     _rule(["name_to_handle_at", "process_mrelease", "getpid"])]},
}


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_profiles_match_libseccomp(name):
    assert _same_as_libseccomp(GENERATED[name]) == "generator"


DECLINED = {
    "two ops on one syscall": {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": X3,
        "syscalls": [_rule(["personality"], "SCMP_ACT_ERRNO", 1, [_arg(0, 1, "SCMP_CMP_GT")]),
                     _rule(["personality"], "SCMP_ACT_ERRNO", 1, [_arg(0, 5, "SCMP_CMP_EQ")])]},
    "socket call with arguments on x86": {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": X3,
        "syscalls": [_rule(["socket"], "SCMP_ACT_ERRNO", 1, [_arg(0, 1)])]},
    "the same value twice": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [_rule(["personality"], "SCMP_ACT_ERRNO", 1, [_arg(0, 1)]),
                     _rule(["personality"], "SCMP_ACT_TRAP", None, [_arg(0, 1)])]},
    "another architecture": {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [_rule(["reboot"], "SCMP_ACT_ERRNO", 1)]},
    "the log action": {
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [_rule(["reboot"], "SCMP_ACT_LOG")]},
}


@pytest.mark.parametrize("name", list(DECLINED))
def test_declined_profiles_go_to_libseccomp(name):
    assert _same_as_libseccomp(DECLINED[name]).startswith("libseccomp: ")


_NAMES = ["read", "write", "personality", "clone", "ptrace", "socket", "socketcall", "ipc", "shmget",
          "accept", "arch_prctl", "mq_timedreceive_time64", "getdents64", "link", "kill", "ioctl",
          "no_such_syscall_cvb", "rt_sigreturn", "_llseek", "stime", "process_madvise", "mmap"]
_ACTIONS = [("SCMP_ACT_ALLOW", None), ("SCMP_ACT_ERRNO", 1), ("SCMP_ACT_ERRNO", 38), ("SCMP_ACT_KILL", None),
            ("SCMP_ACT_TRAP", None), ("SCMP_ACT_TRACE", 3)]
_VALUES = [0, 1, 8, 0x20000, 0xffffffff, 2**32, 2**32 + 1, 2**40 + 5, 2**64 - 1]


def _random_profile(rng: random.Random) -> dict:
    act, ret = rng.choice(_ACTIONS)
    p = {"defaultAction": act, "architectures": rng.choice(
        [[], ["SCMP_ARCH_X86_64"], ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"], X3, ["SCMP_ARCH_X32", "SCMP_ARCH_X86"]]),
        "syscalls": []}
    if ret is not None:
        p["defaultErrnoRet"] = ret
    for _ in range(rng.randrange(1, 10)):
        act, ret = rng.choice(_ACTIONS)
        kind = rng.random()
        if kind < 0.3:  # an EQ ladder on one argument
            name, index = rng.choice(_NAMES), rng.randrange(3)
            for v in rng.sample(_VALUES, rng.randrange(1, 5)):
                act, ret = rng.choice(_ACTIONS)
                p["syscalls"].append(_rule([name], act, ret, [_arg(index, v)]))
        elif kind < 0.5:  # one rule with one or two comparisons of any op
            p["syscalls"].append(_rule(rng.sample(_NAMES, 2), act, ret, [
                _arg(i, rng.choice(_VALUES), rng.choice(list(seccomp.OPS)), rng.choice(_VALUES))
                for i in rng.sample(range(6), rng.randrange(1, 3))]))
        else:
            p["syscalls"].append(_rule(rng.sample(_NAMES, rng.randrange(1, 12)), act, ret))
    return p


def test_random_profiles_match_libseccomp():
    """Seeded, so a failure names a profile that can be replayed."""
    used = []
    for seed in range(150):
        profile = _random_profile(random.Random(seed))
        try:
            used.append(_same_as_libseccomp(profile))
        except (AssertionError, OSError, RuntimeError) as e:
            raise AssertionError(f"seed {seed}: {json.dumps(profile)}") from e
    assert used.count("generator") > len(used) // 3, used  # not a test of libseccomp against itself
