"""Result folders into charts, reports and a regression verdict.

analysis reads files only (results/runs/<id>/ and results/baselines/): it never
imports bench/, runtime/ or vm_backend/, so it runs anywhere pandas and
matplotlib do, including on a laptop far from the machine that measured.
``ci-bench`` is the one exception: it starts the harness as a subprocess.
"""
