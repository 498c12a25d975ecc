"""Seccomp: the OCI profile format and a default profile, compiled to BPF.

Every spawn compiles its profile afresh, beside the start (Background): in
the cvbench-seccomp process (runtime/stage/seccomp.c) when built, else
through libseccomp's ctypes calls on a thread of the caller.  The process
emits the very program libseccomp 2.5.4 (the library crun links) makes of
the profile, byte for byte: its own generator (seccomp_gen.c) where it
reproduces libseccomp exactly, libseccomp itself for any other profile.
runc and crun compile theirs on every start too (crun 1.8.1's BPF cache is
compiled out of Debian's build: no .cache/seccomp appears under its root),
so a timed start pays a compile as they do.  The child installs the bytes
with one seccomp() call just before exec.  DEFAULT_PROFILE is only for the
isolation ladder's seccomp rung on a bundle without a profile: a bundle's
own container gets exactly the filter its config.json asks for, or none.
libseccomp is loaded only when seccomp is on, to keep `import runtime` light.
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
        if len(rule.get("args") or []) > 6:
            raise bad(f"{rp}.args", "libseccomp compares at most 6 arguments in one rule")
        for j, arg in enumerate(rule.get("args") or []):
            if not isinstance(arg, dict) or arg.get("op") not in OPS or not isinstance(arg.get("index"), int):
                raise bad(f"{rp}.args[{j}]", "needs an integer index, a value and an op SCMP_CMP_*")


# libseccomp's action values (seccomp.h); ERRNO and TRACE carry 16 data bits.
_ACT = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
        "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
        "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}


def _action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":  # EPERM unless given (runc)
        return 0x00050000 | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return 0x7FF00000 | ((errno_ret or 0) & 0xFFFF)
    return _ACT[name]


_lib = None


def _libseccomp():
    """libseccomp by its soname through ctypes.  Not pyseccomp: importing it
    runs ctypes.util.find_library, i.e. `ldconfig -p`, twice (most of a CLI
    start).  Loaded once per process, like an imported module; every filter
    is still compiled afresh."""
    global _lib
    if _lib is None:
        import ctypes
        try:
            lib = ctypes.CDLL("libseccomp.so.2")
        except OSError as e:
            from common.errors import EnvError
            raise EnvError("seccomp", f"libseccomp unavailable ({e})",
                           "apt-get install libseccomp2 (make setup does)") from None
        vp, u32, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        for name, res, args in (
                ("seccomp_init", vp, [u32]), ("seccomp_release", None, [vp]),
                ("seccomp_arch_native", u32, []), ("seccomp_arch_add", i32, [vp, u32]),
                ("seccomp_arch_resolve_name", u32, [ctypes.c_char_p]),
                ("seccomp_syscall_resolve_name", i32, [ctypes.c_char_p]),
                ("seccomp_rule_add_array", i32, [vp, u32, i32, ctypes.c_uint, vp]),
                ("seccomp_export_bpf", i32, [vp, i32])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


def compile_bpf(profile: dict | None = None, warnings: list[str] | None = None) -> bytes:
    """The profile as BPF bytes (DEFAULT_PROFILE when None), compiled afresh.

    The same libseccomp calls, in the same order, as pyseccomp's SyscallFilter
    made (tests/test_runtime_seccomp.py checks the bytes are identical)."""
    import ctypes
    profile = DEFAULT_PROFILE if profile is None else profile
    lib = _libseccomp()

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    f = lib.seccomp_init(default)
    if not f:
        from common.errors import EnvError
        raise EnvError("linux.seccomp.defaultAction", "libseccomp refused it", "use a valid SCMP_ACT_*")
    fd = -1
    try:
        native = lib.seccomp_arch_native()
        for a in profile.get("architectures") or []:
            arch = lib.seccomp_arch_resolve_name(ARCHES[a].lower().encode())
            if arch and arch != native:
                lib.seccomp_arch_add(f, arch)  # refused for an arch this host cannot run: harmless
        for rule in profile.get("syscalls") or []:
            act = _action(rule["action"], rule.get("errnoRet"))
            if act == default:
                continue
            args = rule.get("args") or []  # at most 6: check_profile
            arr = (ArgCmp * len(args))(*[ArgCmp(a["index"], OPS[a["op"]], a.get("value", 0),
                                                a.get("valueTwo", 0)) for a in args])
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if lib.seccomp_rule_add_array(f, act, nr, len(args), arr) < 0 and warnings is not None:
                    warnings.append(f"seccomp: syscall {name!r} unknown to libseccomp here, skipped")
        fd = os.memfd_create("cvbench-seccomp", os.MFD_CLOEXEC)
        rc = lib.seccomp_export_bpf(f, fd)
        if rc < 0:
            raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        if fd >= 0:
            os.close(fd)
        lib.seccomp_release(f)


def encode(profile: dict | None) -> bytes:
    """The profile as runtime/stage/seccomp.c reads it on stdin: the same
    values compile_bpf() hands libseccomp, rules equal to the default left out."""
    import struct
    profile = DEFAULT_PROFILE if profile is None else profile
    out = bytearray()

    def text(v: str) -> None:
        b = v.encode()
        out.extend(struct.pack("<I", len(b)) + b)
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    arches = profile.get("architectures") or []
    out += struct.pack("<II", default & 0xFFFFFFFF, len(arches))
    for a in arches:
        text(ARCHES[a].lower())
    rules = []
    for rule in profile.get("syscalls") or []:
        act = _action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue
        args = b"".join(struct.pack("<IIQQ", a["index"], OPS[a["op"]], a.get("value", 0) & (2**64 - 1),
                                    a.get("valueTwo", 0) & (2**64 - 1)) for a in rule.get("args") or [])
        head = struct.pack("<II", act, len(rule.get("args") or [])) + args
        rules += [(head, name) for name in rule["names"]]
    out += struct.pack("<I", len(rules))
    for head, name in rules:
        out += head
        text(name)
    return bytes(out)


class Background:
    """Compiles one spawn's filter beside the start and sends it to the child.

    The containers' default profile takes libseccomp ~12 ms here (~3 ms in
    cvbench-seccomp's generator), and the child has its namespaces, cgroups
    and rootfs to make before it loads the filter, so the two run side by
    side: in the cvbench-seccomp process (runtime/stage/seccomp.c, which
    `make setup` builds) on the other core, else on a helper thread here
    (libseccomp releases the GIL between its ~870 ctypes calls, but the
    spawning thread then competes for it).  Still one compile per spawn
    inside the clock: nothing is kept between spawns.
    The bytes go through a pipe as a 4-byte length and the program; length 0
    means compiling failed (self.error says why after join()) and the child stops."""

    def __init__(self, profile: dict | None, warnings: list[str], mode: str | None = None):
        self.profile = profile
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        self.error: BaseException | None = None
        self._warnings = warnings
        self.thread = None
        self.pid, self._msgs = 0, -1
        self.compiler: str | None = None  # after join(): "generator", or "libseccomp: <why>"
        from .stage import seccomp_binary
        exe = seccomp_binary()
        if exe is not None:
            self._start_helper(exe, profile, mode)
            return
        import threading
        self.thread = threading.Thread(target=self._run, args=(profile,), name="cvbench-seccomp",
                                       daemon=True)
        self.thread.start()

    def _start_helper(self, exe: str, profile: dict | None, mode: str | None) -> None:
        data = encode(profile)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        try:
            argv = [exe, str(self.w)] + ([mode] if mode else [])
            self.pid = os.posix_spawn(exe, argv, {}, file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, msg_w, 1),
                (os.POSIX_SPAWN_DUP2, self.w, self.w)])
        except BaseException:
            for fd in (in_r, in_w, msg_r, msg_w):
                os.close(fd)
            raise
        self._msgs = msg_r
        for fd in (in_r, msg_w, self.w):  # the helper's now: its exit means EOF for the child
            os.close(fd)
        self.w = None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(in_w, view):]
        except OSError:
            pass  # the helper died first; join() says why
        finally:
            os.close(in_w)

    def _run(self, profile: dict | None) -> None:
        import struct
        try:
            bpf = compile_bpf(profile, self._warnings)
        except BaseException as e:  # noqa: BLE001 - re-raised by the spawning thread
            self.error, bpf = e, b""
        try:
            data = memoryview(struct.pack("=I", len(bpf)) + bpf)
            while data:
                data = data[os.write(self.w, data):]
        except OSError:
            pass  # the child died first; the spawn reports that

    def _reap_helper(self) -> None:
        chunks = []
        while chunk := os.read(self._msgs, 65536):
            chunks.append(chunk)
        os.close(self._msgs)
        self._msgs = -1
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        why = None
        for line in b"".join(chunks).decode(errors="replace").splitlines():
            if line.startswith("W"):
                self._warnings.append(f"seccomp: syscall {line[1:]!r} unknown to libseccomp here, skipped")
            elif line.startswith("G"):
                self.compiler = "generator"
            elif line.startswith("L"):
                self.compiler = f"libseccomp: {line[1:]}"
            elif line.startswith("E"):
                why = line[1:]
        if why is None and status != 0 and not os.WIFSIGNALED(status):
            why = f"cvbench-seccomp exited with status {os.waitstatus_to_exitcode(status)}"
        if why is not None:
            from common.errors import CvbError
            self.error = CvbError("linux.seccomp", f"compiling the filter failed ({why})",
                                  "check the profile in config.json (--debug for details)")

    def join(self) -> None:
        """Wait for the compile and close the pipe (the spawner's copies).
        The read end first: a writer no child reads from gets EPIPE rather
        than block on a full pipe."""
        self._close("r")
        if self.thread is not None:
            self.thread.join()
        if self.pid:
            self._reap_helper()
        self._close("w")

    def _close(self, end: str) -> None:
        fd = getattr(self, end)
        if fd is not None and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        setattr(self, end, -1)


def prestart(bundle: str) -> Background | None:
    """For the CLI: the compile of the bundle's profile started before the
    rest of the runtime is imported, so the two overlap.  spawn() adopts it
    only if the plan's profile is this very one (read and checked again
    there); otherwise it is dropped.  Still one compile in the process, for
    its one container, inside the timed run."""
    from .stage import seccomp_binary
    try:
        if seccomp_binary() is None:
            return None
        import json
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            profile = json.loads(f.read())["linux"]["seccomp"]
        return Background(profile, []) if isinstance(profile, dict) and profile else None
    except Exception:  # noqa: BLE001 - anything odd: spawn() reads, checks and compiles it itself
        return None


def compile_in_helper(profile: dict | None = None, warnings: list[str] | None = None,
                      mode: str | None = None, used: list[str] | None = None) -> bytes:
    """The filter through the cvbench-seccomp process, as a spawn compiles it.
    mode "libseccomp" skips its generator, "both" makes it check the
    generator against libseccomp; used gets which compiler answered."""
    from .stage import seccomp_binary
    if seccomp_binary() is None:
        from common.errors import EnvError
        raise EnvError("runtime stage", "cvbench-seccomp is not built", "run make setup")
    bg = Background(profile, [] if warnings is None else warnings, mode)
    try:
        bpf = receive(bg.r)
    except OSError:
        bg.join()
        raise bg.error or OSError("cvbench-seccomp sent no filter") from None
    bg.join()
    if used is not None and bg.compiler:
        used.append(bg.compiler)
    return bpf


def receive(fd: int) -> bytes:
    """In the child: the filter Background sends; an error if it could not be built."""
    import struct

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise OSError(errno.EPIPE, "seccomp: the filter never arrived")
            buf += chunk
        return buf
    n, = struct.unpack("=I", exactly(4))
    if n == 0 or n % 8:
        raise OSError(errno.EINVAL, "seccomp: compiling the filter failed")
    return exactly(n)
