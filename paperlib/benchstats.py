"""Statistics for timing benchmarks on a noisy machine: paired ratios, their median and spread.

A speed-up is measured as a set of *paired* ratios ``baseline_time / method_time``, each from two runs made
next to each other (same repeat, same input), so that a drift of the machine's speed hits both sides of a
pair alike. The set is summarised by its **median** (one slow or one lucky pair cannot move it) and its
spread (min-max and interquartile range). A mean of ratios is never reported: it is pulled up by the one
pair the machine happened to slow down on the baseline side (ratios 24, 44 and 3.4 have a mean of 23.8 and
a median of 24, while their spread says that neither can be trusted).

Spread rule (:data:`MAX_OVER_MIN`, :data:`MAX_REL_IQR`, :data:`MIN_PAIRS`): a summary is flagged
"spread too wide to trust" when ``max / min > 2`` or ``IQR / median > 0.5``, and "too few pairs to
judge the spread" below 3 pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

MAX_OVER_MIN = 2.0
"""Largest ``max / min`` of the paired ratios that is still trusted."""

MAX_REL_IQR = 0.5
"""Largest interquartile range relative to the median that is still trusted."""

MIN_PAIRS = 3
"""Fewest pairs whose spread can be judged."""

SPREAD_RULE = (f"flagged 'spread too wide to trust' if max/min of the paired ratios > {MAX_OVER_MIN:g} "
               f"or IQR/median > {MAX_REL_IQR:g}; 'too few pairs' below {MIN_PAIRS} pairs")
"""The rule, in words, for reports."""


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Element-wise ``numerators[j] / denominators[j]`` of runs measured as pairs.

    Args:
        numerators: E.g. the baseline's times, one per pair.
        denominators: The method's times, in the same order.

    Returns:
        The ratios, in order.

    Raises:
        ValueError: On different lengths, no pairs, or a non-positive or non-finite time.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"need as many numerators as denominators, got {len(numerators)} and {len(denominators)}")
    if not numerators:
        raise ValueError("need at least one pair")
    for v in (*numerators, *denominators):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"times must be finite and positive, got {v!r}")
    return [a / b for a, b in zip(numerators, denominators)]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile with linear interpolation between order statistics (numpy's default, Hyndman-Fan 7).

    Args:
        values: At least one value.
        q: In ``[0, 1]``.

    Returns:
        ``x[lo] + (h - lo) * (x[lo + 1] - x[lo])`` with ``x`` sorted and ``h = q * (len(x) - 1)``.
    """
    if not values:
        raise ValueError("need at least one value")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    x = sorted(values)
    h = q * (len(x) - 1)
    lo = math.floor(h)
    if lo + 1 >= len(x):
        return float(x[-1])
    return float(x[lo] + (h - lo) * (x[lo + 1] - x[lo]))


@dataclass(frozen=True)
class RatioSummary:
    """Median and spread of a set of paired ratios, with the verdict of the spread rule.

    Attributes:
        median: Median of the paired ratios (the figure to quote).
        min: Smallest ratio.
        max: Largest ratio.
        q1: First quartile.
        q3: Third quartile.
        iqr: ``q3 - q1``.
        pairs: Number of pairs.
        max_over_min: ``max / min``.
        rel_iqr: ``iqr / median``.
        too_wide: The spread rule flags the set (too wide, or too few pairs).
        verdict: One sentence for the report.
    """

    median: float
    min: float
    max: float
    q1: float
    q3: float
    iqr: float
    pairs: int
    max_over_min: float
    rel_iqr: float
    too_wide: bool
    verdict: str

    def to_dict(self) -> dict[str, float | int | bool | str]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def summarize_ratios(ratios: Sequence[float]) -> RatioSummary:
    """Median, min-max, quartiles and the spread verdict (rule: :data:`SPREAD_RULE`) of paired ratios.

    Args:
        ratios: Positive paired ratios (e.g. from :func:`paired_ratios`).

    Returns:
        A :class:`RatioSummary`; no mean is computed.
    """
    if not ratios:
        raise ValueError("need at least one ratio")
    if any(not (math.isfinite(r) and r > 0) for r in ratios):
        raise ValueError(f"ratios must be finite and positive, got {list(ratios)}")
    med, lo, hi = quantile(ratios, 0.5), min(ratios), max(ratios)
    q1, q3 = quantile(ratios, 0.25), quantile(ratios, 0.75)
    max_over_min, rel_iqr = hi / lo, (q3 - q1) / med
    n = len(ratios)
    span = f"median {med:.3g}x (min-max {lo:.3g}-{hi:.3g}x, IQR {q1:.3g}-{q3:.3g}x, {n} pairs)"
    if n < MIN_PAIRS:
        too_wide, verdict = True, f"{span}: too few pairs to judge the spread (need {MIN_PAIRS})."
    elif max_over_min > MAX_OVER_MIN or rel_iqr > MAX_REL_IQR:
        too_wide = True
        why = [f"max/min {max_over_min:.2f} > {MAX_OVER_MIN:g}"] if max_over_min > MAX_OVER_MIN else []
        why += [f"IQR/median {rel_iqr:.2f} > {MAX_REL_IQR:g}"] if rel_iqr > MAX_REL_IQR else []
        verdict = f"{span}: spread too wide to trust ({', '.join(why)})."
    else:
        too_wide = False
        verdict = (f"{span}: spread acceptable (max/min {max_over_min:.2f} <= {MAX_OVER_MIN:g}, "
                   f"IQR/median {rel_iqr:.2f} <= {MAX_REL_IQR:g}).")
    return RatioSummary(med, lo, hi, q1, q3, q3 - q1, n, max_over_min, rel_iqr, too_wide, verdict)


def rotated_order(items: Sequence[str], k: int) -> list[str]:
    """``items`` rotated right by ``k``: A B C, C A B, B C A, ... for ``k = 0, 1, 2, ...``.

    Over ``len(items)`` consecutive ``k`` each item takes each position once, so a drift of the machine's
    speed within a round hits every side alike.
    """
    if not items:
        return []
    s = k % len(items)
    return [*items[len(items) - s:], *items[: len(items) - s]]
