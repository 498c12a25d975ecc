"""The guest kernel command line, shared by the libvirt and raw QEMU backends.

The image's /init runs ``/probe`` with the words after `` -- `` and splits them
on blanks without any quoting, so an argument with a blank or a quote cannot
cross the command line intact: refuse it rather than run something else.

``BOOT_OPTS`` are the options that won the interleaved A/B boots of
``vm_backend.experiment`` (see the module docstring there for the figures).
"""
from __future__ import annotations

from common.errors import CvbError

# console=ttyS0: the probe's lines travel over the first UART.  quiet: printing
# the kernel log over an emulated UART costs more than 0.3 s under TCG.
# panic=-1: a guest that panics reboots at once, which on_reboot=destroy ends.
BASE_OPTS = "console=ttyS0 quiet panic=-1"

# Kept after interleaved A/B boots (vm_backend/experiment.py, 6 rounds, TCG):
# cryptomgr.notests skips the crypto self-tests, the largest initcall under TCG
# (crypto_algapi_init ~0.57 s): -0.46 s VMM CPU to READY (-15%).  The probe
# uses no kernel crypto.  tsc=reliable changed boot time by less than the noise
# (-0.8%) but keeps the guest on the TSC: under TCG the clocksource watchdog
# can judge it against emulated timers on a loaded host and switch to HPET or
# jiffies, which would change what clock_gettime measures mid-run.  Tried and
# not kept (within noise): edd=off, i8042.noaux i8042.nokbd, 8250.nr_uarts=1.
TUNED_OPTS = "cryptomgr.notests tsc=reliable"

BOOT_OPTS = f"{BASE_OPTS} {TUNED_OPTS}".strip()


def check_args(args: list[str]) -> list[str]:
    if not args:
        raise CvbError("vm args", "no probe arguments given", "pass e.g. ['ops', 'getppid'] or ['ready']")
    for a in args:
        a = str(a)
        if not a or any(c.isspace() or c in "\"'\\" for c in a) or a == "--":
            raise CvbError("vm args", f"probe argument {a!r} cannot cross the kernel command line",
                           "use words without blanks, quotes or backslashes")
    return [str(a) for a in args]


def kernel_cmdline(args: list[str], opts: str | None = None) -> str:
    """Boot options, then `` -- `` and the probe's argv for the image's /init."""
    return f"{BOOT_OPTS if opts is None else opts} -- {' '.join(check_args(args))}"
