"""report.md and a single-file report.html per run: environment, medians and
spreads, the charts, and the caveats a reader must see before quoting a number.

The HTML inlines every PNG as base64 so the one file can be mailed or attached
to a CI job and still show its charts.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from . import stats
from .charts import fmt_seconds
from .compare import fmt_value
from .load import KEY, Run

NOISY_CV = 0.10


def medians_table(run: Run) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and the keys whose spread is too wide to trust a small change."""
    order = run.backend_order()
    df = run.tidy.copy()
    df["_o"] = df["backend"].map(lambda b: order.index(b) if b in order else len(order))
    header = ["scenario", "metric", "backend", "variant", "n", "median", "95% CI", "IQR", "CV"]
    rows, noisy = [], []
    for key, g in df.sort_values(["scenario", "metric", "_o", "variant"]).groupby(KEY, sort=False):
        unit = g["unit"].iloc[0]
        s = stats.summarize(g["value"], g["process"])
        rows.append([*key, str(s["n"]), fmt_value(s["median"], unit),
                     stats.ci_text(s, lambda v, u=unit: fmt_value(v, u)),
                     f"{fmt_value(s['q1'], unit)} – {fmt_value(s['q3'], unit)}", f"{s['cv']:.1%}"])
        if s["cv"] > NOISY_CV:
            noisy.append(f"{'.'.join(k for k in key[1:] if k)} (CV {s['cv']:.0%})")
    return header, rows, noisy


TOLERANCE = 0.10   # the harness's own (bench/crosscheck.py); meta records it per check
SAME_CONFIG = ("builtin", "builtin-cli", "crun", "runc")   # one kernel, one bundle: same view inside


def _fmt_check(c: dict, v) -> str:
    if v is None:
        return "-"
    return fmt_value(v, "s") if c.get("unit") == "s" else f"{v:.4g} {c.get('unit', '')}"


def crosscheck_rows(meta: dict) -> list[list[str]]:
    """One row per independent cross-check recorded by the harness."""
    rows = []
    for c in meta.get("crosschecks") or []:
        tol = c.get("tolerance", TOLERANCE)
        verdict = ("not judged: " + str(c.get("error", "?"))[:120] if c.get("ratio") is None
                   else "ok" if c.get("within") else f"OUTSIDE ±{tol:.0%}")
        rows.append([c.get("check", "?"), c.get("backend", "?"), c.get("metric", "?"),
                     _fmt_check(c, c.get("harness")), _fmt_check(c, c.get("tool")),
                     "-" if c.get("ratio") is None else f"{c['ratio']:.3f}", verdict])
    return rows


def crosscheck_failures(meta: dict) -> list[str]:
    """Cross-checks outside tolerance or not judged, one line each (the caller
    of a ``--strict`` report exits 1 when this is not empty)."""
    out = []
    for c in meta.get("crosschecks") or []:
        what = f"{c.get('backend')} {c.get('metric')} against {c.get('check')}"
        if c.get("ratio") is None:
            out.append(f"cross-check not judged: {what} ({str(c.get('error', 'no value'))[:160]})")
        elif not c.get("within"):
            out.append(f"**cross-check outside ±{c.get('tolerance', TOLERANCE):.0%}**: {what}: harness "
                       f"{_fmt_check(c, c['harness'])} / tool {_fmt_check(c, c['tool'])} = {c['ratio']:.3f}×; "
                       "the harness's figure for this backend is not confirmed by an independent tool")
    return out


def strict_status(run: Run) -> int:
    """``--strict``: 1 (with one stderr line per check) when a cross-check of the
    run is outside tolerance or could not be judged, else 0."""
    import sys
    bad = crosscheck_failures(run.meta)
    for line in bad:
        print(f"cvbench: strict: {line.replace('**', '')}", file=sys.stderr)
    return 1 if bad else 0


def isolation_mismatch(meta: dict) -> str:
    """The observed isolation (from inside each instance) where backends that
    read the same bundle on the same kernel disagree; '' when they agree."""
    seen = {n: (info.get("observed") or {}) for n, info in (meta.get("backends") or {}).items()
            if n in SAME_CONFIG and isinstance(info, dict) and info.get("observed")}
    seen = {n: o for n, o in seen.items() if "error" not in o}
    if len(seen) < 2:
        return ""
    keys = sorted({k for o in seen.values() for k in o})
    diff = [k for k in keys if len({str(o.get(k)) for o in seen.values()}) > 1]
    if not diff:
        return ""
    return ("**the container backends did not get the same isolation** (seen from inside): "
            + "; ".join(f"{k}: " + ", ".join(f"{n}={o.get(k)}" for n, o in seen.items()) for k in diff))


