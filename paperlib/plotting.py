"""The book's figures: one style, one colour per method across every chapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
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
    "isotropic": "#8172b3",
    "span": "#937860",
    "lowfreq": "#55a868",
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
    """Running-mean training curves, one line per run (a run without a recorded history, e.g. a pretrained
    model, is left out)."""
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    for name, c in curves.items():
        c = _np(c).astype(float)
        if len(c) == 0:
            continue
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


def image_grid(
    rows: Mapping[str, Tensor],
    col_titles: Sequence[str] | None = None,
    size: float = 0.75,
    title: str | None = None,
) -> Figure:
    """A grid of images: one row per entry of ``rows`` (label -> ``[C, 3, H, W]`` uint8), equal lengths.

    Args:
        rows: Ordered row labels and their images.
        col_titles: Optional titles above the columns.
        size: Inches per image.
        title: Figure title.
    """
    labels = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(labels), ncols, figsize=(size * ncols + 0.9, size * len(labels) + 0.3),
                             squeeze=False)
    for r, label in enumerate(labels):
        imgs = _np(rows[label])
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c].transpose(1, 2, 0), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return fig


def spectra(sigma: Tensor, evr: Tensor, k_star: Tensor, names: Sequence[str] | None = None) -> Figure:
    """Singular values (left, log scale) and EVR curves with their elbows ``k*`` (right), one line per image.

    Args:
        sigma: ``[B, K]`` singular values.
        evr: ``[B, K]`` explained-variance ratios.
        k_star: ``[B]`` elbows (1-based).
        names: Legend labels.
    """
    sigma, evr, k_star = _np(sigma), _np(evr), _np(k_star)
    K = sigma.shape[1]
    ks = np.arange(1, K + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 2.7))
    for i in range(len(sigma)):
        line = a.plot(ks, sigma[i], lw=1, marker="o", ms=2, label=None if names is None else names[i])[0]
        b.plot(ks, evr[i], lw=1, color=line.get_color())
        b.plot([k_star[i]], [evr[i, k_star[i] - 1]], marker="*", ms=9, color=line.get_color())
    a.set_yscale("log")
    a.set_xlabel("direction $i$")
    a.set_ylabel(r"$\sigma_i$")
    b.set_xlabel("$k$")
    b.set_ylabel("EVR$_k$")
    b.set_ylim(0, 1.02)
    if names is not None:
        a.legend(fontsize=6, ncols=2)
    fig.tight_layout()
    return fig


def count_histograms(values: Mapping[str, np.ndarray], xlabel: str, colors: Mapping[str, str] | None = None) -> Figure:
    """Side-by-side bar histograms of integer values (e.g. ``k*``), one panel per entry."""
    fig, axes = plt.subplots(1, len(values), figsize=(3.2 * len(values), 2.5), squeeze=False)
    for ax, (name, v) in zip(axes[0], values.items()):
        v = _np(v).astype(int)
        counts = np.bincount(v)
        ks = np.arange(len(counts))
        color = None if colors is None else colors.get(name)
        ax.bar(ks[counts > 0], counts[counts > 0] / len(v), color=color, width=0.8)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("fraction of images")
    fig.tight_layout()
    return fig


def heatmaps(tables: Mapping[str, pd.DataFrame], xlabel: str, ylabel: str, cbar_label: str) -> Figure:
    """One annotated heatmap per entry (title -> DataFrame, rows x columns), best cell boxed."""
    fig, axes = plt.subplots(1, len(tables), figsize=(0.45 * max(t.shape[1] for t in tables.values()) * len(tables)
                                                      + 1.5 * len(tables), 0.32 * max(t.shape[0] for t in
                                                                                   tables.values()) + 1.2),
                             squeeze=False)
    for ax, (title, t) in zip(axes[0], tables.items()):
        v = t.to_numpy(dtype=float)
        im = ax.imshow(v, cmap="viridis", aspect="auto")
        for (i, j), x in np.ndenumerate(v):
            ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=5.5, color="w" if x < v.mean() else "k")
        i, j = np.unravel_index(np.nanargmax(v), v.shape)
        ax.add_patch(mpl.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="r", lw=1.5))
        ax.set_xticks(range(t.shape[1]), [str(c) for c in t.columns], fontsize=6)
        ax.set_yticks(range(t.shape[0]), [str(r) for r in t.index], fontsize=6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.8)
    fig.tight_layout()
    return fig


def nmi_vs_k(table: pd.DataFrame, colors: Mapping[str, str], k_star: Mapping[str, tuple[float, float]] | None = None,
             labels: Mapping[str, str] | None = None, titles: Mapping[str, str] | None = None) -> Figure:
    """NMI against the number ``k`` of removed directions (Fig. 4 analogue), one panel per dataset.

    Fixed ``k`` (methods ``k<n>``) as a line, the reconstruction at ``k = 0``; CLARID and the random-direction
    control at CLARID's mean ``k*`` (horizontal bar: the s.d. of ``k*`` over images), where both remove ``k*``
    directions per image; the originals and pure CFG (``cfg<w>``), which remove none, as horizontal lines.
    Vertical bars: s.d. over K-means seeds.

    Args:
        table: Indexed by ``(dataset, method)`` with columns ``NMI`` and ``std``.
        colors: :data:`METHOD_COLORS`.
        k_star: ``dataset -> (mean, s.d.)`` of CLARID's ``k*``; without it CLARID is a horizontal line too.
        labels: Legend names of the methods (default: the method names).
        titles: Panel titles per dataset (default: the dataset names).
    """
    labels, titles = dict(labels or {}), dict(titles or {})
    datasets = list(dict.fromkeys(table.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 2.9), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        t = table.loc[ds]
        ks = sorted(int(m[1:]) for m in t.index if m.startswith("k") and m[1:].isdigit())
        if ks:
            m = t.loc[[f"k{k}" for k in ks]]
            ax.errorbar(ks, m["NMI"], m["std"], color=colors["clarid"], lw=1, marker="o", ms=3, alpha=0.6,
                        label="fixed $k$")
        if "reconstruction" in t.index:
            ax.errorbar([0], [t.loc["reconstruction", "NMI"]], [t.loc["reconstruction", "std"]], ls="none",
                        color=colors["reconstruction"], marker="s", ms=5,
                        label=labels.get("reconstruction", "reconstruction"))
        lines = [m for m in t.index if m == "original" or m.startswith("cfg")]
        if "clarid" in t.index and not (k_star and ds in k_star):
            lines.append("clarid")
        for name in lines:
            key = "cfg" if name.startswith("cfg") else name
            ax.axhline(t.loc[name, "NMI"], color=colors[key], lw=1.2, ls=":" if name == "original" else "--",
                       label=labels.get(name, name))
        if k_star and ds in k_star:
            mean, sd = k_star[ds]
            for name, marker, ms in (("random", "s", 6), ("clarid", "*", 11)):
                if name in t.index:
                    ax.errorbar([mean], [t.loc[name, "NMI"]], yerr=[t.loc[name, "std"]], xerr=[sd], ls="none",
                                color=colors[name], marker=marker, ms=ms, capsize=2, lw=0.8,
                                label=labels.get(name, name))
        ax.set_xlabel("$k$ (removed directions)")
        ax.set_ylabel("K-means NMI")
        ax.set_title(titles.get(ds, ds))
    handles = dict(zip(*reversed(axes[0, 0].get_legend_handles_labels())))
    cfgs = sorted(m for m in table.index.get_level_values(1) if m.startswith("cfg"))
    wanted = [labels.get(m, m) for m in ("original", "reconstruction")] + ["fixed $k$"] + [
        labels.get(m, m) for m in ("clarid", "random", *cfgs)]
    names = [n for n in dict.fromkeys(wanted) if n in handles]
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=3, fontsize=7,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def embedding_panels(panels: Mapping[str, Tensor], labels: Tensor, seed: int = 0, title: str | None = None) -> Figure:
    """2-D t-SNE (scikit-learn, seeded) of each feature set, coloured by class."""
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6), squeeze=False)
    y = _np(labels)
    for ax, (name, f) in zip(axes[0], panels.items()):
        f = _np(f).astype(np.float64)
        perplexity = float(min(30, max(2, (len(f) - 1) // 3)))
        z = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(f)
        ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", s=4, linewidths=0, vmin=0, vmax=9, rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9, y=1.02)
    fig.tight_layout()
    return fig


def two_stage_curves(curves: Mapping[str, pd.DataFrame], t_star: Mapping[str, int],
                     knee: Mapping[str, int | None]) -> Figure:
    """Accuracy against the switch time ``t_c`` per dataset: each classifier thin, their mean thick (Fig. 20).

    Args:
        curves: ``dataset -> DataFrame(t_c, classifier, accuracy[, se])`` (classifier ``"mean"`` = the
            average; its standard error ``se`` over samples is drawn as a band).
        t_star: Chosen ``t*`` per dataset (dashed).
        knee: Kneedle knee per dataset (dotted), or None.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 2.8), squeeze=False)
    for ax, (ds, c) in zip(axes[0], curves.items()):
        for name, g in c.groupby("classifier", sort=False):
            thick = name == "mean"
            ax.plot(g.t_c, 100 * g.accuracy, marker="o" if thick else None, ms=3, lw=2 if thick else 0.8,
                    alpha=1 if thick else 0.6, color="k" if thick else None, label=name)
            if thick and "se" in g:
                ax.fill_between(g.t_c, 100 * (g.accuracy - g.se), 100 * (g.accuracy + g.se), color="k",
                                alpha=0.15, lw=0, label="mean ± s.e.")
        ax.axvline(t_star[ds], color=METHOD_COLORS["clarid"], ls="--", lw=1, label=f"$t^*$ = {t_star[ds]}")
        if knee.get(ds) is not None:
            ax.axvline(knee[ds], color="grey", ls=":", lw=1, label=f"knee = {knee[ds]}")
        ax.set_xlabel("switch time $t_c$")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(ds)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def method_curves(summary: pd.DataFrame, x: str, panels: Mapping[str, str], xlabel: str,
                  methods: Sequence[str] | None = None, invert_x: bool = False, xlog: bool = False,
                  hlines: Mapping[str, float] | None = None) -> Figure:
    """One panel per metric (title -> column of ``summary``), one line per method with ± s.e. bars.

    Args:
        summary: :func:`paperlib.edits.summarize`-style rows with ``method``, ``x``, each panel's column and its
            ``<column>_se`` (``x`` may have an ``_se`` too, drawn as horizontal bars).
        x: Column on the horizontal axis (e.g. ``w``, ``psnr``, ``steps``).
        panels: Panel title -> column.
        xlabel: Axis label.
        methods: Order and subset of methods (default: as they appear).
        invert_x: Draw the axis decreasing (e.g. PSNR: farther from the input to the right).
        xlog: Logarithmic horizontal axis.
        hlines: Panel title -> a reference level drawn dotted (e.g. the originals' value).
    """
    methods = list(methods or dict.fromkeys(summary.method))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.6), squeeze=False)
    for ax, (title, col) in zip(axes[0], panels.items()):
        for m in methods:
            d = summary[summary.method == m].sort_values(x)
            if d.empty or d[col].isna().all():
                continue
            ax.errorbar(d[x], d[col], yerr=d.get(f"{col}_se"), xerr=d.get(f"{x}_se"), marker="o", ms=3, lw=1.2,
                        capsize=2, color=METHOD_COLORS.get(m, None), label=m)
        if hlines and title in hlines:
            ax.axhline(hlines[title], color="k", ls=":", lw=1)
        if invert_x:
            ax.invert_xaxis()
        if xlog:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    axes[0, -1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def training_curves(curves: Mapping[str, Mapping[str, np.ndarray]], ylabel: str, percent: bool = False,
                    x: Sequence[float] | None = None, xlabel: str = "epoch") -> Figure:
    """Curves over epochs (or another axis), mean ± std over seeds: one panel per key of ``curves`` (e.g. a
    dataset), one line per method (:data:`METHOD_COLORS`).

    Args:
        curves: ``panel -> method -> [seeds, points]`` values.
        ylabel: Axis label.
        percent: Show ``100 ×`` the values.
        x: Positions of the points (default: epochs ``1..points``).
        xlabel: Axis label.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 2.6), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], curves.items()):
        for method, v in lines.items():
            v = _np(v).astype(float) * (100 if percent else 1)
            pos = np.arange(1, v.shape[1] + 1) if x is None else np.asarray(x, dtype=float)
            m, s = v.mean(0), v.std(0, ddof=1) if len(v) > 1 else np.zeros(v.shape[1])
            ax.plot(pos, m, lw=1.2, color=METHOD_COLORS.get(method), label=f"{method} ({len(v)})",
                    marker=None if x is None else "o", ms=3)
            ax.fill_between(pos, m - s, m + s, color=METHOD_COLORS.get(method), alpha=0.2, lw=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def method_scatter(points: Mapping[str, pd.DataFrame], x: str, ys: Mapping[str, str], xlabel: str) -> Figure:
    """One point per run (e.g. per student), coloured by method: a row of panels per key of ``points`` (e.g.
    a dataset), a column per quantity of ``ys``.

    Args:
        points: ``key -> DataFrame`` indexed by ``(method, seed)`` with the column ``x`` and the ``ys`` columns.
        x: Column on the horizontal axis.
        ys: ``column -> axis label`` on the vertical axes (a column a frame lacks leaves its panel empty).
        xlabel: Horizontal axis label.
    """
    fig, axes = plt.subplots(len(points), len(ys), figsize=(3.2 * len(ys), 2.7 * len(points)), squeeze=False)
    for row, (key, frame) in zip(axes, points.items()):
        for ax, (col, label) in zip(row, ys.items()):
            ax.set_title(key)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            if col not in frame.columns or x not in frame.columns:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                continue
            for method, d in frame.groupby(level=0, sort=False):
                ax.scatter(d[x], d[col], s=18, color=METHOD_COLORS.get(method), label=f"{method} ({len(d)})",
                           edgecolors="white", linewidths=0.5)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def empty_figure(message: str) -> Figure:
    """A small placeholder figure that says why there is nothing to draw (e.g. a run not made yet)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=8)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def sweep_panels(sweeps: Mapping[str, pd.DataFrame], ylabel: str, default: Mapping[str, float] | None = None,
                 reference: float | None = None, percent: bool = True) -> Figure:
    """One panel per swept hyperparameter: ``mean`` ± ``std`` (columns) against its value (the index).

    Args:
        sweeps: ``name -> DataFrame(index=value, columns mean, std)``.
        ylabel: Axis label.
        default: The default value per name (marked dashed).
        reference: A horizontal reference line (e.g. Vanilla's mean), dotted.
        percent: Show ``100 ×`` the values.
    """
    k = 100 if percent else 1
    fig, axes = plt.subplots(1, len(sweeps), figsize=(2.6 * len(sweeps), 2.5), squeeze=False, sharey=True)
    for ax, (name, t) in zip(axes[0], sweeps.items()):
        x, m, s = t.index.to_numpy(float), k * t["mean"].to_numpy(float), k * t["std"].fillna(0).to_numpy(float)
        ax.errorbar(x, m, yerr=s, marker="o", ms=3, lw=1.2, capsize=2, color=METHOD_COLORS["cadistill"])
        if default is not None and name in default:
            ax.axvline(default[name], color="grey", ls="--", lw=0.8)
        if reference is not None:
            ax.axhline(k * reference, color=METHOD_COLORS["vanilla"], ls=":", lw=1)
        ax.set_xlabel(name)
    axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig
