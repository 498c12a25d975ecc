"""The statistics behind every interval and verdict.

The values of one pyperf worker process are not independent: they share that
process's page cache, CPU placement and neighbours' load.  So the unit of
resampling is the process (a *cluster*), never the single value: intervals
are cluster bootstraps (``scipy.stats.bootstrap`` over process indices, the
statistic pooling the chosen processes' values), and the two-sample test
permutes whole processes between the two sides (``scipy.stats.permutation_test``)
on the log ratio of pooled medians, scale-free like Firecracker's A/B tool.
With fewer than ``MIN_N`` processes no interval is given at all ("n too small").

Even a cluster test only sees the noise inside one run.  Two back-to-back runs
of the same code on a shared machine also differ by a run-level drift (load
from neighbours, frequency, cache state) that no single run can show.  The
``calibrate`` command measures that drift from real A/A pairs as the spread of
log(median ratio); with it, a change must also stand out from the drift
(``drift_p``, a t prediction interval).  A change that beats the within-run
test but not the drift is "inconclusive", never "regression".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.01
# Below 5%: a real 5% slowdown must be called a regression most of the time
# (calibrate's power target), which a 5% threshold would cap at about half.
THRESHOLD = 0.03
MIN_N = 10          # fewer independent processes: no interval, "n too small"
N_BOOT = 2000
N_PERM = 9999
TESTS = ("permutation", "mannwhitney")
TOO_SMALL = "n too small"


def _arr(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


@dataclass
class Sample:
    """Values with the worker process each came from, as a padded (process, value) table."""
    table: np.ndarray           # shape (k processes, m values), NaN padding

    @classmethod
    def of(cls, values, clusters=None) -> Sample:
        v = np.asarray(values, dtype=float)
        c = np.arange(v.size) if clusters is None else np.asarray(clusters)
        ok = np.isfinite(v)
        v, c = v[ok], c[ok]
        if v.size == 0:
            return cls(np.empty((0, 1)))
        keys, inv = np.unique(c, return_inverse=True)
        m = int(np.bincount(inv).max())
        table = np.full((keys.size, m), np.nan)
        fill = np.zeros(keys.size, dtype=int)
        for val, k in zip(v, inv, strict=True):
            table[k, fill[k]] = val
            fill[k] += 1
        return cls(table)

    @property
    def k(self) -> int:
        return int(self.table.shape[0])

    @property
    def values(self) -> np.ndarray:
        t = self.table.ravel()
        return t[np.isfinite(t)]

    @property
    def n(self) -> int:
        return int(self.values.size)


def _pooled_median(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Median of the values of the processes ``idx`` (any leading batch shape)."""
    sel = table[idx]                                   # (..., k, m)
    flat = sel.reshape(*sel.shape[:-2], -1)
    return np.median(flat, axis=-1) if not np.isnan(table).any() else np.nanmedian(flat, axis=-1)


def _as_sample(values, clusters=None) -> Sample:
    return values if isinstance(values, Sample) else Sample.of(values, clusters)


def median_ci(values, clusters=None, conf: float = 0.95, n_boot: int = N_BOOT,
              seed: int = 0) -> tuple[float, float]:
    """Cluster-bootstrap percentile interval of the median; (nan, nan) below MIN_N processes."""
    s = _as_sample(values, clusters)
    if s.k < MIN_N:
        return (math.nan, math.nan)
    t = s.table
    res = sps.bootstrap((np.arange(s.k),), lambda i, axis=-1: _pooled_median(t, i), vectorized=True,
                        n_resamples=n_boot, confidence_level=conf, method="percentile", random_state=seed)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _two_sample_ci(b: Sample, n: Sample, stat, conf: float, n_boot: int, seed: int) -> tuple[float, float]:
    if b.k < 2 or n.k < 2:
        return (math.nan, math.nan)
    tb, tn = b.table, n.table
    with np.errstate(divide="ignore", invalid="ignore"):
        res = sps.bootstrap((np.arange(b.k), np.arange(n.k)),
                            lambda ib, i_n, axis=-1: stat(_pooled_median(tb, ib), _pooled_median(tn, i_n)),
                            vectorized=True, n_resamples=n_boot, confidence_level=conf, method="percentile",
                            random_state=seed)
    lo, hi = res.confidence_interval
    return (float(lo), float(hi)) if np.isfinite([lo, hi]).all() else (math.nan, math.nan)