def caveats(run: Run, noisy: list[str]) -> list[str]:
    env, meta = run.env, run.meta
    # First what makes a figure untrustworthy: failed cross-checks, unequal configs, gaps.
    out = crosscheck_failures(meta)
    mismatch = isolation_mismatch(meta)
    if mismatch:
        out.append(mismatch)
    for name, info in (meta.get("backends") or {}).items():
        if isinstance(info, dict) and info.get("failed"):
            out.append(f"**backend {name} failed during the run** and is missing from the charts: "
                       f"{str(info['failed'])[:300]}")
        if isinstance(info, dict) and "error" in (info.get("observed") or {}):
            out.append(f"the isolation backend {name} got could not be observed from inside: "
                       f"{str(info['observed']['error'])[:200]}")
    b = meta.get("bundle") or {}
    if b.get("short"):
        out.append(f"container backends read one config.json ({b.get('path', '?')}): {b['short']}; "
                   f"{b.get('source', '')}.")
    accel = env.get("accel") or {}
    if accel.get("name") == "tcg":
        out.append(f"VM numbers are **TCG emulation, not KVM** ({accel.get('reason', 'no reason recorded')}). "
                   "They are far slower than a KVM guest and must not be quoted as VM overhead.")
    elif accel.get("name") == "kvm":
        out.append("VMs ran under KVM.")
    if meta.get("mode") == "fast":
        out.append("fast mode: few values per benchmark; intervals are wide and small differences are noise.")
    if meta.get("synthetic"):
        out.append("**synthetic test data**, generated from controlled distributions: not a measurement.")
    for name, info in (meta.get("backends") or {}).items():
        if not info.get("available", True):
            out.append(f"backend {name} not measured: {info.get('reason') or 'not available'}.")
    for key, val in sorted(meta.items()):
        # The harness leaves its own caveats in meta.json (memory_notes, ladder_note, ...).
        if key.endswith(("_note", "_notes")) and val:
            items = val.items() if isinstance(val, dict) else [(None, val)]
            out += [f"harness: {k + ': ' if k else ''}{v}" for k, v in items]
    if noisy:
        out.append(f"noisy (coefficient of variation above {NOISY_CV:.0%}): " + ", ".join(noisy[:12])
                   + (f" and {len(noisy) - 12} more" if len(noisy) > 12 else "") + ".")
    out.append("Timings on a shared or virtualised machine drift between runs; compare runs with "
               "`python -m analysis compare`, which tests significance, rather than by eye.")
    return out


def environment(run: Run) -> list[tuple[str, str]]:
    env, meta = run.env, run.meta
    v = env.get("versions") or {}
    accel = env.get("accel") or {}
    mitig = env.get("mitigations") or {}
    return [
        ("run", run.label), ("scenario", str(meta.get("scenario", ""))), ("created (UTC)", str(meta.get("created_utc", ""))),
        ("mode", str(meta.get("mode", ""))), ("command", " ".join(map(str, meta.get("command", [])))),
        ("host", str(env.get("hostname", ""))), ("CPU", f"{env.get('cpu_model', '?')} ({env.get('cpu_count', '?')} cores)"),
        ("kernel", str(env.get("kernel", ""))), ("accelerator", f"{accel.get('name', '?')}: {accel.get('reason', '')}"),
        ("nested virtualization", str(env.get("nested_virt", "?"))), ("cgroup version", str(env.get("cgroup_version", "?"))),
        ("mitigations", "; ".join(f"{k}: {t}" for k, t in mitig.items()) or "?"),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items())),
    ]


