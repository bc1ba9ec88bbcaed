"""Metrics of the book: distances between sample sets, clustering quality (NMI), curve points, PSNR, linear probes.

Each function names the section of ``shared/spec/method.md`` (and of the paper) it implements. Randomised
metrics take explicit seeds, so a cell run twice gives the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, generator: torch.Generator | int = 0) -> float:
    """Sliced 1-Wasserstein distance between two point clouds (Rabin et al. 2011).

    Both sets are projected on ``n_projections`` random unit directions; the 1-D W1 distances (quantile
    matching on a common grid of ``min(len(a), len(b))`` quantiles) are averaged.

    Args:
        a: ``[N, d]`` samples.
        b: ``[M, d]`` samples.
        n_projections: Random directions.
        generator: Seed or generator of the directions.

    Returns:
        The distance (same units as the data).

    Raises:
        ValueError: If ``a`` and ``b`` are not finite, non-empty ``[N, d]`` and ``[M, d]`` sets with the same ``d``.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be [N, d] and [M, d] with the same d, got {tuple(a.shape)}, {tuple(b.shape)}")
    if len(a) == 0 or len(b) == 0 or a.shape[1] == 0:
        raise ValueError(f"a and b must hold at least one point of dimension >= 1, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("a and b must be finite (no NaN or inf)")
    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    dirs = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(dirs, dim=0)
    n = min(len(a), len(b))
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    pa = torch.quantile(a.double() @ dirs, q, dim=0)
    pb = torch.quantile(b.double() @ dirs, q, dim=0)
    return float((pa - pb).abs().mean())


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (tensor, array or sequence) as a NumPy array; ``name`` is used in error messages."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:  # ragged sequences
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}") from err


def mean_std(values: Sequence[float] | np.ndarray | Tensor) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of a set of per-seed numbers.

    The numeric counterpart of :func:`paperlib.book.fmt_pm`, which formats the same two numbers as text.

    Args:
        values: ``[n]`` numbers, ``n >= 1`` (e.g. one metric per seed).

    Returns:
        ``(mean, std)``; ``std`` is ``0.0`` when ``n == 1``.
    """
    v = _as_numpy(values, "values").astype(float).ravel()
    if v.size == 0:
        raise ValueError("values must hold at least 1 number, got 0")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def two_standard_errors(se_a: float, se_b: float) -> float:
    """Two standard errors of the difference of two independent means with standard errors ``se_a``, ``se_b``:
    ``2 sqrt(se_a² + se_b²)`` (the book's threshold for calling a gap more than noise)."""
    return 2 * (se_a**2 + se_b**2) ** 0.5


def kmeans_clusters(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    n_clusters: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_init: int = 10,
    standardize: bool = False,
) -> np.ndarray:
    """The K-means clusterings behind :func:`kmeans_nmi`: one per seed.

    Args: as :func:`kmeans_nmi` (``labels`` only give the default ``n_clusters`` and are checked).

    Returns:
        ``[len(seeds), N]`` int64 cluster of each sample, per seed.
    """
    from sklearn.cluster import KMeans

    x = _as_numpy(features, "features").astype(np.float64)
    y = _as_numpy(labels, "labels")
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"features must be [N, d] with N >= 1, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must be [N] with N = {len(x)} (the rows of features), got shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (no NaN or inf)")
    if n_clusters is None:
        n_clusters = len(np.unique(y))
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must be in [1, N={len(x)}], got {n_clusters}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least 1 seed, got 0")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if standardize:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return np.stack([KMeans(n_clusters=n_clusters, n_init=n_init, random_state=int(seed)).fit_predict(x)
                     for seed in seeds]).astype(np.int64)


