"""A run interrupted in the middle (SIGINT, SIGTERM) writes no partial results,
keeps the runs it already finished, and leaks no instance."""
from __future__ import annotations

import glob
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import backends
from bench.backends import oci
from common import owner

ROOT = Path(__file__).resolve().parent.parent


def ours_alive() -> list[str]:
    """Every bench-made container, cgroup, bundle or host probe that exists now and
    whose owner is dead: a leak.  (Objects of concurrent live runs have live owners.)"""
    def dead(pid) -> bool:
        return pid is not None and not owner.alive(pid)
    found = []
    for rt in ("crun", "runc", "runsc"):
        if backends.get(rt).path:
            found += [f"{rt}:{c}" for c in backends.get(rt).list_ids() if dead(oci.owner_pid(c))]
    found += [d for d in glob.glob("/sys/fs/cgroup/*/cvbench-b*") if dead(oci.owner_pid(Path(d).name))]
    found += [d for d in glob.glob(str(oci.state_root("x").parent / "bundles" / "cvbench-b*"))
              if dead(oci.owner_pid(Path(d).name))]
    for p in glob.glob("/proc/[0-9]*/environ"):
        try:
            env = Path(p).read_bytes().split(b"\0")
        except OSError:
            continue
        tag = [e.split(b"=", 1)[1] for e in env if e.startswith(b"CVBENCH_OWNER=")]
        if tag and tag[0].isdigit() and dead(int(tag[0])):
            found.append(p)
    return found


def start_run(out: Path, scenario: str, backends_csv: str):
    return subprocess.Popen([sys.executable, "-m", "bench", "run", scenario, "--backends", backends_csv,
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(proc, needle: str, timeout: float = 120) -> str:
    seen = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"never saw {needle!r}:\n{seen}")


@pytest.mark.slow
@pytest.mark.parametrize("sig,scenario,backend,needle,pause", [
    (signal.SIGINT, "startup", "runc", "runc: ready+lifecycle", 1.5),   # inside pyperf workers
    (signal.SIGTERM, "memory", "runc", "runc/density: instance 3/8", 0),  # live instances in the harness
])
def test_interrupt_mid_run_leaves_nothing(root, image, tmp_path, sig, scenario, backend, needle, pause):
    ok, why = backends.get(backend).available()
    if not ok:
        pytest.skip(why)
    before = set(ours_alive())
    # a finished earlier run must survive the interrupted one
    done = subprocess.run([sys.executable, "-m", "bench", "run", "startup", "--backends", "host",
                           "--quick", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    finished = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(finished) == 1

    proc = start_run(tmp_path, scenario, backend)
    try:
        wait_for(proc, needle)
        time.sleep(pause)   # well inside the measuring of that backend
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 128 + sig), err
    assert "interrupted" in err
    # no partial folder, no staging leftovers; the earlier run and latest are intact
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == finished
    assert (tmp_path / "latest").resolve().name == finished[0]
    # nothing leaked (allow a moment for the runtime's own teardown)
    end = time.monotonic() + 15
    while time.monotonic() < end and set(ours_alive()) - before:
        time.sleep(0.2)
    assert not set(ours_alive()) - before
