"""A VMM's memory from the host's side: PSS split into guest RAM and overhead.

Guest RAM is whatever the guest touched; it belongs to the workload, not to the
VMM.  Firecracker's memory-overhead test therefore leaves the guest-memory
mapping out and calls the rest overhead; this does the same.  QEMU allocates
each RAM block with one anonymous mmap of exactly the block's size, fenced by a
PROT_NONE guard page so it never merges with a neighbour, so the guest-RAM
mappings are the anonymous ones whose size is the guest's memory size.  If none
matches exactly (a split layout), the largest anonymous mappings that together
do not exceed the guest size are taken, and ``guest_ram_exact`` says so.

QEMU madvises guest RAM MADV_HUGEPAGE, so with THP on the host a guest that
touches one byte of a 2 MiB region is charged 2 MiB: an idle 128 MiB TCG guest
shows ~115 MiB of guest RAM, nearly all of it huge pages.  ``guest_ram_thp``
reports that part so a reader can tell THP granularity from guest use.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import VMError


@dataclass
class Mapping:
    start: int
    size: int
    path: str
    pss: int = 0
    rss: int = 0
    anon_huge: int = 0


def read_smaps(pid: int) -> list[Mapping]:
    maps: list[Mapping] = []
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):
                    parts = line.split(None, 5)
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    maps.append(Mapping(lo, hi - lo, parts[5].strip() if len(parts) > 5 else ""))
                elif head == "Pss:" and maps:
                    maps[-1].pss = int(line.split()[1]) * 1024
                elif head == "Rss:" and maps:
                    maps[-1].rss = int(line.split()[1]) * 1024
                elif head == "AnonHugePages:" and maps:
                    maps[-1].anon_huge = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        raise VMError("memory", f"process {pid} is gone", "call memory() while the guest runs") from None
    return maps


def guest_ram_mappings(maps: list[Mapping], guest_bytes: int) -> tuple[list[Mapping], bool]:
    anon = [m for m in maps if not m.path]
    exact = [m for m in anon if m.size == guest_bytes]
    if exact:
        return exact[:1], True
    chosen, total = [], 0
    for m in sorted(anon, key=lambda m: m.size, reverse=True):
        if total + m.size <= guest_bytes and m.size >= guest_bytes // 8:
            chosen.append(m)
            total += m.size
    return chosen, False


def qemu_memory(pids: list[int], guest_bytes: int) -> dict:
    """PSS of every VMM process, with the guest-RAM part of the QEMU process apart.

    ``pids[0]`` is the QEMU process; any others (helpers) count as overhead."""
    if not pids:
        raise VMError("memory", "no host process of the guest found", "is the guest running on this host?")
    total = rss = guest = huge = 0
    ranges: list[str] = []
    exact = True
    for i, pid in enumerate(pids):
        maps = read_smaps(pid)
        total += sum(m.pss for m in maps)
        rss += sum(m.rss for m in maps)
        if i == 0:
            ram, exact = guest_ram_mappings(maps, guest_bytes)
            guest = sum(m.pss for m in ram)
            huge = sum(m.anon_huge for m in ram)
            ranges = [f"{m.start:x}+{m.size:x}" for m in ram]
    return {"pss_total": total, "guest_ram": guest, "vmm_overhead": total - guest, "rss_total": rss,
            "guest_ram_size": guest_bytes, "guest_ram_thp": huge, "guest_ram_mappings": ranges, "guest_ram_exact": exact,
            "pids": list(pids)}
