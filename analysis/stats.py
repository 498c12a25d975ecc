"""The statistics behind every verdict: medians with bootstrap intervals, and a
two-sample test suited to skewed timing data.

Timings are right-skewed with outliers (a page-cache miss, a scheduler hiccup),
so the centre is the median, intervals come from the bootstrap, and the test is
rank-based (Mann-Whitney U) or a permutation test on the log ratio of medians,
the approach of Firecracker's A/B tool.  A verdict needs three things: p < alpha,
a bootstrap interval of the median change at the same level (1 - alpha) that
excludes zero, and a change beyond the noise threshold.  p alone flags trivia on
big samples; the threshold alone flags noise on small ones; and requiring the
rank test and the median's interval to agree keeps the A/A false-alarm rate
clearly under alpha (about 0.5% at alpha = 0.01 where the plain p < alpha rule
sits right at 1%), which is what lets a CI job trust a red result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.01
THRESHOLD = 0.05
N_BOOT = 2000
TESTS = ("mannwhitney", "permutation")


def _arr(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def median_ci(values, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median."""
    a = _arr(values)
    if a.size == 0:
        return (math.nan, math.nan)
    if a.size == 1:
        return (float(a[0]), float(a[0]))
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    lo, hi = np.quantile(meds, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return (float(lo), float(hi))


def change_ci(base, new, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of median(new)/median(base) - 1, resampling both sides."""
    b, n = _arr(base), _arr(new)
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, size=(n_boot, n.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = mn / mb - 1.0
    r = r[np.isfinite(r)]
    if r.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(r, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return (float(lo), float(hi))


def mannwhitney_p(base, new) -> float:
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0:
        return math.nan
    if np.ptp(np.concatenate([b, n])) == 0:
        return 1.0
    return float(sps.mannwhitneyu(b, n, alternative="two-sided", method="auto").pvalue)


def permutation_p(base, new, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided permutation test on the difference of log medians (scale-free,
    so a 10% slowdown means the same at 50 ns and at 2 s)."""
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0:
        return math.nan
    pooled = np.concatenate([b, n])
    if np.ptp(pooled) == 0:
        return 1.0
    logs = np.log(pooled) if (pooled > 0).all() else pooled
    obs = abs(np.median(logs[b.size:]) - np.median(logs[:b.size]))
    rng = np.random.default_rng(seed)
    idx = np.argsort(rng.random((n_perm, pooled.size)), axis=1)
    perm = logs[idx]
    diff = np.abs(np.median(perm[:, b.size:], axis=1) - np.median(perm[:, :b.size], axis=1))
    return float((1 + np.sum(diff >= obs - 1e-12)) / (n_perm + 1))


def min_p(n_base: int, n_new: int) -> float:
    """The smallest two-sided p Mann-Whitney can give for these sample sizes:
    with 3 values a side it is 0.1, so no amount of slowdown can reach p < 0.01."""
    if n_base == 0 or n_new == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_base))


@dataclass
class Comparison:
    n_base: int
    n_new: int
    median_base: float
    median_new: float
    change: float           # median(new)/median(base) - 1; positive is slower/bigger
    ci_low: float           # interval of `change` at level 1 - alpha
    ci_high: float
    p: float
    verdict: str            # "regression" | "improvement" | "no change"
    note: str = ""


def compare_samples(base, new, *, alpha: float = ALPHA, threshold: float = THRESHOLD,
                    test: str = "mannwhitney", n_boot: int = N_BOOT, seed: int = 0,
                    n_perm: int = 10000) -> Comparison:
    """Verdict for one metric: every cvbench metric is lower-is-better, so a
    significant rise above the threshold is a regression."""
    b, n = _arr(base), _arr(new)
    mb = float(np.median(b)) if b.size else math.nan
    mn = float(np.median(n)) if n.size else math.nan
    if b.size == 0 or n.size == 0:
        return Comparison(b.size, n.size, mb, mn, math.nan, math.nan, math.nan, math.nan,
                          "no change", "no values on one side")
    change = mn / mb - 1.0 if mb != 0 else (0.0 if mn == 0 else math.inf)
    lo, hi = change_ci(b, n, conf=1 - alpha, n_boot=n_boot, seed=seed)
    if test == "permutation":
        p = permutation_p(b, n, n_perm=n_perm, seed=seed)
    elif test == "mannwhitney":
        p = mannwhitney_p(b, n)
    else:
        raise ValueError(f"unknown test {test!r}; one of {TESTS}")
    floor = min_p(b.size, n.size) if test == "mannwhitney" else 1.0 / (n_perm + 1)
    starved = f"too few values to reach p<{alpha:g} (n={b.size}/{n.size})" if floor >= alpha else ""
    verdict, note = decide(change, lo, hi, p, alpha, threshold)
    return Comparison(b.size, n.size, mb, mn, change, lo, hi, p, verdict, starved or note)


def decide(change: float, lo: float, hi: float, p: float, alpha: float, threshold: float) -> tuple[str, str]:
    """(verdict, note): significance, effect beyond the threshold, and an interval clear of zero."""
    if p < alpha and abs(change) > threshold and (lo > 0 or hi < 0):
        return ("regression" if change > 0 else "improvement"), ""
    if p < alpha and abs(change) <= threshold:
        return "no change", f"significant but within ±{threshold:.0%}"
    if p < alpha:
        return "no change", f"p<{alpha:g} but the {1 - alpha:.0%} interval of the change includes 0"
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


def summarize(values, seed: int = 0) -> dict:
    """Centre and spread for tables: median, 95% CI, IQR, MAD and CV."""
    a = _arr(values)
    if a.size == 0:
        return {"n": 0}
    lo, hi = median_ci(a, seed=seed)
    q1, q3 = np.quantile(a, [0.25, 0.75])
    med = float(np.median(a))
    mean = float(np.mean(a))
    return {"n": int(a.size), "median": med, "ci_low": lo, "ci_high": hi, "q1": float(q1), "q3": float(q3),
            "mad": float(np.median(np.abs(a - med))), "min": float(a.min()), "max": float(a.max()),
            "cv": float(np.std(a, ddof=1) / mean) if a.size > 1 and mean else 0.0}


def diff_ci(base, new, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of median(new) - median(base): a ladder step whose
    interval straddles zero is not a measured cost."""
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, size=(n_boot, n.size))], axis=1)
    lo, hi = np.quantile(mn - mb, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return (float(lo), float(hi))


def detectable_change(base, *, alpha: float = ALPHA, threshold: float = THRESHOLD, test: str = "mannwhitney",
                      limit: float = 4.0, steps: int = 10) -> float:
    """The smallest slowdown this gate would call a regression, found by
    scaling the baseline's own values (the issue's "same data x1.10" check,
    turned into a measurement).  inf when even ``limit``x would pass unseen:
    then the run has too few values or too much noise to guard anything."""
    b = _arr(base)
    if b.size < 2:
        return math.inf

    def fires(x: float) -> bool:
        return compare_samples(b, b * (1 + x), alpha=alpha, threshold=threshold, test=test,
                               n_boot=500).verdict == "regression"

    lo, hi = threshold, limit
    if not fires(hi):
        return math.inf
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fires(mid) else (mid, hi)
    return hi