def change_ci(base, new, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = 0, *,
              base_clusters=None, new_clusters=None) -> tuple[float, float]:
    """Cluster-bootstrap interval of median(new)/median(base) - 1, each side resampled by process."""
    return _two_sample_ci(_as_sample(base, base_clusters), _as_sample(new, new_clusters),
                          lambda mb, mn: mn / mb - 1.0, conf, n_boot, seed)


def diff_ci(base, new, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = 0, *,
            base_clusters=None, new_clusters=None) -> tuple[float, float]:
    """Cluster-bootstrap interval of median(new) - median(base): a ladder step whose
    interval straddles zero is not a measured cost."""
    b, n = _as_sample(base, base_clusters), _as_sample(new, new_clusters)
    if b.n == 0 or n.n == 0:
        return (math.nan, math.nan)
    return _two_sample_ci(b, n, lambda mb, mn: mn - mb, conf, n_boot, seed)


def permutation_p(base, new, n_perm: int = N_PERM, seed: int = 0, *, base_clusters=None,
                  new_clusters=None) -> float:
    """Two-sided permutation test that swaps whole processes between the sides,
    on the difference of log pooled medians (scale-free: a 10% slowdown means the
    same at 50 ns and at 2 s)."""
    b, n = _as_sample(base, base_clusters), _as_sample(new, new_clusters)
    if b.n == 0 or n.n == 0:
        return math.nan
    pooled = np.concatenate([b.values, n.values])
    if np.ptp(pooled) == 0:
        return 1.0
    width = max(b.table.shape[1], n.table.shape[1])
    pad = lambda t: np.pad(t, ((0, 0), (0, width - t.shape[1])), constant_values=np.nan)  # noqa: E731
    table = np.vstack([pad(b.table), pad(n.table)])
    if (pooled > 0).all():
        table = np.log(table)

    def stat(ib, i_n, axis=-1):
        return _pooled_median(table, i_n) - _pooled_median(table, ib)

    res = sps.permutation_test((np.arange(b.k), np.arange(b.k, b.k + n.k)), stat, vectorized=True,
                               permutation_type="independent", alternative="two-sided",
                               n_resamples=n_perm, random_state=seed)
    return float(min(1.0, res.pvalue))


def mannwhitney_p(base, new, *, base_clusters=None, new_clusters=None) -> float:
    """Mann-Whitney U on the per-process medians, the independent units."""
    b, n = _as_sample(base, base_clusters), _as_sample(new, new_clusters)
    if b.n == 0 or n.n == 0:
        return math.nan
    mb, mn = np.nanmedian(b.table, axis=1), np.nanmedian(n.table, axis=1)
    if np.ptp(np.concatenate([mb, mn])) == 0:
        return 1.0
    return float(sps.mannwhitneyu(mb, mn, alternative="two-sided", method="auto").pvalue)


def min_p(k_base: int, k_new: int) -> float:
    """The smallest two-sided p any test that exchanges whole processes can give:
    with 3 processes a side it is 0.1, so no slowdown can reach p < 0.01."""
    if k_base == 0 or k_new == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(k_base + k_new, k_base))