def kmeans_nmi(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    n_clusters: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_init: int = 10,
    standardize: bool = False,
    clusters: np.ndarray | None = None,
) -> dict[str, Any]:
    """Feature quality as the NMI of K-means clusters with the true labels (spec §6, paper §3.2.1 / App. G).

    For each seed, scikit-learn ``KMeans(n_clusters, n_init=n_init, random_state=seed)`` clusters the features
    and ``normalized_mutual_info_score(labels, assignments)`` (arithmetic normalisation) scores the clusters.
    The seeds and ``n_init`` are our choice [O]; the paper states neither.

    Args:
        features: ``[N, d]`` features (e.g. token-averaged DiT block outputs, ``d = 1152``).
        labels: ``[N]`` true class labels (any hashable values).
        n_clusters: Number of clusters, in ``[1, N]``; defaults to the number of distinct labels (spec §6: 20 for
            ImageNet20).
        seeds: K-means seeds, at least one; one run per seed.
        n_init: K-means restarts per run (best inertia kept), ``>= 1``.
        standardize: Z-score each feature dimension (constant dimensions are left at 0) before K-means. The
            paper does not standardise: K-means runs on the raw pooled features, so keep ``False`` to reproduce it.
        clusters: ``[len(seeds), N]`` clusterings already computed by :func:`kmeans_clusters` with these
            arguments (they are scored instead of clustering again).

    Returns:
        ``{"mean": float, "std": float, "values": list[float]}``: the NMI per seed, its mean and its sample
        standard deviation (``ddof=1``; ``0.0`` for a single seed).
    """
    from sklearn.metrics import normalized_mutual_info_score

    if clusters is None:
        clusters = kmeans_clusters(features, labels, n_clusters, seeds, n_init, standardize)
    y = _as_numpy(labels, "labels")
    values = [float(normalized_mutual_info_score(y, c)) for c in clusters]
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def _nmi_of_counts(counts: np.ndarray) -> np.ndarray:
    """Arithmetic NMI of ``[B, n_labels, n_clusters]`` contingency tables, as scikit-learn computes it."""
    n = counts.sum(axis=(1, 2), keepdims=True).astype(np.float64)
    p = counts / n
    pi, pj = p.sum(axis=2, keepdims=True), p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.where(p > 0, p * np.log(p / (pi * pj)), 0.0).sum(axis=(1, 2))
        hy = -np.where(pi > 0, pi * np.log(pi), 0.0).sum(axis=(1, 2))
        hc = -np.where(pj > 0, pj * np.log(pj), 0.0).sum(axis=(1, 2))
    mi = np.clip(mi, 0.0, None)
    out = mi / np.maximum((hy + hc) / 2, np.finfo(np.float64).eps)
    one_each = ((pi > 0).sum(axis=(1, 2)) == 1) & ((pj > 0).sum(axis=(1, 2)) == 1)
    return np.where(one_each, 1.0, np.where(mi == 0, 0.0, out))


