"""Subcommands of ``python -m analysis``.

Exit status follows docs/architecture.md: 0 ok (or no regression), 1 a regression was
found, 2 bad input (missing or damaged files, runs that cannot be compared).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import CvbError
from common.paths import results_dir

from . import stats

STRICT_HELP = "exit 1 when a cross-check is outside its tolerance (±10%%; network ±15%%)"


def _prob(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1 (e.g. 0.01)")
    return v


def _fraction(text: str) -> float:
    """5% or 0.05."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or percentage") from None
    if not 0 <= v < 10:
        raise argparse.ArgumentTypeError(f"{text} is out of range (give e.g. 5% or 0.05)")
    return v


def _gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=_prob, default=stats.ALPHA,
                   help=f"significance level a change must beat (default {stats.ALPHA})")
    p.add_argument("--threshold", type=_fraction, default=stats.THRESHOLD,
                   help=f"smallest relative change that counts, e.g. 5%% or 0.05 (default {stats.THRESHOLD:.0%})")
    p.add_argument("--test", choices=stats.TESTS, default="permutation",
                   help="permutation test swapping whole worker processes, on the log ratio of medians "
                        "(default), or Mann-Whitney U on per-process medians")
    p.add_argument("--adjust", choices=("holm", "none"), default="holm",
                   help="multiple-comparison correction of p over the metrics of one comparison (default holm)")
    p.add_argument("--markdown", metavar="FILE", help="also write the verdict as Markdown (for a CI comment)")
    _calibration_option(p)


def _calibration_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", metavar="FILE|none", default="auto",
                   help="run-to-run drift measured by 'calibrate' (default: results/baselines/calibration/<host-class>.json "
                        "if it exists; 'none' judges on the within-run test alone)")


def _drift(a):
    if a.calibration == "auto":
        return "auto"
    if a.calibration == "none":
        return None
    from . import calibrate
    return calibrate.read(a.calibration)


def _latest(path):
    return path if path else results_dir() / "latest"


def cmd_charts(a) -> int:
    from .render import render
    render(_latest(a.run), a.style, a.out)
    return _strict(a)


def _strict(a) -> int:
    """--strict: exit 1 when the run's own cross-checks (hyperfine, perf bench) are off by >10%."""
    if not getattr(a, "strict", False):
        return 0
    from . import report
    from .load import load_run
    return report.strict_status(load_run(_latest(a.run)))


def cmd_report(a) -> int:
    from . import report
    from .load import load_run
    run = load_run(_latest(a.run))
    charts_dir = Path(a.out or run.path) / "charts"
    pngs = sorted(charts_dir.glob("*.png")) if charts_dir.is_dir() else []
    for f in report.write(run, pngs, Path(a.out) if a.out else None):
        print(f"wrote {f}")
    return _strict(a)


def cmd_compare(a) -> int:
    from . import compare
    results = compare.run(a.base, _latest(a.new), markdown_path=a.markdown, alpha=a.alpha, threshold=a.threshold,
                          test=a.test, force=a.force, adjust=a.adjust, as_json_out=a.json, drift=_drift(a))
    return max(r.exit_status for r in results)


def cmd_history(a) -> int:
    from . import history
    table, files = history.history(a.runs or None, a.metric, scenario=a.scenario, backend=a.backend,
                                   variant=a.variant, by=a.by, st=a.style, out=a.out,
                                   alpha=a.alpha, threshold=a.threshold, drift=_drift(a))
    print(history.format_table(table))
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_calibrate(a) -> int:
    from . import calibrate
    calibrate.run(a.runs, save_to=a.out, no_save=a.no_save, as_json=a.json, shift=a.shift, alpha=a.alpha,
                  threshold=a.threshold, test=a.test)
    return 0


def cmd_ci_bench(a) -> int:
    from . import baseline
    scenarios = [s for s in a.scenarios.split(",") if s]
    return baseline.ci_bench(backends=a.backends, scenarios=scenarios, folder=a.baselines,
                             runs_dir=a.runs_dir, markdown_path=a.markdown, save_missing=a.save_missing,
                             alpha=a.alpha, threshold=a.threshold, test=a.test, record=a.record,
                             adjust=a.adjust, drift=_drift(a))


