"""Distances between sample sets, with seeds."""

from __future__ import annotations

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
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be [N, d] and [M, d] with the same d, got {tuple(a.shape)}, {tuple(b.shape)}")
    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    dirs = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(dirs, dim=0)
    n = min(len(a), len(b))
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    pa = torch.quantile(a.double() @ dirs, q, dim=0)
    pb = torch.quantile(b.double() @ dirs, q, dim=0)
    return float((pa - pb).abs().mean())
