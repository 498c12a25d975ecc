"""``python bench/smaps_check.py PID...``: an instance's PSS, read independently.

The memory scenario runs this as a separate process while an instance is
live, and compares its sum with the harness's own PSS figure (bench.memory):
a second reader of /proc/PID/smaps_rollup, with its own parser and no cvbench
import, catches a harness that lost a process or misread a field.  Prints one
JSON object: per-pid Pss/Rss in bytes and their sums.  It is itself a Python
process: while it runs, an instance whose supervisor is a Python process
(builtin-cli) shares libpython's pages with one more process, so the PSS it
reads there is a few percent lower than the harness's (2.7% measured).
"""
from __future__ import annotations

import json
import sys


def rollup(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[0].endswith(":"):
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return fields


def main(argv: list[str]) -> int:
    if not argv or not all(a.isdigit() for a in argv):
        print("cvbench: smaps_check: give the instance's host pids; e.g. python bench/smaps_check.py 123 456",
              file=sys.stderr)
        return 2
    per, missing = {}, []
    for a in argv:
        try:
            r = rollup(int(a))
        except OSError:          # gone, or not ours to read
            missing.append(int(a))
            continue
        per[a] = {"pss": r.get("Pss", 0), "rss": r.get("Rss", 0)}
    print(json.dumps({"pss": sum(v["pss"] for v in per.values()),
                      "rss": sum(v["rss"] for v in per.values()), "per_pid": per, "missing": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
