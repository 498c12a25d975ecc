"""One scenario across the selected backends: plan, progress, results, summary.

A scenario module (scenarios/<name>.py) exposes ``DESCRIPTION`` and
``plan(ctx) -> list[Task]``; the harness runs the tasks one after another,
shows progress with an ETA on stderr, writes the results folder atomically and
prints a side-by-side table.  Scenarios are found by name with importlib, so
bench/ does not import scenarios/ (the dependency points scenarios -> bench).
"""
from __future__ import annotations

import datetime as dt
import importlib
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import CvbError

from . import backends as registry

SCENARIOS = ["startup", "memory", "syscall", "isolation", "disk", "network", "strength"]
ISOLATION_ORDER = registry.NAMES  # the registry is ordered host -> VM


@dataclass
class Task:
    label: str                 # shown in progress, e.g. "crun: ready+lifecycle"
    backend: str
    est_s: float               # rough duration, for the ETA only
    run: Callable[[], list]    # -> list[pyperf.Benchmark]


@dataclass
class Context:
    scenario: str
    mode: str                  # fast | default | rigorous
    quick: bool                # test knob: smallest runs (documented in the CLI help)
    backends: list[str]        # available, selected, in isolation order
    timeout: float = 60.0
    meta: dict = field(default_factory=dict)   # scenario additions to meta.json
    summary_metrics: list[str] | None = None   # metrics the stdout table shows

    def backend(self, name: str):
        return registry.get(name)

    def is_vm(self, name: str) -> bool:
        return registry.get(name).kind == "vm"


def load_scenario(name: str):
    if name not in SCENARIOS:
        raise CvbError("scenario", f"unknown scenario {name!r}",
                       f"choose from {', '.join(SCENARIOS)} or all")
    return importlib.import_module(f"scenarios.{name}")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"


def run_tasks(ctx: Context, tasks: list[Task]) -> tuple[list, dict[str, str]]:
    benches, failed = [], {}
    t0 = time.monotonic()
    done_est = 0.0
    total_est = sum(t.est_s for t in tasks) or 1.0
    for i, task in enumerate(tasks, 1):
        elapsed = time.monotonic() - t0
        rate = elapsed / done_est if done_est > 0 else 1.0
        eta = (total_est - done_est) * rate
        progress(f"[{ctx.scenario}] {task.label} ({i}/{len(tasks)}), elapsed {_fmt_s(elapsed)}, "
                 f"ETA {_fmt_s(eta)}")
        try:
            benches.extend(task.run())
        except Exception as e:  # noqa: BLE001 - one backend's failure must not lose the others
            if os.environ.get("CVBENCH_DEBUG") == "1":
                raise
            why = e.why.strip() if isinstance(e, CvbError) else f"{type(e).__name__}: {e}"
            failed[task.backend] = (failed[task.backend] + "; " + why.splitlines()[0]
                                    if task.backend in failed else why)
            progress(f"[{ctx.scenario}] {task.label}: FAILED: {why[:2000]}")
        done_est += task.est_s
    return benches, failed


def _terminate(signum, frame):
    raise KeyboardInterrupt


def observe_all(avail: dict, usable: list[str], scenario: str) -> None:
    """Record, per process/container backend, the isolation an instance got as
    seen from inside it (inside.observe); one extra spawn each, before timing."""
    from . import inside
    for n in usable:
        b = registry.get(n)
        if b.kind not in ("process", "container"):
            continue
        try:
            avail[n]["observed"] = inside.observe(b)
        except Exception as e:  # noqa: BLE001 - recorded, and the report says so
            why = e.why if isinstance(e, CvbError) else f"{type(e).__name__}: {e}"
            avail[n]["observed"] = {"error": why.splitlines()[0][:300]}
            progress(f"[{scenario}] {n}: could not observe its isolation: {why.splitlines()[0]}")


def bundle_meta() -> dict:
    """Which config.json the container backends read, and what it asks for."""
    import json

    from . import bundle, image
    img = image.load()
    folder = bundle.active_bundle(img.bundle)
    spec = json.loads(Path(folder, "config.json").read_text())
    user = folder != img.bundle
    return {"path": f"{folder}/config.json",
            "source": "--config (user-supplied)" if user else
            ("image default: runc spec + cgroup namespace + the default seccomp profile of "
             f"{bundle.SECCOMP_PACKAGE} ({bundle.SECCOMP_SOURCE}), converted for this architecture"),
            "read_by": "builtin, builtin-cli, crun, runc, runsc (runsc with --oci-seccomp)",
            **bundle.describe(spec)}


