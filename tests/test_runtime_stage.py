"""The C stage (runtime/stage/stage.c) must start a process exactly as the
Python child does for the plans it takes: same session, groups, ids, cwd,
umask, signal dispositions and mask, fds.  Both paths run the same probe
script here, from a parent that ignores and blocks signals, holds extra
groups and leaks an fd without close-on-exec, and the outputs must match."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.paths import ROOT
from runtime import stage

SCRIPT = r"""
import json, os, signal, sys
from runtime import Isolation, spawn, stage
os.setgroups([1234, 4321])
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM})
leak = os.open("/dev/null", os.O_RDONLY)
os.set_inheritable(leak, True)
bundle, use_stage = sys.argv[1], sys.argv[2] == "c"
if not use_stage:
    stage.binary = lambda: None
cmd = ("grep -E '^(SigIgn|SigBlk|Groups|Uid|Gid|NoNewPrivs|CapBnd|CapEff)' /proc/self/status; "
       "umask; pwd; ls /proc/self/fd | sort -n | tr '\n' ' '; echo; "
       "read -r stat < /proc/self/stat; set -- $stat; echo sid_is_self=$([ $1 = $6 ] && echo yes)")
with spawn(bundle, ["/bin/sh", "-c", cmd], Isolation.bare()) as c:
    out = c.stdout.read().decode()
    rc = c.wait()
print(json.dumps({"stage": c.stage, "rc": rc, "out": out}))
"""


@pytest.fixture(scope="module")
def built():
    return stage.build()


def _run(bundle: str, which: str) -> dict:
    r = subprocess.run([sys.executable, "-c", SCRIPT, bundle, which], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_stage_starts_a_process_exactly_as_the_python_child(root, image, built):
    c, py = _run(image.bundle, "c"), _run(image.bundle, "python")
    assert (c["stage"], py["stage"]) == ("c", "python")
    assert c["rc"] == py["rc"] == 0
    assert c["out"] == py["out"]
    lines = dict(line.split(":", 1) for line in c["out"].splitlines() if ":" in line)
    assert lines["SigIgn"].strip() == "0000000000000000"
    assert lines["SigBlk"].strip() == "0000000000000000"
    assert lines["Groups"].strip() == ""
    assert "sid_is_self=yes" in c["out"]
    assert "0 1 2 3 " in c["out"] and " 4 " not in c["out"]  # 3 is ls's own directory fd


def test_stage_reports_a_missing_cwd_like_the_python_child(root, image, built, tmp_path):
    from common.errors import CvbError
    from runtime import Isolation, spawn
    from runtime.spec import default_spec
    cfg = default_spec(["/probe", "ready"], root=image.rootfs)
    cfg["process"]["cwd"] = "/does/not/exist"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CvbError, match=r"No such file or directory: '.*/does/not/exist'"):
        spawn(tmp_path, iso=Isolation.bare())


def test_only_plans_without_child_work_take_the_stage(root, image, built):
    from runtime import Isolation, spawn
    with spawn(image.bundle, ["/probe", "ready"], Isolation.bare()) as c:
        assert c.stdout.readline().startswith(b"CVB READY")
        assert c.stage == "c"
    for iso in (Isolation.only("pidns"), Isolation.only("caps"), Isolation.only("cgroup"),
                Isolation.only("no_new_privs"), Isolation.only("seccomp"), Isolation.full()):
        with spawn(image.bundle, ["/probe", "ready"], iso) as c:
            assert c.stdout.readline().startswith(b"CVB READY")
            assert c.stage == "python", iso