def bootstrap_nmi(
    labels: Tensor | np.ndarray | Sequence[int],
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """NMI over images drawn with replacement: the uncertainty of :func:`kmeans_nmi` over the image set [O].

    Replicate ``b`` draws ``N`` images with replacement and scores, on them, the clustering of seed
    ``b mod len(clusters)`` (so it also varies the K-means seed). The clusterings stay those of the full set:
    re-running K-means per replicate costs minutes and, checked on a few feature sets of chapter 4, gives
    intervals of about the same width. The draws depend only on ``seed``, ``N`` and ``n_boot``: two methods
    scored on the same images with the same ``seed`` get the same draws, so their replicates are paired and
    :func:`paired_interval` gives the uncertainty of their difference.

    Args:
        labels: ``[N]`` true class labels.
        clusters: ``[S, N]`` clusterings (:func:`kmeans_clusters`).
        n_boot: Replicates, ``>= 1``.
        seed: Seed of the draws.

    Returns:
        ``[n_boot]`` NMI per replicate.
    """
    y = np.unique(_as_numpy(labels, "labels"), return_inverse=True)[1].ravel()
    c = np.asarray(clusters)
    if c.ndim != 2 or c.shape[1] != len(y) or len(c) < 1:
        raise ValueError(f"clusters must be [S, N] with S >= 1 and N = {len(y)}, got shape {c.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    c = np.unique(c, return_inverse=True)[1].reshape(c.shape)
    ky, kc = int(y.max()) + 1, int(c.max()) + 1
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    pick = c[np.arange(n_boot) % len(c)][np.arange(n_boot)[:, None], idx]
    codes = (np.arange(n_boot)[:, None] * ky + y[idx]) * kc + pick
    counts = np.bincount(codes.ravel(), minlength=n_boot * ky * kc).reshape(n_boot, ky, kc)
    return _nmi_of_counts(counts)


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``a - b`` over paired bootstrap replicates (:func:`bootstrap_nmi`).

    Returns:
        ``(lo, hi)``, the central ``level`` interval of the replicate differences.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 1:
        raise ValueError(f"a and b must be paired replicates of the same shape [B], got {a.shape}, {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    lo, hi = np.percentile(a - b, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def saturation_point(
    t: Sequence[int] | np.ndarray | Tensor, acc: Sequence[float] | np.ndarray | Tensor, delta: float = 0.01
) -> int:
    """Saturation point of an accuracy-versus-switch-time curve: the choice of ``t_e`` (spec §4 [O], App. H.1).

    ``t_e = min{t on the grid : acc(t) >= max acc - delta}`` (with a ``1e-12`` tolerance against rounding): the
    first grid time whose accuracy is within ``delta`` of the plateau. Spec §4 uses ``delta`` = 1 point.

    Args:
        t: ``[n]`` grid of switch times ``t_c``, integers, strictly increasing.
        acc: ``[n]`` top-1 accuracies in ``[0, 1]`` (fractions, not percentages) at those times.
        delta: Absolute tolerance below the maximum, in ``[0, 1]``.

    Returns:
        The chosen grid time.
    """
    tt = _as_numpy(t, "t")
    aa = _as_numpy(acc, "acc").astype(float)
    if tt.ndim != 1 or len(tt) < 1:
        raise ValueError(f"t must be a 1-D grid with at least 1 point, got shape {tt.shape}")
    if aa.shape != tt.shape:
        raise ValueError(f"acc must have the same length as t ({len(tt)}), got shape {aa.shape}")
    if not np.issubdtype(tt.dtype, np.number) or np.any(tt != np.round(tt)):
        raise ValueError("t must hold integer time steps")
    if np.any(np.diff(tt) <= 0):
        raise ValueError("t must be strictly increasing")
    if not (np.isfinite(aa).all() and aa.min() >= 0 and aa.max() <= 1):
        raise ValueError(f"acc must be in [0, 1] (fractions), got range [{aa.min()}, {aa.max()}]")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    first = int(np.flatnonzero(aa >= aa.max() - delta - 1e-12)[0])
    return int(tt[first])


def knee_point(
    x: Sequence[float] | np.ndarray | Tensor,
    y: Sequence[float] | np.ndarray | Tensor,
    curve: str = "concave",
    direction: str = "increasing",
) -> float | None:
    """Kneedle knee of a curve (Satopaa et al. 2011) via ``kneed.KneeLocator`` (spec §4 alternative, §5.2).

    Offline Kneedle with kneed's defaults (sensitivity ``S=1``, ``interp_method="interp1d"``). For §4 use
    ``curve="concave", direction="increasing"`` on the accuracy curve; the per-sample elbow of §5.2 is
    :func:`paperlib.clarid.elbow_index`.

    Args:
        x: ``[n]`` abscissae, strictly increasing, ``n >= 3``.
        y: ``[n]`` ordinates.
        curve: ``"concave"`` or ``"convex"``.
        direction: ``"increasing"`` or ``"decreasing"``.

    Returns:
        The ``x`` of the knee, or ``None`` when kneed finds none (e.g. a straight line, or a constant ``y``).
    """
    from kneed import KneeLocator

    xx = _as_numpy(x, "x").astype(float)
    yy = _as_numpy(y, "y").astype(float)
    if curve not in ("concave", "convex"):
        raise ValueError(f"curve must be one of ['concave', 'convex'], got {curve!r}")
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"direction must be one of ['increasing', 'decreasing'], got {direction!r}")
    if xx.ndim != 1 or len(xx) < 3:
        raise ValueError(f"x must be 1-D with at least 3 points, got shape {xx.shape}")
    if yy.shape != xx.shape:
        raise ValueError(f"y must have the same length as x ({len(xx)}), got shape {yy.shape}")
    if not (np.isfinite(xx).all() and np.isfinite(yy).all()):
        raise ValueError("x and y must be finite")
    if np.any(np.diff(xx) <= 0):
        raise ValueError("x must be strictly increasing")
    if np.ptp(yy) == 0:  # kneed would divide by zero in its normalisation
        return None
    knee = KneeLocator(xx, yy, curve=curve, direction=direction).knee
    return None if knee is None else float(knee)


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-sample peak signal-to-noise ratio, ``10 log10(data_range² / MSE)`` in dB.

    The MSE is averaged over all non-batch dimensions. The default ``data_range = 2`` is the span of the
    model's ``[-1, 1]`` image range; use ``1.0`` for ``[0, 1]`` images or ``255.0`` for 8-bit ones.

    Args:
        a: ``[B, ...]`` samples (e.g. ``[B, 3, H, W]`` images).
        b: ``[B, ...]`` samples, same shape as ``a``.
        data_range: Peak-to-peak range of the data, ``> 0``.

    Returns:
        ``[B]`` PSNR in dB (``inf`` where a sample equals its counterpart), in the floating dtype of the inputs
        (float32 for integer inputs); computed in float64.

    Raises:
        ValueError: If ``a`` and ``b`` differ in shape or are not finite, or ``data_range`` is not in ``(0, inf)``.
    """
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"a and b must be [B, ...] with the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("a and b must be finite (no NaN or inf)")
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be in (0, inf), got {data_range}")
    dtype = torch.result_type(a, b)
    dtype = dtype if dtype.is_floating_point else torch.float32
    diff = (a.double() - b.double()).reshape(len(a), -1)
    mse = diff.square().mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse)).to(dtype)


def ssim(a: Tensor, b: Tensor, data_range: float = 255.0) -> Tensor:
    """Per-image structural similarity (Wang et al. 2004), scikit-image's ``structural_similarity``.

    Gaussian-free 7x7 windows (scikit-image's default, ``win_size`` shrunk to the image side when smaller),
    channels averaged.

    Args:
        a: ``[B, C, H, W]`` images (e.g. uint8).
        b: ``[B, C, H, W]``, same shape.
        data_range: Peak-to-peak range (255 for 8-bit images, 2 for ``[-1, 1]``).

    Returns:
        ``[B]`` float32 SSIM in ``[-1, 1]`` (1: identical).

    Raises:
        ValueError: If the shapes differ or are not ``[B, C, H, W]`` with ``H, W >= 3``.
    """
    from skimage.metrics import structural_similarity

    if a.shape != b.shape or a.ndim != 4 or min(a.shape[2:]) < 3:
        raise ValueError(f"a and b must be [B, C, H, W] with the same shape and H, W >= 3, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    win = min(7, min(a.shape[2:]) - (1 - min(a.shape[2:]) % 2))
    x, y = a.double().numpy(), b.double().numpy()
    return torch.tensor([structural_similarity(p, q, data_range=data_range, channel_axis=0, win_size=win)
                         for p, q in zip(x, y)], dtype=torch.float32)


def linear_probe_accuracy(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray | Sequence[int],
    test_x: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray | Sequence[int],
    C: float = 1.0,
    seed: int = 0,
) -> float:
    """Top-1 accuracy of a linear probe: how linearly readable a label (e.g. a generative factor) is from features.

    ``Pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))`` is fit on the
    training split and scored on the test split. The paper relates its best NMI layer/time to linear-probe
    studies (spec §6, App. G.1); the book uses probes to read generative factors from features.

    Args:
        train_x: ``[N, d]`` training features.
        train_y: ``[N]`` training labels, at least 2 classes.
        test_x: ``[M, d]`` test features (same ``d``).
        test_y: ``[M]`` test labels.
        C: Inverse L2 regularisation strength, ``> 0``.
        seed: ``random_state`` of the classifier (the default lbfgs solver is deterministic; kept for solvers
            that shuffle).

    Returns:
        Accuracy on the test split, in ``[0, 1]``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    xtr = _as_numpy(train_x, "train_x").astype(np.float64)
    xte = _as_numpy(test_x, "test_x").astype(np.float64)
    ytr = _as_numpy(train_y, "train_y")
    yte = _as_numpy(test_y, "test_y")
    if xtr.ndim != 2 or len(xtr) < 2:
        raise ValueError(f"train_x must be [N, d] with N >= 2, got shape {xtr.shape}")
    if xte.ndim != 2 or len(xte) < 1 or xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_x must be [M, d] with M >= 1 and d = {xtr.shape[1]}, got shape {xte.shape}")
    if ytr.shape != (len(xtr),):
        raise ValueError(f"train_y must be [N] with N = {len(xtr)}, got shape {ytr.shape}")
    if yte.shape != (len(xte),):
        raise ValueError(f"test_y must be [M] with M = {len(xte)}, got shape {yte.shape}")
    if len(np.unique(ytr)) < 2:
        raise ValueError("train_y must hold at least 2 classes, got 1")
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be in (0, inf), got {C}")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise ValueError("train_x and test_x must be finite (no NaN or inf)")
    probe = Pipeline([
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=C, max_iter=5000, random_state=seed)),
    ])
    probe.fit(xtr, ytr)
    return float(probe.score(xte, yte))