@dataclass
class Drift:
    """Run-to-run drift of one metric on one host class, from real A/A pairs:
    the root mean square of log(median ratio) over ``pairs`` pairs."""
    sd: float
    pairs: int

    def p(self, change: float) -> float:
        """Two-sided p of a change this large between two single runs when
        nothing changed: a t prediction interval with ``pairs`` degrees of freedom."""
        if not (math.isfinite(change) and change > -1) or self.pairs < 1:
            return math.nan
        if self.sd <= 0:
            return 0.0 if change else 1.0
        return float(2 * sps.t.sf(abs(math.log1p(change)) / (self.sd * math.sqrt(1 + 1 / self.pairs)),
                                  df=self.pairs))

    def detectable(self, alpha: float) -> float:
        """The smallest change that stands out from the drift at level alpha."""
        if self.pairs < 1:
            return math.inf
        return math.expm1(sps.t.isf(alpha / 2, df=self.pairs) * self.sd * math.sqrt(1 + 1 / self.pairs))

    @classmethod
    def from_ratios(cls, log_ratios) -> Drift:
        r = _arr(log_ratios)
        return cls(float(np.sqrt(np.mean(r ** 2))) if r.size else math.nan, int(r.size))


@dataclass
class Comparison:
    n_base: int             # values
    n_new: int
    k_base: int             # worker processes (independent units)
    k_new: int
    median_base: float
    median_new: float
    change: float           # median(new)/median(base) - 1; positive is slower/bigger
    ci_low: float           # cluster-bootstrap interval of `change` at level 1 - alpha
    ci_high: float
    p: float                # within-run test (whole processes permuted)
    p_drift: float          # the change against measured run-to-run drift; nan when uncalibrated
    verdict: str            # "regression" | "improvement" | "no change" | "inconclusive"
    note: str = ""


def compare_samples(base, new, *, alpha: float = ALPHA, threshold: float = THRESHOLD,
                    test: str = "permutation", n_boot: int = N_BOOT, seed: int = 0, n_perm: int = N_PERM,
                    base_clusters=None, new_clusters=None, drift: Drift | None = None) -> Comparison:
    """Verdict for one metric.  Every cvbench metric is lower-is-better, so a rise is
    a regression.  ``compare``, ``history`` and ``calibrate`` all call this one function."""
    b, n = _as_sample(base, base_clusters), _as_sample(new, new_clusters)
    mb = float(np.median(b.values)) if b.n else math.nan
    mn = float(np.median(n.values)) if n.n else math.nan
    if b.n == 0 or n.n == 0:
        return Comparison(b.n, n.n, b.k, n.k, mb, mn, math.nan, math.nan, math.nan, math.nan, math.nan,
                          "no change", "no values on one side")
    change = mn / mb - 1.0 if mb != 0 else (0.0 if mn == 0 else math.inf)
    lo, hi = change_ci(b, n, conf=1 - alpha, n_boot=n_boot, seed=seed)
    if test == "permutation":
        p = permutation_p(b, n, n_perm=n_perm, seed=seed)
    elif test == "mannwhitney":
        p = mannwhitney_p(b, n)
    else:
        raise ValueError(f"unknown test {test!r}; one of {TESTS}")
    pd_ = drift.p(change) if drift is not None else math.nan
    if min_p(b.k, n.k) >= alpha:
        return Comparison(b.n, n.n, b.k, n.k, mb, mn, change, lo, hi, p, pd_, "inconclusive",
                          f"too few processes to reach p<{alpha:g} ({b.k}/{n.k})")
    verdict, note = decide(change, lo, hi, p, alpha, threshold, pd_,
                           drift.detectable(alpha) if drift is not None else 0.0)
    return Comparison(b.n, n.n, b.k, n.k, mb, mn, change, lo, hi, p, pd_, verdict, note)


