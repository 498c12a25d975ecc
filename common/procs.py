"""Reading the process table from /proc, once for every package.

``/proc/PID/stat``'s second field (comm) may hold spaces and parentheses, so
every field is taken after the last ')'."""
from __future__ import annotations

import os


def stat_fields(pid: int | str) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def cpu_seconds(pid: int | str) -> float:
    """utime + stime so far (0.0 once the process is gone): the CPU a server
    or VMM the harness did not reap itself has used."""
    f = stat_fields(pid)
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK") if f else 0.0


def cmdlines():
    """(pid, argv as bytes) of every process still there, for sweeps that
    recognise their own processes by command line."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        yield int(name), argv


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, sorted (for PSS of a whole instance)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(name)
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def stop_process(p, grace: float = 5.0) -> None:
    """Ends a helper process (a subprocess.Popen) of ours: SIGTERM, so it can
    tidy up (slirp4netns and passt remove their sockets), then SIGKILL after
    grace seconds; always reaped."""
    import subprocess
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
