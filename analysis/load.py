"""Run folders (and stored baselines) into one tidy pandas frame.

analysis reads files only.  Every loader validates against the results/
contract and turns a broken or missing file into a one-line CvbError (exit 2)
that names the file, because a CI gate that crashes with a traceback on a
truncated run is one nobody trusts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.errors import CvbError
from common.paths import results_dir

TIDY_COLUMNS = ["scenario", "metric", "backend", "variant", "value", "unit", "process", "run"]
KEY = ["scenario", "metric", "backend", "variant"]
OPTIONAL_COLUMNS = ["accel"]     # per-row accelerator of VM backends (newer runs); kept when present
VM_BACKENDS = ("qemu", "qemu-microvm", "libvirt")
ENV_COLUMNS = ["run_id", "host", "host_class", "kernel", "cpu_model", "cpu_count", "accel", "git_rev", "date", "mode"]
DEFAULT_ORDER = ["host", "builtin", "builtin-cli", "crun", "runc", "runsc", "qemu-microvm", "qemu", "libvirt"]


@dataclass
class Run:
    """One run folder (or one scenario of a baseline file): its meta and values."""
    path: Path
    meta: dict
    tidy: pd.DataFrame           # the contract columns, variant "" where absent
    repeat: pd.Series | None = None   # baselines: which repeated run each row came from

    @property
    def env(self) -> dict:
        return self.meta.get("env", {})

    @property
    def accel(self) -> str:
        return (self.env.get("accel") or {}).get("name", "unknown")

    def backend_accel(self) -> dict[str, tuple[str, str]]:
        """VM backend -> (accelerator, why): meta.json backends.<name>.accel
        ({"accel", "why"}), else its metadata's accel, else the tidy.csv accel
        column, else (older runs) the run's one env accelerator."""
        out: dict[str, tuple[str, str]] = {}
        infos = self.meta.get("backends") or {}
        present = set(self.tidy["backend"])
        col = self.tidy[self.tidy["accel"] != ""] if "accel" in self.tidy.columns else None
        env = self.env.get("accel") or {}
        for name in sorted(present | {b for b, i in infos.items() if isinstance(i, dict) and i.get("accel")}):
            info = infos.get(name) if isinstance(infos.get(name), dict) else {}
            rec, md = info.get("accel"), info.get("metadata") or {}
            if isinstance(rec, dict) and rec.get("accel"):
                out[name] = (str(rec["accel"]), str(rec.get("why") or rec.get("reason") or ""))
            elif isinstance(rec, str) and rec:
                out[name] = (rec, str(info.get("accel_why") or md.get("accel_reason") or ""))
            elif md.get("accel"):
                out[name] = (str(md["accel"]), str(md.get("accel_reason") or ""))
            elif col is not None and name in set(col["backend"]):
                out[name] = (",".join(sorted(set(col[col["backend"] == name]["accel"]))), "tidy.csv accel column")
            elif name in VM_BACKENDS and name in present:
                out[name] = (str(env.get("name", "unknown")), str(env.get("reason", "")) + " (run-wide record)")
        return out

    @property
    def scenarios(self) -> list[str]:
        return sorted(self.tidy["scenario"].unique())

    @property
    def isolation_order(self) -> list[str]:
        return list(self.meta.get("isolation_order") or DEFAULT_ORDER)

    def backend_order(self) -> list[str]:
        """Backends present, weakest isolation first; unknown ones last, by name."""
        order = self.isolation_order
        present = list(self.tidy["backend"].unique())
        return sorted(present, key=lambda b: (order.index(b) if b in order else len(order), b))

    @property
    def label(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)


def host_class(env: dict) -> str:
    """The slug that says which runs' timings are comparable: CPU model, core
    count and accelerator.  Hostnames differ on every CI runner, so they are not part of it."""
    cpu = str(env.get("cpu_model") or "unknown-cpu").lower()
    for noise in ("(r)", "(tm)", " cpu", "@", "processor"):
        cpu = cpu.replace(noise, " ")
    slug = "".join(c if c.isalnum() else "-" for c in cpu)
    slug = "-".join(p for p in slug.split("-") if p)
    accel = (env.get("accel") or {}).get("name", "unknown")
    return f"{slug}-{env.get('cpu_count', '?')}c-{accel}"