def run(scenario: str, *, backend_spec=None, mode: str = "default", quick: bool = False,
        out: Path, command: list[str], config: str | None = None,
        strict: bool = False) -> tuple[Path | None, int]:
    """Run one scenario; returns (run folder, exit status).

    ``config``: a user's config.json for every container backend alike.
    ``strict``: exit 1 when an independent cross-check is outside tolerance."""
    import pyperf

    from . import bundle, crosscheck, env, image, results, sweep
    mod = load_scenario(scenario)
    names = registry.parse(backend_spec)
    results.check_writable(out)
    saved_bundle = os.environ.get(bundle.BUNDLE_ENV)
    if config:
        os.environ[bundle.BUNDLE_ENV] = str(bundle.write_user_bundle(config, image.load().rootfs))
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        removed = sweep.sweep_all()
        if removed:
            progress(f"[{scenario}] swept {len(removed)} leftovers of dead cvbench runs")
        results.remove_stale_staging(out)
        avail = registry.availability(names)
        from .backends.vm import check_one_accel
        check_one_accel(avail)   # a kvm row next to a tcg row: exit 2
        for n, a in avail.items():
            if not a["available"]:
                progress(f"[{scenario}] skipping {n}: {a['reason']}")
        usable = [n for n in names if avail[n]["available"]]
        if not usable:
            raise CvbError(scenario, "no selected backend is available here",
                           "'python -m bench list' shows why; pick others with --backends")
        created = dt.datetime.now(dt.UTC)
        environment = env.collect()   # before measuring: the conditions the run starts in
        observe_all(avail, usable, scenario)
        bmeta = bundle_meta_safe(config)
        ctx = Context(scenario, mode, quick, usable)
        tasks = mod.plan(ctx)
        benches, failed = run_tasks(ctx, tasks)
    except KeyboardInterrupt:
        progress(f"[{scenario}] interrupted: cleaning up, no results written for this run")
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not stop the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            sweep.sweep_all(mine=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_bundle is None:
            os.environ.pop(bundle.BUNDLE_ENV, None)
        else:
            os.environ[bundle.BUNDLE_ENV] = saved_bundle
        # delete() keeps the shared cvbench parent cgroups for speed during the
        # run; the run leaves none behind once it is over.
        sweep.sweep_all(mine=True)
    for n, why in failed.items():
        avail[n]["failed"] = why
    if not benches:
        raise CvbError(scenario, "nothing was measured: " + "; ".join(f"{k}: {v[:200]}" for k, v in failed.items()),
                       "see the errors above", status=1)
    suite = pyperf.BenchmarkSuite(benches)
    meta = {
        "scenario": scenario,
        "run_id": results.run_id(scenario, created),
        "created_utc": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "mode": mode,
        "quick": quick,
        "env": environment,
        "backends": avail,
        "isolation_order": ISOLATION_ORDER,
        "bundle": bmeta,
        **ctx.meta,
    }
    folder = results.write_run(out, scenario, suite, meta)
    print(summary(suite, ctx.summary_metrics))
    bad = crosscheck.outside(ctx.meta.get("crosschecks") or [])
    for c in ctx.meta.get("crosschecks") or []:
        print(crosscheck_line(c))
    print(f"results: {folder}")
    status = 1 if failed else 0
    if bad:
        # each check carries its own tolerance (network: ±15%), so name none here
        progress(f"[{scenario}] {len(bad)} cross-check(s) outside their tolerance or not run"
                 + ("; --strict: exit 1" if strict else "; --strict would make this exit 1"))
        if strict:
            status = 1
    return folder, status


def bundle_meta_safe(config: str | None) -> dict:
    try:
        return dict(bundle_meta(), user_config=config or "")
    except Exception as e:  # noqa: BLE001 - metadata must not lose a finished run
        return {"error": f"{type(e).__name__}: {e}", "user_config": config or ""}


def crosscheck_line(c: dict) -> str:
    """One human line per cross-check, for stdout."""
    scale, unit = (1e3, "ms") if c.get("unit") == "s" else (1.0, c.get("unit", ""))
    if c.get("ratio") is None:
        return f"cross-check {c['check']} on {c['backend']} {c['metric']}: not judged ({c.get('error', '?')})"
    verdict = "ok" if c["within"] else f"OUTSIDE ±{c['tolerance']:.0%}"
    return (f"cross-check {c['check']} on {c['backend']} {c['metric']}: harness "
            f"{c['harness'] * scale:.4g} {unit} / tool {c['tool'] * scale:.4g} {unit} = "
            f"{c['ratio']:.3f} ({verdict})")


def summary(suite, metrics: list[str] | None = None) -> str:
    """Side-by-side table: metric, variant, backend, median, p99 (one spawn per value: a real tail), spread."""
    from .results import TIDY_UNIT, split_name
    rows = []
    for b in suite.get_benchmarks():
        _, metric, backend, variant = split_name(b.get_name())
        if metrics and metric not in metrics:
            continue
        vals = b.get_values()
        if not vals:
            continue
        md = b.get_metadata()
        med = b.median()
        sd = b.stdev() if len(vals) > 1 else 0.0
        unit = md.get("cvbench_tidy_unit") or TIDY_UNIT.get(b.get_unit(), b.get_unit())
        if variant.startswith("cum:") and len(variant) > 32:   # keep the table readable
            mech = variant[4:].split("+")
            variant = f"cum:{len(mech)} (..+{mech[-1]})"
        # a p99 of fewer than 20 values is one of the largest few: not shown
        p99 = _human(statistics.quantiles(vals, n=100, method="inclusive")[98], unit) if len(vals) >= 20 else "-"
        rows.append((metric, variant or "-", backend, _human(med, unit), p99,
                     _human(sd, unit), f"{100 * sd / med:.1f}%" if med else "-", str(len(vals))))
    order = {n: i for i, n in enumerate(ISOLATION_ORDER)}
    rows.sort(key=lambda r: (r[0], r[1], order.get(r[2], 99)))
    head = ("metric", "variant", "backend", "median", "p99", "stdev", "rsd", "n")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human(v: float, unit: str) -> str:
    if unit == "s":
        for scale, u in ((1, "s"), (1e-3, "ms"), (1e-6, "us")):
            if v >= scale:
                return f"{v / scale:.3g} {u}"
        return f"{v * 1e9:.3g} ns"
    if unit == "ns":
        ns = v * 1e9
        return f"{ns / 1000:.4g} us" if ns >= 10_000 else f"{ns:.4g} ns"
    if unit in ("bytes", "bytes_per_instance"):
        return f"{v / 2**20:.2f} MiB"
    return f"{v:g}"