def decide(change: float, lo: float, hi: float, p: float, alpha: float, threshold: float,
           p_drift: float = math.nan, drift_width: float = 0.0) -> tuple[str, str]:
    """(verdict, note).  A regression or improvement needs: the within-run test
    at p < alpha, an interval of the change clear of zero, |change| above the
    threshold, and (when the host class is calibrated) the change standing out
    from run-to-run drift.  Passing all but the last is "inconclusive".  "No change"
    needs the interval inside ±threshold and a drift (``drift_width``, the
    smallest change it lets through) no wider than the threshold."""
    if p < alpha and abs(change) > threshold and (lo > 0 or hi < 0):
        if math.isfinite(p_drift) and p_drift >= alpha:
            return "inconclusive", f"{change:+.1%} is within this machine's run-to-run drift (p_drift={p_drift:.2g})"
        return ("regression" if change > 0 else "improvement"), ""
    if p < alpha and abs(change) <= threshold:
        return "no change", f"significant but within ±{threshold:.0%}"
    # "No change" is a claim too: the interval must rule out a change beyond the
    # threshold (an equivalence test), and the calibrated drift must be small enough
    # that a change beyond it would have stood out.  Otherwise nothing is known.
    if not (math.isfinite(lo) and -threshold <= lo and hi <= threshold):
        width = "no interval" if not math.isfinite(lo) else f"the interval [{lo:+.1%}, {hi:+.1%}]"
        return "inconclusive", f"{width} does not rule out a change beyond ±{threshold:.0%}"
    if drift_width > threshold:
        return "inconclusive", f"run-to-run drift here hides changes under {drift_width:+.0%}"
    if p < alpha:
        return "no change", f"p<{alpha:g} but the {(1 - alpha) * 100:g}% interval of the change includes 0"
    return "no change", ""


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: one comparison tests dozens of metrics,
    and the gate's false-alarm rate should hold for the whole table, not per row."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    if q.size == 0:
        return out
    order = np.argsort(q)
    m = q.size
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * q[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def summarize(values, clusters=None, seed: int = 0) -> dict:
    """Centre and spread for tables and charts: median, 95% cluster-bootstrap CI
    (nan below MIN_N processes), IQR, MAD and CV.  ``k`` is the process count."""
    s = _as_sample(values, clusters)
    a = s.values
    if a.size == 0:
        return {"n": 0, "k": 0}
    lo, hi = median_ci(s, seed=seed)
    q1, q3 = np.quantile(a, [0.25, 0.75])
    med = float(np.median(a))
    mean = float(np.mean(a))
    return {"n": int(a.size), "k": s.k, "median": med, "ci_low": lo, "ci_high": hi, "q1": float(q1),
            "q3": float(q3), "mad": float(np.median(np.abs(a - med))), "min": float(a.min()),
            "max": float(a.max()), "cv": float(np.std(a, ddof=1) / mean) if a.size > 1 and mean else 0.0}


def ci_text(s: dict, fmt) -> str:
    """A summary's interval for a table cell, or "n too small" (never a CI from < MIN_N processes)."""
    if not s.get("n") or not math.isfinite(s.get("ci_low", math.nan)):
        return f"{TOO_SMALL} ({s.get('k', 0)} processes)"
    return f"{fmt(s['ci_low'])} – {fmt(s['ci_high'])}"


def detectable_change(base, *, alpha: float = ALPHA, threshold: float = THRESHOLD, test: str = "permutation",
                      limit: float = 4.0, steps: int = 8, clusters=None) -> float:
    """The smallest slowdown the within-run test would call a regression, found by
    scaling the baseline's own values.  inf when even ``limit``x would pass unseen:
    too few processes or too much noise to guard anything."""
    b = _as_sample(base, clusters)
    if b.k < 2 or min_p(b.k, b.k) >= alpha:
        return math.inf

    def fires(x: float) -> bool:
        return compare_samples(b, Sample(b.table * (1 + x)), alpha=alpha, threshold=threshold, test=test,
                               n_boot=500, n_perm=2000).verdict == "regression"

    lo, hi = threshold, limit
    if not fires(hi):
        return math.inf
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fires(mid) else (mid, hi)
    return hi