def resolve(path: str | os.PathLike) -> Path:
    """A run folder from a path that may be results/latest or a results root."""
    p = Path(path)
    if not p.exists():
        raise CvbError(str(path), "no such file or folder",
                       "give a run folder such as results/latest or results/runs/<id>")
    p = p.resolve()
    if p.is_dir() and not (p / "meta.json").exists() and (p / "latest").exists():
        p = (p / "latest").resolve()
    return p


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CvbError(str(path), "missing", "a run folder needs suite.json, meta.json and tidy.csv; "
                       "re-run the scenario with 'make bench'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CvbError(str(path), f"not valid JSON ({e})", "re-run the scenario; the file is damaged") from None
    if not isinstance(data, dict):
        raise CvbError(str(path), "expected a JSON object", "re-run the scenario; the file is damaged")
    return data


def check_tidy(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Contract columns present, values numeric and finite; variant '' when empty."""
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise CvbError(where, f"missing column(s) {', '.join(missing)}",
                       f"tidy.csv must have the columns {','.join(TIDY_COLUMNS)}")
    if df.empty:
        raise CvbError(where, "has no rows", "the run recorded no values; re-run the scenario")
    df = df[TIDY_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in df.columns]].copy()
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = values.isna() | ~values.apply(lambda v: pd.notna(v) and abs(v) != float("inf"))
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 2
        raise CvbError(where, f"line {row}: value {df['value'].iloc[row - 2]!r} is not a finite number",
                       "re-run the scenario; the file is damaged")
    df["value"] = values.astype(float)
    for col in ("scenario", "metric", "backend", "variant", "unit", *OPTIONAL_COLUMNS):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    return df


def load_run(path: str | os.PathLike) -> Run:
    """One run folder.  suite.json must exist (it is the run's pyperf record), but
    values are read from tidy.csv, which carries the same numbers with units."""
    p = resolve(path)
    if p.is_file() and p.suffix == ".json" and p.name != "meta.json":
        runs = load_baseline(p)
        if len(runs) != 1:
            raise CvbError(str(p), f"holds {len(runs)} scenarios ({', '.join(sorted(runs))})",
                           "compare a run folder against it, which picks the matching scenario")
        return next(iter(runs.values()))
    if not p.is_dir():
        raise CvbError(str(p), "is not a run folder", "give a folder holding suite.json, meta.json and tidy.csv")
    for name in ("suite.json", "meta.json", "tidy.csv"):
        if not (p / name).is_file():
            raise CvbError(str(p / name), "missing", "a run folder needs suite.json, meta.json and tidy.csv; "
                           "re-run the scenario with 'make bench'")
    meta = _read_json(p / "meta.json")
    try:
        raw = pd.read_csv(p / "tidy.csv", dtype={"variant": str}, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CvbError(str(p / "tidy.csv"), f"unreadable CSV ({str(e).strip()})",
                       "re-run the scenario; the file is damaged") from None
    return Run(p, meta, check_tidy(raw, str(p / "tidy.csv")))


def load_baseline(path: str | os.PathLike) -> dict[str, Run]:
    """A baseline file (results/baselines/<host-class>.json): scenario -> Run."""
    p = Path(path)
    data = _read_json(p)
    if "runs" not in data or not isinstance(data["runs"], dict) or not data["runs"]:
        raise CvbError(str(p), "is not a cvbench baseline (no 'runs' object)",
                       "create one with 'python -m analysis baseline save RUN'")
    out = {}
    for scenario, entry in data["runs"].items():
        try:
            df = pd.DataFrame(entry["tidy"], columns=entry["columns"])
        except (KeyError, TypeError, ValueError) as e:
            raise CvbError(str(p), f"scenario {scenario!r} is malformed ({e})",
                           "re-create it with 'python -m analysis baseline save RUN'") from None
        repeat = df["repeat"].astype(int).reset_index(drop=True) if "repeat" in df.columns else None
        tidy = check_tidy(df, f"{p} [{scenario}]").reset_index(drop=True)
        out[scenario] = Run(p, entry.get("meta", {}), tidy, repeat)
    return out


def env_columns(run: Run) -> dict:
    env = run.env
    versions = env.get("versions") or {}
    return {
        "run_id": run.label,
        "host": env.get("hostname", ""),
        "host_class": host_class(env),
        "kernel": env.get("kernel", ""),
        "cpu_model": env.get("cpu_model", ""),
        "cpu_count": env.get("cpu_count", ""),
        "accel": run.accel,
        "git_rev": versions.get("cvbench_git", ""),
        "date": pd.to_datetime(run.meta.get("created_utc"), utc=True, errors="coerce"),
        "mode": run.meta.get("mode", ""),
    }


def frame(run: Run) -> pd.DataFrame:
    """The run's values with its environment columns attached."""
    df = run.tidy.copy()
    for k, v in env_columns(run).items():
        if k == "accel" and "accel" in df.columns:       # a VM row's own accelerator wins
            df[k] = df[k].where(df[k] != "", v)
        else:
            df[k] = v
    return df


def find_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Every complete run folder under a results root (its runs/ folder), oldest first."""
    base = Path(root) if root else results_dir()
    runs_dir = base / "runs" if (base / "runs").is_dir() else base
    if not runs_dir.is_dir():
        raise CvbError(str(runs_dir), "no such folder", "run 'make bench' first, or pass a results folder")
    return sorted(d for d in runs_dir.iterdir() if d.is_dir() and (d / "meta.json").is_file())


def load_runs(paths: list[str | os.PathLike] | None = None) -> pd.DataFrame:
    """Many runs in one frame; no paths means every run under results/."""
    folders = [Path(p) for p in paths] if paths else find_runs()
    expanded: list[Path] = []
    for f in folders:
        if f.is_dir() and not (f / "meta.json").exists() and ((f / "runs").is_dir() or (f / "latest").exists()):
            expanded.extend(find_runs(f))
        else:
            expanded.append(f)
    if not expanded:
        raise CvbError("results", "no runs found", "run 'make bench' first")
    frames = [frame(load_run(f)) for f in expanded]
    return pd.concat(frames, ignore_index=True)
