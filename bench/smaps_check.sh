#!/bin/sh
# sh bench/smaps_check.sh PID...: an instance's PSS, read independently.
#
# The memory scenario runs this as a separate process while an instance is
# live and compares its sum with the harness's own PSS reading (bench/memory.py):
# a second reader of /proc/PID/smaps_rollup, with its own parser, catches a
# harness that lost a process or misread a field.  It is awk, not Python, on
# purpose: a Python checker maps libpython too, and while it runs, an instance
# whose supervisor is a Python process (builtin-cli) would share those pages
# with one more process and read up to 5% lower than the harness.
# Prints one JSON object: per-pid Pss/Rss in bytes, their sums, missing pids.
usage() {
    echo "cvbench: smaps_check: give the instance's host pids; e.g. sh bench/smaps_check.sh 123 456" >&2
    exit 2
}
[ $# -gt 0 ] || usage
for p in "$@"; do
    case "$p" in ''|*[!0-9]*) usage ;; esac
done
exec awk -v pids="$*" 'BEGIN {
    n = split(pids, p, " "); tp = 0; tr = 0; per = ""; miss = ""
    for (i = 1; i <= n; i++) {
        f = "/proc/" p[i] "/smaps_rollup"; pss = -1; rss = 0
        while ((r = (getline line < f)) > 0) {
            split(line, a, " ")
            if (a[1] == "Pss:") pss = a[2] * 1024
            if (a[1] == "Rss:") rss = a[2] * 1024
        }
        close(f)
        if (pss < 0) { miss = miss (miss == "" ? "" : ", ") p[i]; continue }
        tp += pss; tr += rss
        per = per (per == "" ? "" : ", ") sprintf("\"%s\": {\"pss\": %.0f, \"rss\": %.0f}", p[i], pss, rss)
    }
    printf "{\"pss\": %.0f, \"rss\": %.0f, \"per_pid\": {%s}, \"missing\": [%s]}\n", tp, tr, per, miss
}'
