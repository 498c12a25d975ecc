"""What the two VM backends share: the image's kernel + initramfs booted by
vm_backend, with the accelerator (KVM, or TCG and why) in every record.

A guest's memory is read from the host: PSS of the VMM processes, with the
guest-RAM mappings of the QEMU process as the workload part and the rest as
VMM overhead (vm_backend does the split; ru_maxrss is never used).
"""
from __future__ import annotations

import time

from .base import Backend, Instance, InstanceFailed, Timings, long_lived

MEMORY_MIB = 128


class VMInstance(Instance):
    def __init__(self, backend: str, vm, args: list[str], timeout: float):
        self.backend = backend
        self.vm = vm
        vm.start()
        try:
            deadline = time.monotonic() + timeout
            # mem/sleep print one line once settled; read it off the live console
            while long_lived(args) and not vm.console.probe.values:
                if vm.console.eof.is_set() or time.monotonic() > deadline:
                    raise InstanceFailed(backend, "guest did not settle (no mem/sleep line)",
                                         vm.console.tail())
                time.sleep(0.02)
        except BaseException:
            vm.stop()
            raise

    def host_pids(self) -> list[int]:
        return self.vm.host_pids()

    def cgroup_dirs(self) -> list[str]:
        return self.vm.cgroup_dirs()

    def memory(self) -> dict:
        """The PSS split: guest RAM (THP-rounded, guest kernel included) as the
        workload part, QEMU's own memory as the VMM part; ``vm`` keeps the exact
        guest-RAM figures (QEMU's mapping, libvirt's memoryStats)."""
        from .. import memory
        m = self.vm.memory()
        return {"pss_total": m["pss_total"], "workload": m["guest_ram"],
                "overhead": m["vmm_overhead"], "cgroup_charged": memory.cgroup_charged(self.cgroup_dirs()),
                "vm": {k: v for k, v in m.items() if k not in ("pss_total",)}}

    def stop(self) -> None:
        self.vm.stop()


class VMBackend(Backend):
    kind = "vm"
    vm_class_name = ""
    label = ""

    def __init__(self):
        self._verdict = None

    def vm_class(self):
        import vm_backend
        return getattr(vm_backend, self.vm_class_name)

    def vm_kwargs(self) -> dict:
        return {}

    def _vm(self, args: list[str], timeout: float, accel="auto"):
        return self.vm_class()(self.img.kernel, self.img.initramfs, list(args),
                               memory_mib=MEMORY_MIB, timeout=timeout, accel=accel, **self.vm_kwargs())

    def io_vm(self, initramfs, args: list[str], io, timeout: float = 120.0):
        """A guest of the I/O scenarios: the I/O initramfs (bench/guest_io.py)
        and the devices in ``io`` (vm_backend.iodev.GuestIO), same machine,
        memory and accelerator as every other guest of this backend."""
        return self.vm_class()(self.img.kernel, str(initramfs), list(args), memory_mib=MEMORY_MIB,
                               timeout=timeout, accel=self._accel(), io=io, **self.vm_kwargs())

    def _accel(self):
        """This backend's own verdict (raw QEMU trials without libvirt, libvirt
        through its URI), once per process: the boots use it and the metadata
        records the same one."""
        if self._verdict is None:
            self._verdict = self._vm(["ready"], 60.0)._detect()
        return self._verdict

    def accel(self) -> dict:
        a = self._accel()
        return {"name": a.name, "reason": a.reason}

    def sample_plan(self) -> str:
        """The pyperf plan this backend's boots fit (bench/worker.py PLAN):
        pyperf's defaults with a warm-up boot under KVM, where a boot takes
        well under a second; the small plan under TCG, where it takes seconds."""
        return "vm_kvm" if self._accel().name == "kvm" else "vm"

    def check(self) -> None:
        """Raise if this VM backend cannot run here (overridden per backend)."""

    def available(self) -> tuple[bool, str]:
        try:
            if not self.img.kernel:
                return False, f"{self.name}: the image has no guest kernel; run 'make setup'"
            self.vm_class()
            self.check()
            a = self.accel()
        except Exception as e:  # noqa: BLE001 - any failure here is the reason
            why = e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}"
            return False, f"{self.name}: {why}"
        return True, f"accel={a['name']} ({a['reason'][:160]})"

    def metadata(self) -> dict:
        vm = self._vm(["ready"], 60.0)
        vm.accel = self._accel()   # so the recorded command line is the one the boots use
        md = {k: v for k, v in vm.metadata().items() if v is not None}
        a = self.accel()
        md.update({"accel": a["name"], "accel_reason": a["reason"], "memory_mib": MEMORY_MIB,
                   "label": self.label})
        return md

    def run(self, args: list[str], timeout: float = 60.0) -> Timings:
        r = self._vm(args, timeout, self._accel()).run()
        return Timings(r.ready_s, r.gone_s, r.probe.rc, r.probe, r.console)

    def start(self, args: list[str], timeout: float = 60.0) -> Instance:
        return VMInstance(self.name, self._vm(args, timeout, self._accel()), args, timeout)


def check_one_accel(avail: dict[str, dict]) -> None:
    """Refuse a run whose VM backends got different accelerators: a kvm row next
    to a tcg row would compare the emulator with the hypervisor, not the VMMs."""
    from common.errors import CvbError
    got = {n: a["accel"] for n, a in avail.items() if a.get("available") and a.get("accel")}
    kinds = {a["accel"] for a in got.values()}
    if len(kinds) > 1:
        detail = "; ".join(f"{n}={a['accel']} ({a['why'][:120]})" for n, a in got.items())
        raise CvbError("--backends", f"the VM backends got different accelerators: {detail}",
                       "run the kvm and the tcg backends in separate runs (--backends)", status=2)


# Rounds of interleaved boots per mode (each round boots every VM backend once).
PAIRED_ROUNDS = {"fast": 4, "default": 8, "rigorous": 16}


def paired(names: list[str], rounds: int, timeout: float = 60.0) -> dict:
    """Interleaved boots of several VM backends: each round boots every one of
    them once, in a fresh random order, so load drift on a shared host spreads
    over all of them instead of biasing whichever was timed last.  Same
    ``run()`` and timing points as the pyperf workers.  Gives the medians and,
    when both are there, libvirt over raw QEMU on the same machine type."""
    import random
    import statistics

    from . import get
    vals = {n: {"ready": [], "lifecycle": []} for n in names}
    for _ in range(rounds):
        order = list(names)
        random.shuffle(order)
        for n in order:
            t = get(n).run(["ready"], timeout=timeout)
            if t.rc != 0 or t.ready_s is None or t.gone_s is None:
                raise InstanceFailed(n, f"interleaved boot ended with rc={t.rc}", t.console)
            vals[n]["ready"].append(t.ready_s)
            vals[n]["lifecycle"].append(t.gone_s)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in vals.items()}
    out = {"rounds": rounds, "order": "random per round", "values_s": vals, "median_s": med}
    if "libvirt" in med and "qemu" in med:
        out["libvirt_over_qemu"] = {k: med["libvirt"][k] / med["qemu"][k] for k in ("ready", "lifecycle")}
    return out
