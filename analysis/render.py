"""``charts``: every chart a run has data for, then the report that embeds them."""
from __future__ import annotations

import os
from pathlib import Path

from . import charts, disk_charts, ladder, network_charts, report
from .load import Run, load_run
from .strength_charts import CHARTS as STRENGTH_CHARTS

ALL = charts.CHARTS + ladder.CHARTS + disk_charts.CHARTS + STRENGTH_CHARTS + network_charts.CHARTS


def render(path: str | os.PathLike, style: str = "talk", out: str | os.PathLike | None = None,
           log=print) -> tuple[Run, list[Path], tuple[Path, Path]]:
    """Charts into RUN/charts/ (or ``out``/charts), report.md and report.html beside them."""
    run = load_run(path)
    folder = Path(out) if out else run.path
    written: list[Path] = []
    for chart in ALL:
        files = chart(run, style, folder / "charts")
        written += files
        for f in files:
            log(f"wrote {f}")
    if not written:
        log(f"no charts: {run.path} holds no rows this version knows how to draw "
            f"(scenarios: {', '.join(run.scenarios)})")
    md, html = report.write(run, written, folder)
    log(f"wrote {md}")
    log(f"wrote {html}")
    return run, written, (md, html)
