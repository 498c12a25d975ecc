"""The I/O flavour of the guest initramfs, used only by the disk and network
scenarios' VMs.

It is the shared image's initramfs, byte for byte, followed by a second cpio
segment (the kernel unpacks concatenated archives in order, a later file
replacing an earlier one) that adds the virtio modules bench.kernel kept and
replaces /init with IO_INIT.  So the startup and memory guests keep booting
exactly the image's initramfs (same bytes, same hash), and the I/O guests run
the same busybox and probe from it.

IO_INIT reads ``cvbench.*`` words from the kernel command line (before `` -- ``):

- ``cvbench.modules=a,b``   insmod these, in this order (bench.kernel.load_order)
- ``cvbench.ip=ADDR/LEN``   configure eth0 (busybox ip), ``cvbench.mtu=N``
- ``cvbench.root=/dev/vda`` mount that ext4 read-only as the root to chroot into
- ``cvbench.data=blk:/dev/vdb`` or ``virtiofs:TAG``: mounted at /data in that root

Then the words after `` -- ``: ``serve`` reads commands from the serial
console (``drop``: sync and drop the guest's page cache; ``run ARGS``: run
ARGS, chrooted into the root if there is one, its output between ``CVBIO begin`` and ``CVBIO end rc=N``;
``quit``), anything else is the probe's argv, as in the image's /init.
"""
from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import stat
import time
from pathlib import Path

from common.errors import CvbError
from common.paths import build_dir

from . import cpio, kernel

MOD_DIR = "lib/modules/cvbench"

IO_INIT = """#!/bin/sh
# /init of the I/O guests (bench/guest_io.py): the image's /init plus modules,
# a NIC, a chroot root and a data mount, as the kernel command line asks.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
read -r cmdline < /proc/cmdline
fail() { echo "CVB error=$1"; echo "CVB DONE rc=1"; poweroff -f; reboot -f; }
waitdev() { n=0; while [ ! -e "$1" ]; do n=$((n+1)); [ $n -gt 500 ] && fail "no-$1"; sleep 0.01; done; }
ip= mtu= root= data=
for w in ${cmdline%% -- *}; do
  case $w in
    cvbench.modules=*) for m in $(echo "${w#*=}" | tr , ' '); do
                         insmod /lib/modules/cvbench/$m.ko || fail "insmod-$m"; done ;;
    cvbench.ip=*) ip=${w#*=} ;;
    cvbench.mtu=*) mtu=${w#*=} ;;
    cvbench.root=*) root=${w#*=} ;;
    cvbench.data=*) data=${w#*=} ;;
  esac
done
case "$cmdline" in
  *" -- "*) args=${cmdline#* -- } ;;
  *) args=ready ;;
esac
if [ -n "$ip" ]; then
  waitdev /sys/class/net/eth0
  ip link set lo up
  [ -n "$mtu" ] && { ip link set eth0 mtu "$mtu" || fail mtu; }
  ip addr add "$ip" dev eth0 || fail ip
  ip link set eth0 up || fail link
fi
if [ -n "$root" ]; then
  waitdev "$root"
  mkdir -p /newroot
  mount -t ext4 -o ro "$root" /newroot || fail mount-root
  case $data in
    blk:*) waitdev "${data#blk:}"; mount -t ext4 "${data#blk:}" /newroot/data || fail mount-data ;;
    virtiofs:*) mount -t virtiofs "${data#virtiofs:}" /newroot/data || fail mount-data ;;
  esac
  mount -t proc proc /newroot/proc
  mount -o bind /dev /newroot/dev
  mount -t tmpfs tmpfs /newroot/tmp
  # Debian's fio maps libceph-common with a 130 MiB .bss it never touches:
  # the heuristic overcommit refuses that in a 128 MiB guest, "always" maps it.
  echo 1 > /proc/sys/vm/overcommit_memory
fi
# what every process of a run is blocked in (state, wchan, kernel stack) and
# the virtio interrupt counts: printed by the watch of a run that overruns
dumpstate() {
  for d in /proc/[0-9]*; do
    read -r c < $d/comm 2>/dev/null || continue
    case $c in fio|env|chroot) ;; *) continue ;; esac
    echo "CVBIO hang pid=${d#/proc/} comm=$c $(grep '^State:' $d/status | tr -s '\\t ' ' ')" \\
         "wchan=$(cat $d/wchan) stack=$(sed 's/^[^]]*] //; s/+.*//' $d/stack 2>/dev/null | tr '\\n' ,)"
  done
  echo "CVBIO hang irq=$(grep virtio /proc/interrupts | tr -s ' ' | tr '\\n' '|')"
}
watch=0
if [ "$args" = serve ]; then
  stty -echo 2>/dev/null
  echo "CVB READY"
  while read -r cmd rest; do
    case $cmd in
      drop) sync; echo "${rest:-3}" > /proc/sys/vm/drop_caches; echo "CVBIO dropped" ;;
      watch) watch=$rest; echo "CVBIO watching $watch" ;;
      run) echo "CVBIO begin"
           if [ -n "$root" ]; then chroot /newroot /usr/bin/env $rest 2>/tmp/err & else env $rest 2>/tmp/err & fi
           pid=$! wd=
           if [ "$watch" -gt 0 ]; then { sleep "$watch"; dumpstate; } & wd=$!; fi
           wait $pid
           rc=$?
           [ -n "$wd" ] && kill $wd 2>/dev/null
           [ $rc -ne 0 ] && tail -c 400 /tmp/err; echo "CVBIO end rc=$rc" ;;
      quit) break ;;
    esac
  done
  sync
  echo "CVB DONE rc=0"
else
  /probe $args
fi
poweroff -f
reboot -f
"""


