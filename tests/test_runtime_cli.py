"""`python -m runtime`, the runc-like CLI, as a user runs it: exit status
passed through, signals forwarded, the create/start/state/kill/delete cycle,
spec, list, isolation flags, and one-line errors with exit 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common.paths import ROOT
from runtime import cli, state
from runtime.spec import default_spec


def rt(*args, timeout=60, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=ROOT, stdout=stdout,
                          stderr=stderr, text=True, timeout=timeout)


def cid(tag: str) -> str:
    return f"cvbench-cli-{os.getpid()}-{tag}"


def test_run_prints_probe_output_and_exits_0(root, image):
    r = rt("run", "-b", image.bundle, cid("ok"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "CVB READY\nCVB DONE rc=0\n"
    assert state.read(cid("ok")) is None


def test_run_passes_the_exit_status_through(root, image):
    r = rt("run", "-b", image.bundle, cid("rc"), "--", "/bin/sh", "-c", "exit 7")
    assert r.returncode == 7


def test_run_forwards_sigterm_and_cleans_up(root, image):
    p = subprocess.Popen([sys.executable, "-m", "runtime", "run", "-b", image.bundle, cid("sig"),
                          "--", "/probe", "sleep", "-1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "CVB READY\n"
        # The probe installs its SIGTERM handler after READY; as pid 1 it would
        # drop an earlier SIGTERM.  This line comes after the handler.
        assert p.stdout.readline() == "CVB sleeping s=-1\n"
        for _ in range(100):  # the CLI records the pid right after the exec
            rec = state.read(cid("sig"))
            if rec and rec.get("pid"):
                break
            time.sleep(0.02)
        assert rec and rec["pid"] and state.alive(rec["pid"], rec["pid_start"])
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=20)
    finally:
        p.kill()
    assert rc == 143  # the probe's SIGTERM handler exits 143; the CLI passes it through
    assert p.stdout.read() == "CVB DONE rc=143\n"
    assert not state.alive(rec["pid"], rec["pid_start"])
    assert state.read(cid("sig")) is None
    assert not any(os.path.exists(d) for d in rec["cgroups"])


def test_create_start_state_kill_delete(root, image, tmp_path):
    c = cid("life")
    # like runc, a created container keeps the CLI's stdio: give it files, not pipes
    with open(tmp_path / "out", "w") as out:
        r = rt("create", "-b", image.bundle, c, "--", "/bin/sh", "-c", "echo started; sleep 30",
               stdout=out, stderr=out)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    try:
        st = json.loads(rt("state", c).stdout)
        assert st["status"] == "created" and st["pid"] > 0 and st["id"] == c
        assert st["bundle"] == image.bundle and st["ociVersion"]
        assert c in [x["id"] for x in json.loads(rt("list", "--json").stdout)]
        assert rt("start", c).returncode == 0
        assert json.loads(rt("state", c).stdout)["status"] == "running"
        for _ in range(100):
            if "started" in (tmp_path / "out").read_text():
                break
            time.sleep(0.02)
        assert (tmp_path / "out").read_text().endswith("started\n")
        r = rt("delete", c)
        assert r.returncode == 1 and "is running" in r.stderr
        assert rt("kill", c, "KILL").returncode == 0
        for _ in range(100):
            if json.loads(rt("state", c).stdout)["status"] == "stopped":
                break
            time.sleep(0.05)
        assert json.loads(rt("state", c).stdout)["status"] == "stopped"
        assert rt("delete", c).returncode == 0
        r = rt("state", c)
        assert r.returncode == 1 and "does not exist" in r.stderr
    finally:
        rt("delete", "--force", c)


def test_delete_force_kills_a_running_container(root, image):
    c = cid("force")
    assert rt("create", "-b", image.bundle, c, "--", "/probe", "sleep", "-1",
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    rec = state.read(c)
    assert rt("start", c).returncode == 0
    assert rt("delete", "--force", c).returncode == 0
    time.sleep(0.1)
    assert not state.alive(rec["pid"], rec["pid_start"])
    assert not any(os.path.exists(d) for d in rec["cgroups"])


def test_isolation_flags(root, image):
    r = rt("run", "-b", image.bundle, cid("flags"), "--isolation", "bare", "--with", "utsns",
           "--", "/bin/hostname")
    assert r.returncode == 0 and r.stdout == "cvbench\n", r.stderr
    r = rt("run", "-b", image.bundle, cid("flags2"), "--without", "pidns", "--", "/bin/sh", "-c", "echo $$")
    assert r.returncode == 0 and r.stdout.strip() != "1"
    r = rt("run", "-b", image.bundle, cid("flags3"), "--isolation", "only:cgroup", "--pids-max", "7",
           "--", "/bin/sh", "-c", "cat /proc/self/cgroup")
    assert r.returncode == 0 and f"cvbench/{cid('flags3')}" in r.stdout


@pytest.mark.parametrize("args,what", [
    (["run", "-b", "/nonexistent", "x"], "config.json does not exist"),
    (["run", "--isolation", "only:wings", "x"], "unknown mechanism"),
    (["run", "--with", "wings", "x"], "unknown mechanism"),
    (["run", "-b", ".", "bad/id"], "is not valid"),
    (["kill", "x", "SIGNOPE"], "unknown signal"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(root, image, args, what):
    r = rt(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("cvbench: ") and r.stderr.count("\n") == 1 and what in r.stderr, r.stderr


def test_spec_writes_the_default_config(tmp_path):
    assert rt("spec", "-b", str(tmp_path)).returncode == 0
    assert json.loads((tmp_path / "config.json").read_text()) == default_spec()
    r = rt("spec", "-b", str(tmp_path))
    assert r.returncode == 2 and "already exists" in r.stderr


def test_non_root_gets_a_clear_error(image):
    """A real unprivileged process (forked, setuid to nobody) runs the CLI's main."""
    import locale  # noqa: F401 - argparse needs it; nobody cannot read this Python's stdlib
    cli._parser().format_help()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sys.stderr = open(w, "w")  # pytest has replaced sys.stderr
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            from common.errors import run_cli
            rc = run_cli(cli.main, ["run", "-b", image.bundle, "x"])
            sys.stderr.flush()
            os._exit(rc)
        except BaseException:  # noqa: BLE001
            os._exit(99)
    os.close(w)
    with open(r, "rb") as f:
        err = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, err
    assert err.startswith("cvbench: python -m runtime run: needs root"), err


def test_features_reports_lsm_honestly():
    r = rt("features", "--json")
    info = json.loads(r.stdout)
    assert info["cgroup_version"] in ("v1", "v2", "hybrid")
    for lsm in ("apparmor", "selinux"):
        assert isinstance(info["lsm"][lsm]["available"], bool) and info["lsm"][lsm]["reason"]
    aa = os.path.exists("/sys/module/apparmor/parameters/enabled") and \
        open("/sys/module/apparmor/parameters/enabled").read().strip() == "Y"
    assert info["lsm"]["apparmor"]["available"] == aa


def test_sweep_runs(root):
    r = rt("sweep")
    assert r.returncode == 0, r.stderr