def cmd_baseline(a) -> int:
    from . import baseline
    if a.action == "save":
        if not a.runs:
            raise CvbError("baseline save", "no run given", "python -m analysis baseline save RUN [RUN...]")
        baseline.save(a.runs, a.baselines)
    else:
        lines = baseline.listing(a.baselines)
        print("\n".join(lines) if lines else f"no baselines under {a.baselines or baseline.baselines_dir()}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in the one cvbench error shape, exit 2."""

    def error(self, message):
        raise CvbError(self.prog, message, f"see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m analysis",
                                description="cvbench analysis: charts, reports and the regression gate")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("charts", help="charts (PNG+SVG) and report.md/report.html for one run")
    s.add_argument("run", nargs="?", default=None, help="run folder (default results/latest)")
    s.add_argument("--style", choices=("talk", "paper"), default="talk",
                   help="talk: 16:9 slide, large type (default); paper: column width, 300 dpi")
    s.add_argument("--out", help="write charts/ and the report here instead of into the run folder")
    s.add_argument("--strict", action="store_true", help=STRICT_HELP)
    s.set_defaults(func=cmd_charts)

    s = sub.add_parser("report", help="report.md and report.html from a run and its existing charts")
    s.add_argument("run", nargs="?", default=None, help="run folder (default results/latest)")
    s.add_argument("--out", help="folder holding charts/ and receiving the report (default: the run)")
    s.add_argument("--strict", action="store_true", help=STRICT_HELP)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="regression verdict: exit 1 on a regression")
    s.add_argument("base", help="baseline: a run folder or a results/baselines/<host-class>.json")
    s.add_argument("new", nargs="?", default=None, help="new run (default results/latest)")
    s.add_argument("--force", action="store_true", help="compare across accelerators or host classes anyway")
    s.add_argument("--json", action="store_true", help="machine-readable output instead of the table")
    _gate_options(s)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("history", help="one metric across many runs, step changes marked")
    s.add_argument("runs", nargs="*", help="run folders or results roots (default: every run under results/)")
    s.add_argument("--metric", required=True, help="e.g. ready, getppid, pss_total")
    s.add_argument("--scenario"), s.add_argument("--backend"), s.add_argument("--variant")
    s.add_argument("--by", choices=("date", "git"), default="date", help="x axis: run date or git revision")
    s.add_argument("--style", choices=("talk", "paper"), default="talk")
    s.add_argument("--out", help="folder for the chart (default results/history)")
    s.add_argument("--alpha", type=_prob, default=stats.ALPHA)
    s.add_argument("--threshold", type=_fraction, default=stats.THRESHOLD)
    _calibration_option(s)
    s.set_defaults(func=cmd_history)

    s = sub.add_parser(
        "calibrate", help="false alarms on real A/A runs and power for an injected shift; saves the drift",
        description="Judge consecutive runs of the same code as A/A pairs (a 'regression' between them is a "
                    "false alarm), and the same pairs with the second run's values times 1+SHIFT (power). "
                    "Each pair is judged with a drift model fitted on the other pairs. The drift of all pairs is "
                    "saved as results/baselines/calibration/<host-class>.json, which compare and history then use: a "
                    "change inside it is 'inconclusive'. Example: run 'python -m bench run startup --fast "
                    "--out /tmp/aa' 21 times, then 'python -m analysis calibrate /tmp/aa'.")
    s.add_argument("runs", nargs="+", help="run folders, or results roots holding runs/ (at least 4 runs)")
    s.add_argument("--shift", type=_fraction, default=0.05, help="injected slowdown for power (default 5%%)")
    s.add_argument("--alpha", type=_prob, default=stats.ALPHA)
    s.add_argument("--threshold", type=_fraction, default=stats.THRESHOLD)
    s.add_argument("--test", choices=stats.TESTS, default="permutation")
    s.add_argument("--out", type=Path, help="folder for the calibration file (default results/baselines/calibration)")
    s.add_argument("--no-save", action="store_true", help="measure only; keep the saved calibration")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("ci-bench", help="fast startup+syscall runs compared with results/baselines/<host-class>.json")
    s.add_argument("--backends", help="comma-separated backends to run (default: the harness's choice)")
    s.add_argument("--scenarios", default="startup,syscall", help="default startup,syscall")
    s.add_argument("--baselines", type=Path, help="baseline folder (default results/baselines)")
    s.add_argument("--runs-dir", type=Path, help="where the fast runs go (default results/ci)")
    s.add_argument("--save-missing", action="store_true",
                   help="no baseline for this host class yet: save this run as it and exit 0")
    s.add_argument("--record", type=int, default=0, metavar="N",
                   help="record the baseline instead: N runs of each scenario (3 gives a measured noise floor)")
    _gate_options(s)
    s.set_defaults(func=cmd_ci_bench)

    s = sub.add_parser("baseline", help="save runs as their host class's baseline, or list baselines")
    s.add_argument("action", choices=("save", "list"))
    s.add_argument("runs", nargs="*", help="run folders to save (save only)")
    s.add_argument("--baselines", type=Path, help="baseline folder (default results/baselines)")
    s.set_defaults(func=cmd_baseline)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    return args.func(args)
