"""The regression gate's statistics on data whose truth is known.

The A/A checks draw two samples from one distribution with many seeds and
require "no change" in at least 99% of cases; the detection checks scale the
same data by 1.10 and require "regression".  Distributions are lognormal (the
right skew of real timings), with and without a 5% tail of slow outliers.
"""
from __future__ import annotations

import numpy as np
import pytest

from analysis import stats


def draw(rng, n, sigma, tail=False, median=5e-3):
    x = median * rng.lognormal(0.0, sigma, n)
    if tail:
        x[rng.random(n) < 0.05] *= 1.5
    return x


def aa_rate(n, sigma, tail, seeds, test="mannwhitney"):
    same = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        c = stats.compare_samples(draw(rng, n, sigma, tail), draw(rng, n, sigma, tail), test=test,
                                  n_boot=1000, seed=seed, n_perm=2000)
        same += c.verdict == "no change"
    return same / seeds


# sigma 0.1 at n=20 is the hard case: a 5% median shift is within noise there,
# so the threshold does not help and only the test's own false-alarm rate counts.
@pytest.mark.parametrize("n,sigma,tail,seeds", [(20, 0.1, False, 1000), (60, 0.1, True, 500), (20, 0.3, False, 500)])
def test_aa_gives_no_change_in_99_percent(n, sigma, tail, seeds):
    rate = aa_rate(n, sigma, tail, seeds=seeds)
    assert rate >= 0.99, f"A/A false alarms: {1 - rate:.1%} (n={n}, sigma={sigma}, tail={tail})"


def test_aa_with_permutation_test():
    rate = aa_rate(30, 0.1, True, seeds=200, test="permutation")
    assert rate >= 0.99


def test_mannwhitney_p_is_calibrated():
    """The rank test alone must reject about alpha of A/A pairs: not far more
    (false alarms), and not zero (then nothing could ever be detected)."""
    ps = [stats.mannwhitney_p(*(lambda r: (draw(r, 30, 0.2), draw(r, 30, 0.2)))(np.random.default_rng(s)))
          for s in range(1000)]
    frac = np.mean(np.array(ps) < 0.05)
    assert 0.03 <= frac <= 0.07


@pytest.mark.parametrize("test", stats.TESTS)
def test_same_data_times_1_10_is_a_regression(test):
    """The issue's check: one sample, and the same values x1.10."""
    hits, seeds = 0, 200 if test == "mannwhitney" else 100
    for seed in range(seeds):
        a = draw(np.random.default_rng(seed), 60, 0.1, tail=True)
        c = stats.compare_samples(a, a * 1.10, test=test, n_boot=1000, seed=seed, n_perm=2000)
        assert c.change == pytest.approx(0.10)
        hits += c.verdict == "regression"
    assert hits / seeds >= 0.95


def test_independent_slowdown_of_10_percent_is_detected():
    hits = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        hits += stats.compare_samples(draw(rng, 60, 0.05), draw(rng, 60, 0.05) * 1.10,
                                      n_boot=1000, seed=seed).verdict == "regression"
    assert hits / 200 >= 0.95


def test_speedup_is_an_improvement_and_small_changes_are_not_regressions():
    a = draw(np.random.default_rng(7), 200, 0.02)
    assert stats.compare_samples(a, a / 1.10).verdict == "improvement"
    c = stats.compare_samples(a, a * 1.03)        # significant, but inside the 5% noise threshold
    assert c.p < 0.01 and c.verdict == "no change" and "within" in c.note
    assert stats.compare_samples(a, a * 1.03, threshold=0.02).verdict == "regression"


def test_alpha_and_threshold_are_settable():
    a = draw(np.random.default_rng(3), 20, 0.1)
    c = stats.compare_samples(a, a * 1.2)
    assert c.verdict == "regression"
    assert stats.compare_samples(a, a * 1.2, alpha=1e-9).verdict == "no change"
    assert stats.compare_samples(a, a * 1.2, threshold=0.5).verdict == "no change"


def test_too_few_values_are_flagged_not_silently_passed():
    a = np.array([1.0, 1.1, 1.05])
    c = stats.compare_samples(a, a * 2)
    assert c.verdict == "no change" and c.note.startswith("too few values")
    assert stats.min_p(3, 3) == pytest.approx(0.1)


def test_median_ci_covers_the_true_median():
    covered = 0
    for seed in range(300):
        lo, hi = stats.median_ci(draw(np.random.default_rng(seed), 40, 0.2), n_boot=1000, seed=seed)
        covered += lo <= 5e-3 <= hi
    assert 0.88 <= covered / 300 <= 0.995


def test_detectable_change_says_whether_10_percent_would_be_caught():
    quiet = draw(np.random.default_rng(11), 60, 0.05)
    mde = stats.detectable_change(quiet)
    assert stats.THRESHOLD < mde <= 0.10
    assert stats.compare_samples(quiet, quiet * (1 + mde + 0.01)).verdict == "regression"
    noisy = draw(np.random.default_rng(11), 10, 0.4)
    assert stats.detectable_change(noisy) > 0.10
    assert stats.detectable_change([1.0, 1.1, 1.2]) == float("inf")     # 3 values can never reach p < 0.01


def test_holm_adjustment_matches_the_textbook():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert list(adj[:4]) == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adj[4])