def interleaved_section(meta: dict) -> list[str]:
    """The VM boots of one run once more, interleaved round by round: the
    libvirt / raw QEMU ratio free of the drift between sequential tasks."""
    iv = meta.get("vm_interleaved") or {}
    med = iv.get("median_s") or {}
    if not med:
        return []
    rows = [[b, fmt_seconds(v["ready"]), fmt_seconds(v["lifecycle"])] for b, v in med.items()]
    out = ["", f"## VM boots interleaved ({iv.get('rounds')} rounds, {iv.get('order', '')})", "",
           _md_table(["backend", "ready median", "lifecycle median"], rows)]
    r = iv.get("libvirt_over_qemu")
    if r:
        out += ["", f"libvirt / raw QEMU on the same machine type: ready {r['ready']:.3f}×, "
                    f"lifecycle {r['lifecycle']:.3f}× (lifecycle includes reaping QEMU after poweroff)."]
    return out


def _md_table(header, rows) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def write(run: Run, charts: list[Path], out: Path | None = None) -> tuple[Path, Path]:
    """report.md (charts linked) and report.html (charts inlined) into the run folder."""
    out = out or run.path
    header, rows, noisy = medians_table(run)
    pngs = [p for p in charts if p.suffix == ".png"]
    title = f"cvbench report: {run.label}"
    md = [f"# {title}", "", "## Caveats", ""] + [f"- {c}" for c in caveats(run, noisy)]
    checks = crosscheck_rows(run.meta)
    check_hdr = ["check", "backend", "metric", "harness", "tool", "ratio", "verdict"]
    if checks:
        md += ["", "## Cross-checks (independent tools, same run)", "", _md_table(check_hdr, checks)]
    md += interleaved_section(run.meta)
    md += ["", "## Environment", "", _md_table(["", ""], environment(run)), ""]
    md += ["## Medians and spreads", "", _md_table(header, rows), ""]
    from . import strength_charts
    strength_hdr, strength_rows = strength_charts.table(run)
    if strength_rows:
        md += ["## Strength: exposure profile per backend and rung", "", _md_table(strength_hdr, strength_rows), ""]
        md += [f"- {n}" for n in strength_charts.notes(run)] + [""]
    from . import disk_charts
    disk_hdr, disk_rows = disk_charts.table(run)
    if disk_rows:
        md += ["## Disk: fio per backing and job (medians)", "", _md_table(disk_hdr, disk_rows), ""]
    from . import network_charts
    net_hdr, net_rows = network_charts.table(run)
    if net_rows:
        md += ["## Network: per path (medians)", "", _md_table(net_hdr, net_rows), ""]
    md += ["## Charts", ""] + [f"![{p.stem}]({p.relative_to(out) if p.is_relative_to(out) else p})\n" for p in pngs]
    md_path = out / "report.md"
    _atomic(md_path, "\n".join(md) + "\n")

    def h_table(hdr, body):
        th = "".join(f"<th>{html.escape(str(c))}</th>" for c in hdr)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    def md_inline(text):
        t = html.escape(text)
        while t.count("**") >= 2:
            t = t.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
        while t.count("`") >= 2:
            t = t.replace("`", "<code>", 1).replace("`", "</code>", 1)
        return t

    imgs = "".join(f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.name)}</figcaption></figure>'
                   for p in pngs)
    body = (f"<h1>{html.escape(title)}</h1><h2>Caveats</h2><ul>"
            + "".join(f"<li>{md_inline(c)}</li>" for c in caveats(run, noisy))
            + "</ul>"
            + (f"<h2>Cross-checks (independent tools, same run)</h2>{h_table(check_hdr, checks)}" if checks else "")
            + f"<h2>Environment</h2>{h_table(['', ''], environment(run))}"
            + (f"<h2>Disk: fio per backing and job (medians)</h2>{h_table(disk_hdr, disk_rows)}" if disk_rows else "")
            + (f"<h2>Network: per path (medians)</h2>{h_table(net_hdr, net_rows)}" if net_rows else "")
            + (f"<h2>Strength: exposure profile per backend and rung</h2>{h_table(strength_hdr, strength_rows)}"
               + "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in strength_charts.notes(run)) + "</ul>"
               if strength_rows else "")
            + f"<h2>Medians and spreads</h2>{h_table(header, rows)}<h2>Charts</h2>{imgs}")
    css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;"
           "text-align:left}img{max-width:100%}figure{margin:2em 0}figcaption{color:#666;font-size:0.8em}")
    html_path = out / "report.html"
    _atomic(html_path, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>{body}</body></html>\n")
    return md_path, html_path


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

