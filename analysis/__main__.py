"""``python -m analysis``: charts, report, compare, history, calibrate, ci-bench, baseline."""
import sys

from common.errors import run_cli

from .cli import main

sys.exit(run_cli(main))
