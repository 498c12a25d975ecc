"""cgroup v2 device rules: an eBPF program of type CGROUP_DEVICE, built from
the same (allow, "c 1:3 rwm") rules the v1 devices controller takes, loaded
with bpf(2) and attached to the container's cgroup (what runc's devicefilter
does).  v2 has no devices.allow file; without this the rules would not hold,
and the runtime would have to refuse them.

The program reads the kernel's struct bpf_cgroup_dev_ctx {access_type,
major, minor} and walks the rules last to first (the last matching rule
wins, as in the v1 controller); nothing matching is denied.
"""
from __future__ import annotations

import ctypes
import os
import struct

SYS_bpf = 321
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE = 15, 6
DEV_BLOCK, DEV_CHAR = 1, 2
ACC = {"m": 1, "r": 2, "w": 4}


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


LDXW, AND32K, RSH32K, MOV64X, JNEK, MOV64K, EXIT = 0x61, 0x54, 0x74, 0xbf, 0x55, 0xb7, 0x95


def _parse(rule: str) -> tuple[str, int | None, int | None, int]:
    if rule == "a":
        return "a", None, None, 7
    kind, nums, access = rule.split()
    major, minor = nums.split(":")
    return (kind, None if major == "*" else int(major), None if minor == "*" else int(minor),
            sum(ACC[c] for c in access))


def program(rules: list[tuple[bool, str]]) -> bytes:
    """The eBPF instructions for these rules (v1 devices.allow/deny lines)."""
    head = [_insn(LDXW, 2, 1, 0), _insn(AND32K, 2, imm=0xFFFF),    # r2 = type
            _insn(LDXW, 3, 1, 0), _insn(RSH32K, 3, imm=16),        # r3 = access
            _insn(LDXW, 4, 1, 4), _insn(LDXW, 5, 1, 8)]            # r4 = major, r5 = minor
    body: list[bytes] = []
    for allow, rule in reversed(rules):
        kind, major, minor, access = _parse(rule)
        checks: list[tuple[int, int, int]] = []   # (op, reg, imm) jumps to the next block
        if kind != "a":
            checks.append((JNEK, 2, DEV_BLOCK if kind == "b" else DEV_CHAR))
        if access != 7:
            checks.append(("access", 3, access))
        if major is not None:
            checks.append((JNEK, 4, major))
        if minor is not None:
            checks.append((JNEK, 5, minor))
        block: list = []
        for op, reg, imm in checks:
            if op == "access":  # requested bits outside the rule's: r1 = r3 & ~access
                block += [_insn(MOV64X, 1, 3), _insn(AND32K, 1, imm=~imm & 7), ("jne", 1, 0)]
            else:
                block.append(("jne", reg, imm))
        block += [_insn(MOV64K, 0, imm=1 if allow else 0), _insn(EXIT)]
        n = len(block)
        for i, ins in enumerate(block):  # every check jumps past the rest of this block
            if isinstance(ins, tuple):
                block[i] = _insn(JNEK, ins[1], off=n - i - 1, imm=ins[2])
        body += block
        if not checks:  # matches everything: the rules before it can never decide
            return b"".join(head + body)
    return b"".join(head + body + [_insn(MOV64K, 0, imm=0), _insn(EXIT)])


_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    rc = _libc.syscall(SYS_bpf, cmd, attr, len(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return rc


def attach(cgroup_dir: str, rules: list[tuple[bool, str]]) -> None:
    """Load the program and attach it to cgroup_dir (it stays while the cgroup lives)."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_))
    struct.pack_into("<I", attr, 68, BPF_CGROUP_DEVICE)  # expected_attach_type
    prog = _bpf(BPF_PROG_LOAD, attr)
    try:
        cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(128)
            struct.pack_into("<III", attr, 0, cg, prog, BPF_CGROUP_DEVICE)
            _bpf(BPF_PROG_ATTACH, attr)
        finally:
            os.close(cg)
    finally:
        os.close(prog)

