"""The CLI's argparse-free parse of a plain `run` (runtime/cli.py _fast_run)
must give exactly what argparse gives, and leave everything else to argparse."""
from __future__ import annotations

import pytest

from runtime import cli

SAME = [
    ["run", "x"],
    ["run", "-b", "/b", "x"],
    ["run", "--bundle", "/b", "x", "--isolation", "bare", "--with", "utsns", "--with", "pidns"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "run", "x", "-b", "b"],
    ["--systemd-cgroup", "run", "--without", "pidns", "x", "--network", "none"],
    ["run", "--pids-max", "7", "--memory", "1048576", "--cpu-quota", "5000", "--cpu-period", "100000",
     "--isolation", "only:cgroup", "x", "--pid-file", "/p", "--preserve-fds", "2", "--ignore-unsupported",
     "--no-pivot"],
    ["run", "-b", "a", "-b", "b", "x"],
]
ARGPARSE = [
    ["run"],                                  # no id: argparse reports it
    ["run", "x", "y"],                        # two ids
    ["run", "--bundle=/b", "x"],              # = form
    ["run", "--bund", "/b", "x"],             # an abbreviation argparse accepts
    ["run", "-b", "-x", "x"],                 # a value starting with "-"
    ["run", "--memory", "lots", "x"],         # not an int: argparse's error
    ["run", "--network", "wires", "x"],       # not a choice
    ["run", "-h"],
    ["run", "x", "--root", "/r"],             # a global flag after the command
    ["--root", "/a", "--root", "/b", "run", "x"],
    ["--log-format", "xml", "run", "x"],
    ["create", "x"],
    ["state", "x"],
]


def _argparse(argv):
    return vars(cli._parser(cli._command(argv)).parse_args(argv))


@pytest.mark.parametrize("argv", SAME, ids=[" ".join(a) for a in SAME])
def test_fast_parse_equals_argparse(argv):
    fast = cli._fast_run(argv)
    assert fast is not None
    assert vars(fast) == _argparse(argv)


@pytest.mark.parametrize("argv", ARGPARSE, ids=[" ".join(a) for a in ARGPARSE])
def test_anything_else_is_left_to_argparse(argv):
    assert cli._fast_run(argv) is None