def _segment_tree(tree: Path, mods: Path) -> None:
    (tree / MOD_DIR).mkdir(parents=True)
    for ko in sorted(mods.glob("*.ko")):
        shutil.copy2(ko, tree / MOD_DIR / ko.name)
    (tree / "init").write_text(IO_INIT)
    os.chmod(tree / "init", 0o755)


def _digest(base: Path, mods: Path) -> str:
    h = hashlib.sha256()
    for part in (base.read_bytes(), IO_INIT.encode(), Path(__file__).read_bytes(),
                 Path(cpio.__file__).read_bytes(), *(ko.read_bytes() for ko in sorted(mods.glob("*")))):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def initramfs(img) -> Path:
    """The I/O initramfs for ``img`` (bench.image.Image): built once per input."""
    base = Path(img.initramfs)
    mods = kernel.modules_dir(Path(img.kernel))
    out = build_dir() / "image-io" / _digest(base, mods)
    final = out / "initramfs-io.cpio"
    if final.is_file():
        return final
    staging = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tree = staging / "tree"
        _segment_tree(tree, mods)
        cpio.write(tree, staging / "segment.cpio")
        with open(staging / "initramfs-io.cpio", "wb") as f:
            f.write(base.read_bytes())
            f.write((staging / "segment.cpio").read_bytes())
        shutil.rmtree(tree)
        (staging / "segment.cpio").unlink()
        for p in (staging, staging / "initramfs-io.cpio"):   # libvirt's qemu user reads it
            os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
        out.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(out.parent, 0o755)
        staging.rename(out)   # atomic: ``out`` only ever exists complete
    except OSError:
        if not final.is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def cmdline(img, modules: list[str], **words: str) -> str:
    """The ``cvbench.*`` words for ``modules`` (dependencies added, in load
    order) and e.g. ``root='/dev/vda'``, ``data='blk:/dev/vdb'``, ``ip=...``."""
    order = kernel.load_order(kernel.modules_dir(Path(img.kernel)), modules)
    parts = [f"cvbench.modules={','.join(order)}"] if order else []
    parts += [f"cvbench.{k}={v}" for k, v in words.items() if v]
    return " ".join(parts)


class GuestTimeout(CvbError):
    """A guest command that did not finish in time.  ``hang`` holds the guest's
    own account of it: the ``CVBIO hang`` lines its watch printed (what each
    process of the run was blocked in, the virtio interrupt counts)."""

    def __init__(self, what: str, why: str, hang: list[str]):
        super().__init__(what, why, "see the console", status=1)
        self.hang = hang


class GuestShell:
    """The host side of IO_INIT's ``serve`` loop: commands typed into the
    guest's serial console, their output read back line by line."""

    END = re.compile(r"^CVBIO end rc=(\d+)")
    HANG = "CVBIO hang "

    def __init__(self, vm, what: str):
        self.vm = vm
        self.what = what
        self._lines: queue.Queue[str] = queue.Queue()
        self._watch = 0
        self.hang: list[str] = []   # the last run's watch lines (it overran its watch)
        vm.console.listeners.append(self._lines.put)

    def _command(self, line: str, until: re.Pattern, timeout: float) -> list[str]:
        while not self._lines.empty():
            self._lines.get_nowait()
        self.vm.console.send(line.encode() + b"\n")
        got, end = [], time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or (self.vm.console.eof.is_set() and self._lines.empty()):
                why = f"timed out after {timeout:g} s" if left <= 0 else "the guest exited"
                raise GuestTimeout(self.what, f"{why} running {line.split()[:3]} in the guest; console: "
                                   f"{self.vm.console.tail(5)!r}", [g for g in got if g.startswith(self.HANG)])
            try:
                ln = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            got.append(ln)
            if until.search(ln):
                return got

    def drop_caches(self, level: int = 3, timeout: float = 60) -> None:
        """sync, then ``echo LEVEL > /proc/sys/vm/drop_caches`` in the guest."""
        self._command(f"drop {level}", re.compile(r"^CVBIO dropped"), timeout)

    def run(self, argv: list[str], timeout: float, watch: float = 0) -> tuple[int, str]:
        """Run ``argv`` (words without blanks: env assignments first) in the
        guest; its exit status and its output (stdout; stderr's tail on failure).
        ``watch``: after that many seconds the guest prints what the run's
        processes are blocked in (``self.hang``; GuestTimeout.hang on a timeout)."""
        if int(watch) != self._watch:
            self._command(f"watch {int(watch)}", re.compile(r"^CVBIO watching"), 30)
            self._watch = int(watch)
        lines = self._command("run " + " ".join(argv), self.END, timeout)
        rc = int(self.END.search(lines[-1]).group(1))
        begin = next((i for i, ln in enumerate(lines) if ln.startswith("CVBIO begin")), -1)
        body = lines[begin + 1:-1]
        self.hang = [ln for ln in body if ln.startswith(self.HANG)]
        return rc, "\n".join(ln for ln in body if not ln.startswith(self.HANG))

    def quit(self, timeout: float = 15) -> None:
        """Ask the guest to power off and wait for its VMM to go (best effort:
        the caller's stop() destroys it anyway)."""
        try:
            if not self.vm._gone():
                self.vm.console.send(b"quit\n")
                self.vm._wait_gone(timeout)
        except OSError:
            pass
