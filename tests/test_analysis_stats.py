"""The regression gate's statistics on data whose truth is known.

Values come in worker processes, as pyperf makes them: each process draws its
own offset (page cache, CPU placement, neighbours) and its values scatter
around it.  The A/A checks draw two samples from one such distribution with
many seeds and allow at most 1% false regressions; the detection checks shift
the second sample and require "regression".  The cluster tests show why the
process is the unit: a per-value test on the same data cries wolf.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import stats


def draw(rng, k, m=2, within=0.05, between=0.0, median=5e-3, tail=False):
    """k processes of m values: lognormal within a process, a lognormal offset per process."""
    offsets = rng.lognormal(0.0, between, k) if between else np.ones(k)
    x = median * np.repeat(offsets, m) * rng.lognormal(0.0, within, k * m)
    if tail:
        x[rng.random(k * m) < 0.05] *= 1.5
    return x, np.repeat(np.arange(k), m)


def verdicts(k, within, between, seeds, shift=1.0, test="permutation", m=2):
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        (a, ca), (b, cb) = draw(rng, k, m, within, between), draw(rng, k, m, within, between)
        out.append(stats.compare_samples(a, b * shift, base_clusters=ca, new_clusters=cb, test=test,
                                         n_boot=500, n_perm=1000, seed=seed).verdict)
    return out


@pytest.mark.parametrize("k,within,between", [(10, 0.05, 0.0), (20, 0.05, 0.10), (10, 0.02, 0.15)])
def test_aa_false_regressions_stay_under_one_percent(k, within, between):
    v = verdicts(k, within, between, seeds=300)
    false = sum(x in ("regression", "improvement") for x in v) / len(v)
    assert false <= 0.01, f"A/A false verdicts {false:.1%} (k={k}, within={within}, between={between})"


def test_per_value_test_on_clustered_data_cries_wolf_and_the_cluster_test_does_not():
    """Strong process effects: treating the 4 values of a process as independent
    (clusters=None) flags many A/A pairs; resampling whole processes does not."""
    naive = cluster = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        (a, ca), (b, cb) = draw(rng, 12, 4, 0.01, 0.15), draw(rng, 12, 4, 0.01, 0.15)
        naive += stats.permutation_p(a, b, n_perm=1000, seed=seed) < 0.01
        cluster += stats.permutation_p(a, b, n_perm=1000, seed=seed, base_clusters=ca, new_clusters=cb) < 0.01
    assert naive >= 15 and cluster <= 3, (naive, cluster)


@pytest.mark.parametrize("test", stats.TESTS)
def test_a_ten_percent_slowdown_is_a_regression(test):
    v = verdicts(20, 0.04, 0.02, seeds=60, shift=1.10, test=test)
    assert v.count("regression") / len(v) >= 0.9, v


def test_speedup_is_an_improvement_and_small_changes_are_not_regressions():
    a, c = draw(np.random.default_rng(7), 60, 2, 0.01)
    assert stats.compare_samples(a, a / 1.10, base_clusters=c, new_clusters=c).verdict == "improvement"
    r = stats.compare_samples(a, a * 1.02, base_clusters=c, new_clusters=c)     # inside the 3% threshold
    assert r.p < 0.01 and r.verdict == "no change" and "within" in r.note
    assert stats.compare_samples(a, a * 1.02, base_clusters=c, new_clusters=c, threshold=0.01).verdict == "regression"


def test_no_change_needs_an_interval_inside_the_threshold():
    """Not significant is not "no change": a wide interval is inconclusive."""
    rng = np.random.default_rng(3)
    (a, ca), (b, cb) = draw(rng, 10, 2, 0.3), draw(rng, 10, 2, 0.3)
    r = stats.compare_samples(a, b, base_clusters=ca, new_clusters=cb)
    assert r.verdict == "inconclusive" and "does not rule out" in r.note


def test_n_3_gives_no_interval_and_says_so():
    """The issue's check: with fewer than 10 processes no 95% CI is printed."""
    s = stats.summarize([1.0, 1.1, 1.2])
    assert s["n"] == 3 and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    text = stats.ci_text(s, lambda v: f"{v:.2f}")
    assert text.startswith("n too small") and "–" not in text
    # 30 values from 3 processes are still 3 independent units.
    s = stats.summarize(np.linspace(1, 2, 30), np.repeat([0, 1, 2], 10))
    assert s["k"] == 3 and math.isnan(s["ci_low"])
    s = stats.summarize(np.linspace(1, 2, 20), np.repeat(np.arange(10), 2))
    assert s["ci_low"] < 1.5 < s["ci_high"]
    r = stats.compare_samples([1.0, 1.1, 1.05], [2.0, 2.2, 2.1])
    assert r.verdict == "inconclusive" and r.note.startswith("too few processes")
    assert stats.min_p(3, 3) == pytest.approx(0.1)


def test_median_ci_covers_the_true_median():
    covered = 0
    for seed in range(200):
        x, c = draw(np.random.default_rng(seed), 20, 2, 0.2)
        lo, hi = stats.median_ci(x, c, n_boot=1000, seed=seed)
        covered += lo <= 5e-3 <= hi
    assert 0.88 <= covered / 200 <= 0.995


def test_drift_turns_a_change_inside_it_into_inconclusive():
    a, c = draw(np.random.default_rng(5), 20, 2, 0.01)
    wide = stats.Drift(sd=0.10, pairs=19)
    r = stats.compare_samples(a, a * 1.15, base_clusters=c, new_clusters=c, drift=wide)
    assert r.p < 0.01 and r.verdict == "inconclusive" and "drift" in r.note
    assert stats.compare_samples(a, a * 2.0, base_clusters=c, new_clusters=c, drift=wide).verdict == "regression"
    # A quiet machine: the same 15% is a regression, and an A/A pair can be "no change".
    quiet = stats.Drift(sd=0.002, pairs=19)
    assert stats.compare_samples(a, a * 1.15, base_clusters=c, new_clusters=c, drift=quiet).verdict == "regression"
    assert wide.detectable(0.01) > 0.3 > quiet.detectable(0.01)
    assert stats.Drift.from_ratios([0.1, -0.1, 0.1, -0.1]).sd == pytest.approx(0.1)


def test_detectable_change_says_whether_10_percent_would_be_caught():
    quiet, c = draw(np.random.default_rng(11), 30, 2, 0.03)
    mde = stats.detectable_change(quiet, clusters=c)
    assert stats.THRESHOLD < mde <= 0.10
    assert stats.compare_samples(quiet, quiet * (1 + mde + 0.01), base_clusters=c,
                                 new_clusters=c).verdict == "regression"
    assert stats.detectable_change([1.0, 1.1, 1.2]) == math.inf     # 3 processes can never reach p < 0.01


def test_holm_adjustment_matches_the_textbook():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert list(adj[:4]) == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adj[4])
