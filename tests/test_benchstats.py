"""Paired ratios, their median and spread, and the interleaved order of the benchmark."""

import numpy as np
import pytest

from paperlib.benchstats import (
    MAX_OVER_MIN,
    SPREAD_RULE,
    paired_ratios,
    quantile,
    rotated_order,
    summarize_ratios,
)


def test_paired_ratios_by_hand():
    assert paired_ratios([10.0, 9.0, 12.0], [2.0, 3.0, 4.0]) == [5.0, 3.0, 3.0]


@pytest.mark.parametrize("num, den", [([1.0], [1.0, 2.0]), ([], []), ([1.0], [0.0]), ([float("nan")], [1.0])])
def test_paired_ratios_rejects(num, den):
    with pytest.raises(ValueError):
        paired_ratios(num, den)


@pytest.mark.parametrize("values", [[3.0], [1.0, 4.0], [5.0, 1.0, 3.0, 2.0], [2.5, 7.0, 1.0, 9.5, 3.0, 3.0, 8.0]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_quantile_matches_numpy_linear(values, q):
    assert quantile(values, q) == pytest.approx(np.quantile(values, q, method="linear"), abs=1e-12)


def test_median_of_pairs_not_ratio_of_sums():
    # exact 10, 20, 30 s vs method 1, 2, 10 s: paired ratios 10, 10, 3 -> median 10 (ratio of means 60/13 = 4.6)
    s = summarize_ratios(paired_ratios([10.0, 20.0, 30.0], [1.0, 2.0, 10.0]))
    assert s.median == 10.0 and s.min == 3.0 and s.max == 10.0 and s.pairs == 3
    assert s.q1 == pytest.approx(6.5) and s.q3 == 10.0 and s.iqr == pytest.approx(3.5)


def test_issue_case_reports_median_not_mean_and_flags():
    # The issue's Krylov ratios: mean 23.8x; the median is 24x and the spread (max/min 12.9) is flagged.
    s = summarize_ratios([24.0, 44.0, 3.4])
    assert s.median == 24.0
    assert s.q1 == pytest.approx(13.7) and s.q3 == pytest.approx(34.0) and s.iqr == pytest.approx(20.3)
    assert s.max_over_min == pytest.approx(44 / 3.4)
    assert s.too_wide and "spread too wide to trust" in s.verdict
    d = s.to_dict()
    assert "mean" not in d and all(v != pytest.approx(71.4 / 3) for v in d.values() if isinstance(v, float))


def test_tight_spread_is_trusted():
    s = summarize_ratios([20.0, 22.0, 21.0, 23.0, 20.5])
    assert s.median == 21.0 and not s.too_wide and "acceptable" in s.verdict
    assert s.rel_iqr == pytest.approx((22.0 - 20.5) / 21.0)


def test_flag_on_max_over_min_boundary_and_iqr():
    assert not summarize_ratios([5.0, 7.0, 10.0]).too_wide  # max/min == 2 exactly: kept
    assert summarize_ratios([5.0, 7.0, 10.0 + 1e-9]).too_wide
    # max/min 1.9 in both; IQR/median (9 - 6) / 8.5 = 0.35 is kept, (9.5 - 5.125) / 7 = 0.625 is flagged
    assert not summarize_ratios([5.0, 6.0, 8.5, 9.0, 9.5]).too_wide
    s = summarize_ratios([5.0, 5.0, 5.25, 7.0, 9.5, 9.5, 9.5])
    assert s.max_over_min < MAX_OVER_MIN and s.rel_iqr == pytest.approx(4.375 / 7) and s.too_wide
    assert "IQR/median 0.62 > 0.5" in s.verdict and "max/min" not in s.verdict.split(":")[1]


def test_too_few_pairs():
    s = summarize_ratios([10.0, 10.1])
    assert s.too_wide and "too few pairs" in s.verdict
    assert "max/min" in SPREAD_RULE and "IQR/median" in SPREAD_RULE


def test_rotated_order_balances_positions():
    items = ["exact", "subspace", "krylov"]
    assert rotated_order(items, 0) == ["exact", "subspace", "krylov"]
    assert rotated_order(items, 1) == ["krylov", "exact", "subspace"]
    assert rotated_order(items, 2) == ["subspace", "krylov", "exact"]
    assert rotated_order(items, 3) == items
    for name in items:
        assert sorted(rotated_order(items, k).index(name) for k in range(3)) == [0, 1, 2]
