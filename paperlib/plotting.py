"""The book's figures: one style, one colour per method across every chapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

METHOD_COLORS: dict[str, str] = {
    "data": "#7f7f7f",
    "original": "#4c72b0",
    "reconstruction": "#64b5cd",
    "cfg": "#dd8452",
    "clarid": "#c44e52",
    "random": "#8172b3",
    "vanilla": "#4c72b0",
    "dmdistill": "#55a868",
    "cfgdistill": "#dd8452",
    "cadistill": "#c44e52",
}
"""Consistent colours: originals, CFG, CLARID (and the distillation methods of later chapters)."""

CLASS_COLORS = ("#4c72b0", "#c44e52")


def use_style() -> None:
    """The book's matplotlib defaults."""
    mpl.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 9,
            "axes.titlesize": 9,
            "axes.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "legend.fontsize": 8,
            "image.cmap": "magma",
        }
    )


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def density_image(ax, log_density_fn, extent: Sequence[float], resolution: int = 300, **kw) -> None:
    """Show ``exp(log_density_fn(points))`` on a grid over ``extent = (x1min, x1max, x2min, x2max)``."""
    x1 = torch.linspace(extent[0], extent[1], resolution)
    x2 = torch.linspace(extent[2], extent[3], resolution)
    g1, g2 = torch.meshgrid(x1, x2, indexing="xy")
    pts = torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)
    dens = log_density_fn(pts).exp().reshape(resolution, resolution)
    kw.setdefault("alpha", 0.5)
    ax.imshow(_np(dens), origin="lower", extent=extent, aspect="auto", cmap="Greys", **kw)


def scatter_2d(ax, x: Tensor, color: str, label: str | None = None, s: float = 3, alpha: float = 0.5) -> None:
    """Scatter ``[N, 2]`` points."""
    x = _np(x)
    ax.scatter(x[:, 0], x[:, 1], s=s, c=color, alpha=alpha, label=label, linewidths=0, rasterized=True)


def toy_panels(
    panels: Mapping[str, Tensor],
    colors: Mapping[str, str],
    background=None,
    core_lines: Sequence[float] = (),
    extent: Sequence[float] = (-3, 3, -2.5, 2.5),
    ncols: int | None = None,
    size: float = 2.4,
) -> Figure:
    """One scatter panel per entry of ``panels`` (title -> ``[N, 2]`` points) over an optional density.

    Args:
        panels: Ordered titles and points.
        colors: Title -> colour.
        background: ``ax -> None`` drawing a density underneath (e.g. a :func:`density_image` closure).
        core_lines: ``x2`` levels of the class core lines, drawn dashed.
        extent: Axis limits ``(x1min, x1max, x2min, x2max)``.
        ncols: Panels per row (default: all in one row).
        size: Inches per panel.
    """
    n = len(panels)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (title, pts) in zip(axes.flat, panels.items()):
        if background is not None:
            background(ax)
        for level in core_lines:
            ax.axhline(level, color="k", lw=0.6, ls="--", alpha=0.6)
        scatter_2d(ax, pts, colors[title])
        ax.set_title(title)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("$x_2$")
    for ax in axes[-1]:
        ax.set_xlabel("$x_1$")
    fig.tight_layout()
    return fig


def loss_curves(curves: Mapping[str, np.ndarray], window: int = 200, ylabel: str = "loss") -> Figure:
    """Running-mean training curves, one line per run."""
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    for name, c in curves.items():
        c = _np(c).astype(float)
        w = max(1, min(window, len(c) // 5))
        ax.plot(np.convolve(c, np.ones(w) / w, mode="valid"), lw=1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def distance_histograms(distances: Mapping[str, Tensor], colors: Mapping[str, str], xlabel: str,
                        bins: int = 60, xmax: float | None = None) -> Figure:
    """Overlaid histograms of a per-sample distance for several methods."""
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    xmax = xmax or max(float(_np(d).max()) for d in distances.values())
    edges = np.linspace(0, xmax, bins + 1)
    for name, d in distances.items():
        ax.hist(_np(d), bins=edges, histtype="step", lw=1.4, density=True, color=colors[name], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    return fig


def metric_vs_param(x: Sequence[float], series: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    colors: Mapping[str, str], xlabel: str, ylabel: str, paper_line: float | None = None) -> Figure:
    """Mean ± std curves (``name -> (mean, std)``) against a swept parameter."""
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    for name, (m, s) in series.items():
        m, s = _np(m), _np(s)
        ax.plot(x, m, marker="o", ms=3, lw=1.2, color=colors[name], label=name)
        ax.fill_between(x, m - s, m + s, color=colors[name], alpha=0.2, lw=0)
    if paper_line is not None:
        ax.axhline(paper_line, color="k", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    return fig
