"""CDM features of images, ``avgpool f_{l,t}(x_t, c)`` (paper §3.2.1, §3.7, App. G).

The CDM sees an image only through a noisy latent, so a feature of an image at time ``t`` is taken at its
deterministic DDIM inversion ``x_t = F_inv(x_0; c, t)`` (spec §3.7 for raw images). We use the same rule for
every image a chapter compares — originals, Canonical Samples, CFG samples — so their features differ only
through the images [O]. One inversion trajectory gives the features at every grid time at once
(:func:`layer_time_features`, for the layer x time NMI sweep of App. G.1).

The chapters call the cached forms, :func:`cached_image_features` and :func:`layer_time_nmi`, keyed by the
model and a fingerprint of the images, so a rebuild of the book does not invert the images again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from paperlib.cache import load_or_compute, tensor_fingerprint
from paperlib.data import stratified_subset, to_model_range
from paperlib.diffusion import ddim_grid, ddim_invert
from paperlib.models import CDM, model_device
from paperlib.progress import tqdm
from paperlib.validate import check_int, check_labels, check_tensor, describe


@torch.no_grad()
def layer_time_features(
    model: CDM,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    times: list[int],
    layers: list[str],
    num_steps: int = 100,
    batch_size: int = 250,
    progress: bool = True,
) -> dict[tuple[str, int], Tensor]:
    """Pooled features ``avgpool f_{l,t}(F_inv(x_0; c, t), c)`` for every layer ``l`` and time ``t``.

    Args:
        model: The CDM.
        images: ``[N, 3, H, W]`` uint8 images, ``N >= 1``.
        labels: ``[N]`` integer class labels (the condition ``c``); the null class ``num_classes`` is allowed
            (features that see only the image).
        alpha_bar: ``[T + 1]`` schedule of the model.
        times: Grid times (``0`` = the clean image itself).
        layers: Layer names (:meth:`paperlib.models.CDM.layer_names`).
        num_steps: DDIM grid of the inversion.
        batch_size: Images per batch.
        progress: tqdm bar over batches.

    Returns:
        ``{(layer, t): [N, C_l] float32}``.

    Raises:
        ValueError: If ``images`` is not a non-empty uint8 ``[N, 3, H, W]`` tensor, ``labels`` are not integer
            labels in ``0..num_classes``, a time is not an integer on the grid, or a layer is unknown.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a torch.uint8 tensor of shape [N, 3, H, W], got {describe(images)}")
    check_tensor("images", images, nonempty=True)
    labels = check_labels("labels", labels, len(images), model.num_classes, allow_null=True)
    batch_size = check_int("batch_size", batch_size, 1)
    times = [check_int("times[]", t, 0) for t in times]
    grid = ddim_grid(len(alpha_bar) - 1, num_steps).tolist()
    bad = [t for t in times if t not in grid]
    if bad:
        raise ValueError(f"times must lie on the DDIM grid (step {grid[1]}), got {bad}")
    if not times:
        raise ValueError("times must not be empty")
    names = model.layer_names()
    if any(layer not in names for layer in layers):
        raise ValueError(f"layers must be among {names}, got {layers}")
    out: dict[tuple[str, int], list[Tensor]] = {(layer, t): [] for layer in layers for t in times}
    t_max = max(times)
    dev = model_device(model)
    for start in tqdm(range(0, len(images), batch_size), desc="CDM features", disable=not progress, leave=False):
        x0 = model.encode(to_model_range(images[start : start + batch_size]).to(dev))
        y = labels[start : start + batch_size].to(dev)
        traj = {0: x0}
        if t_max > 0:
            _, traj = ddim_invert(model, x0, y, alpha_bar, t_max, num_steps=num_steps, return_trajectory=True)
        for t in times:
            tt = torch.full((len(y),), t)
            for layer, f in _pooled(model, traj[t], tt, y, layers).items():
                out[(layer, t)].append(f.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _pooled(model: CDM, x_t: Tensor, t: Tensor, y: Tensor, layers: list[str]) -> dict[str, Tensor]:
    """``avgpool f_{l,t}`` of every layer, from one forward pass when the model offers it (the DiT's
    ``pooled_features_many``), else one truncated pass per layer."""
    many = getattr(model, "pooled_features_many", None)
    if many is not None:
        return many(x_t, t, y, layers)
    return {layer: model.pooled_features(x_t, t, y, layer) for layer in layers}


def image_features(
    model: CDM,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    t: int,
    layer: str = "mid",
    num_steps: int = 100,
    batch_size: int = 250,
    progress: bool = True,
) -> Tensor:
    """Pooled ``f_{l,t}`` of images at their inversion to ``t``: ``[N, C_l]`` (e.g. Canonical Features, §3.7)."""
    return layer_time_features(model, images, labels, alpha_bar, [t], [layer], num_steps, batch_size,
                               progress)[(layer, t)]


def cached_image_features(
    model: CDM,
    model_key: str,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    t: int,
    layer: str = "mid",
    num_steps: int = 100,
    publish: bool = False,
    progress: bool = True,
) -> Tensor:
    """:func:`image_features`, cached under ``(model_key, images, labels, t, layer, num_steps)``.

    Args:
        model_key: Identifies the CDM (its manifest ``key``).
        publish: Keep the artifact in ``artifacts/`` (the published book).

    Returns:
        ``[N, C_l]`` float32.
    """
    return _cached_features(model, model_key, images, labels, alpha_bar, t, layer, num_steps, publish, progress)[0]


def _cached_features(model: CDM, model_key: str, images: Tensor, labels: Tensor, alpha_bar: Tensor, t: int,
                     layer: str, num_steps: int, publish: bool, progress: bool) -> tuple[Tensor, float]:
    """:func:`cached_image_features` and the seconds its computation took when it ran (its manifest's)."""
    config = {"model": model_key, "images": tensor_fingerprint(images), "labels": tensor_fingerprint(labels),
              "t": int(t), "layer": layer, "num_steps": num_steps}
    tensors, manifest = load_or_compute(
        "image_features", config,
        lambda: {"features": image_features(model, images, labels, alpha_bar, t, layer, num_steps, progress=progress)},
        publish=publish, verbose=False)
    return tensors["features"], float(manifest.get("wall_time_s", float("nan")))


def sweep_sample(labels: Tensor, n: int, balanced: bool = True, seed: int = 0) -> Tensor:
    """Positions of the images the layer x time sweep scores (App. G.1): a class-balanced random sample
    (:func:`paperlib.data.stratified_subset`) or, with ``balanced=False``, the first ``n`` (what the book's
    interim CDMs used: chapter 3's images are in index order and our CIFAR-10 copy is ordered by class, so its
    first images hold few of its classes).

    Args:
        labels: ``[N]`` labels of the candidate images.
        n: Sample size (at most ``N`` are taken).
        balanced: Class-balanced (``True``) or the first ``n``.
        seed: Seed of the balanced draw.

    Returns:
        ``[min(n, N)]`` int64 sorted positions into ``labels``.
    """
    n = min(check_int("n", n, 1), len(labels))
    return stratified_subset(labels, n=n, seed=seed) if balanced else torch.arange(n)


def layer_time_nmi(
    model: CDM,
    model_key: str,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    times: list[int],
    layers: list[str],
    num_steps: int = 100,
    seeds: Sequence[int] = (0, 1),
    publish: bool = False,
    progress: bool = True,
    condition: Tensor | None = None,
) -> pd.DataFrame:
    """K-means NMI of ``avgpool f_{l,t}`` with the labels over a layer x time grid (App. G.1, Fig. 18), cached.

    Args:
        condition: ``[N]`` class condition of the inversion and the features (e.g. all ``model.null_class``:
            features that see only the image [O]); default ``labels`` (the paper's ``f_{l,t}(x, c)``). The
            NMI is always scored against ``labels``.

    Returns:
        ``[len(layers), len(times)]`` mean NMI over ``seeds`` (:func:`paperlib.metrics.kmeans_nmi`), rows
        ``layers``, columns ``times``; ``attrs["seconds"]``: how long its computation took when it ran.
    """
    from paperlib.metrics import kmeans_nmi

    config = {"model": model_key, "images": tensor_fingerprint(images), "labels": tensor_fingerprint(labels),
              "times": [int(t) for t in times], "layers": list(layers), "num_steps": num_steps,
              "seeds": [int(s) for s in seeds]}
    if condition is not None:
        if condition.shape != labels.shape:
            raise ValueError(f"condition must have the labels' shape {tuple(labels.shape)}, "
                             f"got {tuple(condition.shape)}")
        config["condition"] = tensor_fingerprint(condition)
    cond = labels if condition is None else condition

    def compute() -> dict[str, Tensor]:
        feats = layer_time_features(model, images, cond, alpha_bar, times, layers, num_steps, progress=progress)
        return {"nmi": torch.tensor([[kmeans_nmi(feats[(layer, t)], labels, seeds=seeds)["mean"] for t in times]
                                     for layer in layers], dtype=torch.float64)}

    tensors, manifest = load_or_compute("layer_time_nmi", config, compute, publish=publish, verbose=False)
    out = pd.DataFrame(tensors["nmi"].numpy(), index=list(layers), columns=list(times))
    out.attrs["seconds"] = float(manifest.get("wall_time_s", float("nan")))
    return out


def methods_nmi(
    model: CDM,
    model_key: str,
    sets: dict[str, Tensor],
    labels: Tensor,
    alpha_bar: Tensor,
    t: int,
    layer: str = "mid",
    num_steps: int = 100,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    condition: Tensor | None = None,
    publish: bool = False,
    n_boot: int = 1000,
    boot_seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Tensor], dict[str, np.ndarray]]:
    """K-means NMI with ``labels`` of each method's pooled features at ``(layer, t)`` (Fig. 4), cached, with
    its uncertainty over the images.

    Args:
        sets: ``method -> [N, 3, H, W] uint8`` images aligned with ``labels`` (originals, CLARID, CFG, ...).
        condition: ``[N]`` class condition of the inversion and the features (e.g. the null class);
            default ``labels`` (the paper's ``f_{l,t}(x, c)``).
        n_boot: Bootstrap replicates over the images (:func:`paperlib.metrics.bootstrap_nmi`).
        boot_seed: Seed of the bootstrap draws, the same for every method (paired replicates).

    Returns:
        ``(table, features, boot)``: one row per method with the ``NMI`` mean and ``std`` over ``seeds`` and
        its standard error ``se`` over images, the s.d. of the bootstrap replicates (``attrs["seconds"]``:
        how long computing the features took when it ran); ``method -> [N, C_l]`` features
        (:func:`cached_image_features`); and ``method -> [n_boot]`` paired bootstrap replicates of the NMI.
    """
    from paperlib.metrics import bootstrap_nmi, kmeans_clusters, kmeans_nmi

    cond = labels if condition is None else condition
    feats, rows, boot, seconds = {}, {}, {}, 0.0
    for name, imgs in sets.items():
        feats[name], sec = _cached_features(model, model_key, imgs, cond, alpha_bar, int(t), layer, num_steps,
                                            publish, False)
        seconds += sec
        clusters = kmeans_clusters(feats[name], labels, seeds=seeds)
        nmi = kmeans_nmi(feats[name], labels, seeds=seeds, clusters=clusters)
        boot[name] = bootstrap_nmi(labels, clusters, n_boot, boot_seed)
        rows[name] = {"NMI": nmi["mean"], "std": nmi["std"], "se": float(boot[name].std(ddof=1))}
    table = pd.DataFrame(rows).T.rename_axis("method")
    table.attrs["seconds"] = seconds
    return table, feats, boot


def condition_control(
    model: CDM,
    model_key: str,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    t: int,
    layer: str = "mid",
    num_steps: int = 100,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    seed: int = 0,
    publish: bool = False,
) -> dict[str, Any]:
    """K-means NMI of features taken under a *shuffled* class condition (our control for App. G's NMI).

    The images are inverted and featurised with ``labels`` permuted (seeded by ``seed``). If the features
    cluster by that condition more than by the true class, NMI measures the class embedding, not the image.

    Returns:
        ``{"condition": NMI with the shuffled labels, "class": NMI with the true labels}``, each
        :func:`paperlib.metrics.kmeans_nmi`'s ``{"mean", "std", ...}``, and ``"seconds"``: how long computing
        the features took when it ran.
    """
    from paperlib.metrics import kmeans_nmi

    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    f, seconds = _cached_features(model, model_key, images, shuffled, alpha_bar, t, layer, num_steps, publish, False)
    return {"condition": kmeans_nmi(f, shuffled, seeds=seeds), "class": kmeans_nmi(f, labels, seeds=seeds),
            "seconds": seconds}


NMI_SATURATED = 0.95
"""NMI of the originals from which clustering cannot show an improvement (the paper: 1.0 on CIFAR-10)."""

Boot = Mapping[str, np.ndarray]
"""``method -> [n_boot]`` paired bootstrap replicates of the NMI (:func:`methods_nmi`)."""


def method_label(name: str) -> str:
    """A reader's name of a row of :func:`methods_nmi` (the CLARID run's outputs, :mod:`paperlib.canonical`):
    ``"originals"``, ``"reconstruction (k = 0)"``, ``"k = 4"``, ``"CLARID (k*)"``, ``"k* random
    directions"``, ``"CFG w=3"``; other names unchanged."""
    fixed = {"original": "originals", "reconstruction": "reconstruction (k = 0)", "clarid": "CLARID (k*)",
             "random": "k* random directions"}
    if name in fixed:
        return fixed[name]
    if name.startswith("k") and name[1:].isdigit():
        return f"k = {int(name[1:])}"
    if name.startswith("cfg"):
        return f"CFG w={name[3:]}"
    return name


def method_order(name: str) -> tuple[int, float]:
    """Sort key of the rows: originals, reconstruction, fixed k in numeric order, CLARID, random, CFG by w."""
    fixed = {"original": 0, "reconstruction": 1, "clarid": 3, "random": 4}
    if name in fixed:
        return fixed[name], 0.0
    if name.startswith("k") and name[1:].isdigit():
        return 2, float(name[1:])
    if name.startswith("cfg"):
        try:
            return 5, float(name[3:])
        except ValueError:
            pass
    return 6, 0.0


def best_fixed_k(table: pd.DataFrame) -> str:
    """The row ``k<n>`` with the highest NMI (``table`` indexed by method).

    Raises:
        ValueError: if there is no fixed-``k`` row.
    """
    ks = [m for m in table.index if m.startswith("k") and m[1:].isdigit()]
    if not ks:
        raise ValueError(f"no fixed-k row (k<n>) among {list(table.index)}")
    return str(table.loc[ks, "NMI"].astype(float).idxmax())


def nmi_display(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The book's NMI table: one row per method (:func:`method_label`, :func:`method_order`), per dataset the
    NMI ± its s.d. over K-means seeds and its standard error over images (bootstrap).

    The s.e. is shown rather than a percentile interval of each NMI: resampling images with replacement
    shifts the plug-in NMI upward (by about 0.02 at 1000 images and 10 classes), which cancels in the paired
    gaps the verdicts use (:func:`nmi_gap`) but not in one method's interval.

    Args:
        tables: ``dataset name -> ``:func:`methods_nmi` table (columns ``NMI``, ``std``, ``se``).
    """
    methods = sorted(dict.fromkeys(m for t in tables.values() for m in t.index), key=method_order)
    cols = {}
    for ds, t in tables.items():
        cols[(ds, "NMI ± s.d. over K-means seeds")] = [
            f"{t.loc[m, 'NMI']:.3f} ± {t.loc[m, 'std']:.3f}" if m in t.index else "—" for m in methods]
        cols[(ds, "s.e. over images")] = [f"{t.loc[m, 'se']:.3f}" if m in t.index else "—" for m in methods]
    out = pd.DataFrame(cols, index=pd.Index([method_label(m) for m in methods], name="method"))
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def nmi_gap(table: pd.DataFrame, boot: Boot, a: str, b: str) -> tuple[float, float, float]:
    """``(gap, lo, hi)``: method ``a``'s NMI minus ``b``'s and the 95 % paired bootstrap interval of the gap
    over images (:func:`paperlib.metrics.paired_interval`)."""
    from paperlib.metrics import paired_interval

    lo, hi = paired_interval(boot[a], boot[b])
    return float(table.loc[a, "NMI"] - table.loc[b, "NMI"]), lo, hi


def nmi_order(table: pd.DataFrame, a: str, b: str, boot: Boot | None = None) -> str:
    """``"above"``, ``"below"`` or ``"level"``: method ``a``'s NMI against ``b``'s.

    With ``boot``, "above" / "below" when the 95 % paired bootstrap interval of the gap over images
    (:func:`nmi_gap`) lies above / below 0; without, when the gap exceeds the sum of their K-means spreads
    (``std`` columns).
    """
    if boot is not None:
        _, lo, hi = nmi_gap(table, boot, a, b)
        return "above" if lo > 0 else "below" if hi < 0 else "level"
    gap, spread = table.loc[a, "NMI"] - table.loc[b, "NMI"], table.loc[a, "std"] + table.loc[b, "std"]
    return "above" if gap > spread else "below" if gap < -spread else "level"


def nmi_claim_verdict(table: pd.DataFrame, method: str = "clarid", reference: str = "original",
                      saturated: float = NMI_SATURATED, boot: Boot | None = None) -> str:
    """Verdict on a claim that ``method``'s features cluster above ``reference``'s (§3.2.1 / Fig. 4:
    CLARID above the originals and above every fixed ``k``; App. G.2: CFG above CLARID) on one dataset.

    "cannot tell" when the originals are already saturated (NMI ``>= saturated``: the paper's own caveat);
    otherwise "holds" if ``method`` is above ``reference`` (:func:`nmi_order`, with ``boot`` if given), else
    "does not".
    """
    if table.loc["original", "NMI"] >= saturated:
        return "cannot tell"
    return "holds" if nmi_order(table, method, reference, boot) == "above" else "does not"


def follows_label(leak: Mapping[str, Any]) -> bool:
    """True when :func:`condition_control` finds that features computed under a shuffled condition cluster
    by that condition more than by the images' class: NMI of class-conditioned features then measures the
    label embedding and cannot rank methods that all condition on the true class."""
    return leak["condition"]["mean"] > leak["class"]["mean"]


def _grouped(parts: Sequence[tuple[str, str, str]]) -> str:
    """``[(phrase, dataset, detail)]`` as ``"phrase on A (detail) and B (detail)"``, datasets with the same
    phrase together, groups joined by "but": each finding written once for all datasets."""
    groups: dict[str, list[str]] = {}
    for phrase, ds, detail in parts:
        groups.setdefault(phrase, []).append(f"{ds} ({detail})" if detail else ds)
    return " but ".join(f"{phrase} on {' and '.join(where)}" for phrase, where in groups.items())


def _signed(x: float) -> str:
    """``+0.028``; a value that rounds to zero is ``+0.000``, never ``-0.000``."""
    return f"{round(x, 3) + 0.0:+.3f}"


def _gap_text(table: pd.DataFrame, boot: Boot, a: str, b: str) -> str:
    gap, lo, hi = nmi_gap(table, boot, a, b)
    return (f"{table.loc[a, 'NMI']:.3f} vs {table.loc[b, 'NMI']:.3f}; gap {_signed(gap)}, "
            f"95 % interval {_signed(lo)} to {_signed(hi)}")


def nmi_findings(tables: Mapping[str, pd.DataFrame], boots: Mapping[str, Boot], names: Mapping[str, str],
                 cfg: Mapping[str, str] | None = None, saturated: float = NMI_SATURATED) -> str:
    """The findings of one feature set's NMI tables (Fig. 4's comparisons), written once for all datasets.

    Saturation of the originals, then CLARID against the originals, the random-direction control and the
    best fixed ``k``, then (with ``cfg``) CFG against CLARID; "higher" / "lower" by :func:`nmi_order` with
    the bootstrap.

    Args:
        tables: ``dataset -> ``:func:`methods_nmi` table (rows ``original``, ``clarid``, ``random``, ``k<n>``).
        boots: ``dataset -> `` its bootstrap replicates.
        names: ``dataset -> `` display name (:data:`paperlib.data.DATASET_NAMES`).
        cfg: ``dataset -> `` the CFG row to compare with CLARID (``"cfg3"``).
    """
    order = {"above": "higher than", "below": "lower than", "level": "no differently from"}
    sat = _grouped([(f"{'at or above' if t.loc['original', 'NMI'] >= saturated else 'below'} the saturation "
                     f"level {saturated:g}", names[ds],
                     f"{t.loc['original', 'NMI']:.3f}") for ds, t in tables.items()])
    vs_orig = _grouped([(f"{order[nmi_order(t, 'clarid', 'original', boots[ds])]} the originals'", names[ds],
                         _gap_text(t, boots[ds], "clarid", "original")) for ds, t in tables.items()])
    beat = {"above": "above", "below": "below", "level": "level with"}
    vs_rnd = _grouped([(f"{beat[nmi_order(t, 'clarid', 'random', boots[ds])]} the random-direction control",
                        names[ds], _gap_text(t, boots[ds], "clarid", "random"))
                       for ds, t in tables.items()])
    vs_k = _grouped([(f"{beat[nmi_order(t, 'clarid', best_fixed_k(t), boots[ds])]} the best fixed k", names[ds],
                      f"{method_label(best_fixed_k(t))}: {_gap_text(t, boots[ds], 'clarid', best_fixed_k(t))}")
                     for ds, t in tables.items()])
    out = (f"The originals' NMI is {sat}. CLARID's features cluster {vs_orig}. "
           f"CLARID is {vs_rnd}, and {vs_k}.")
    if cfg:
        vs_cfg = _grouped([(f"{beat[nmi_order(t, cfg[ds], 'clarid', boots[ds])]} CLARID's", names[ds],
                            f"{method_label(cfg[ds])}: {_gap_text(t, boots[ds], cfg[ds], 'clarid')}")
                           for ds, t in tables.items()])
        out += f" CFG's NMI is {vs_cfg}."
    return out


def condition_findings(leaks: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """One sentence from :func:`condition_control` for all datasets: do class-conditioned features follow the
    condition they are given, or the image?"""
    parts = [("by the condition they are given more than by the images' class" if follows_label(v) else
              "by the images' class more than by the condition they are given", names[ds],
              f"NMI {v['condition']['mean']:.2f} with the condition, {v['class']['mean']:.2f} with the class")
             for ds, v in leaks.items()]
    follow = [follows_label(v) for v in leaks.values()]
    end = ("these features measure mostly the label embedding, so they cannot rank methods that all condition "
           "on the true class" if all(follow) else "the features follow the image, and NMI can compare methods"
           if not any(follow) else "where they follow the condition, they cannot rank methods that all "
           "condition on the true class")
    return f"Under a shuffled condition the originals' class-conditioned features cluster {_grouped(parts)}: {end}."


def verdict_basis(leaks: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """Which features decide the chapter's verdicts, as a phrase: the image-only ones on the datasets where
    the class-conditioned ones follow the label they are given (:func:`follows_label`), else the
    class-conditioned ones (the paper's), e.g. ``"the image-only features on shapes and CIFAR-10, where the
    class-conditioned ones follow the label they are given"``."""
    parts = [("the image-only features", names[ds], "") if follows_label(v) else
             ("the class-conditioned features", names[ds], "") for ds, v in leaks.items()]
    follow = [follows_label(v) for v in leaks.values()]
    why = ("where the class-conditioned ones follow the label they are given" if all(follow) else
           "where the class-conditioned ones follow the image" if not any(follow) else
           "image-only where the class-conditioned ones follow the label they are given")
    return f"{_grouped(parts)}, {why}"


def nmi_glue_values(tag: str, tables: Mapping[str, pd.DataFrame], boots: Mapping[str, Boot]) -> dict[str, str]:
    """The values the chapter glues from one feature set's :func:`methods_nmi` tables (``tag`` ``""``:
    class-conditioned, ``"0"``: image-only), by glue name.

    ``nmi{tag}_{ds}_{method}`` and ``nmi{tag}_{ds}_best_k``: ``"0.815 ± 0.001"`` (± s.d. over K-means seeds);
    ``best_k{tag}_{ds}``: the best fixed ``k``; ``gap{tag}_{ds}_clarid_original`` and
    ``gap{tag}_{ds}_clarid_best_k``: the 95 % bootstrap interval over images of CLARID's gap (:func:`nmi_gap`).
    """
    out = {}
    for ds, t in tables.items():
        best = best_fixed_k(t)
        for m in [*t.index, "best_k"]:
            row = best if m == "best_k" else m
            out[f"nmi{tag}_{ds}_{m}"] = f"{t.loc[row, 'NMI']:.3f} ± {t.loc[row, 'std']:.3f}"
        out[f"best_k{tag}_{ds}"] = best[1:]
        for ref, name in (("original", "original"), (best, "best_k")):
            _, lo, hi = nmi_gap(t, boots[ds], "clarid", ref)
            out[f"gap{tag}_{ds}_clarid_{name}"] = f"{_signed(lo)} to {_signed(hi)}"
    return out


def nmi_answer(ranked: Mapping[str, tuple[pd.DataFrame, Boot]], kinds: Mapping[str, str],
               names: Mapping[str, str]) -> str:
    """The evidence of the chapter's one-sentence answer: CLARID against the originals, then the best fixed
    ``k`` against CLARID, each written once for all datasets (:func:`nmi_order` with the bootstrap).

    Args:
        ranked: ``dataset -> (table, boot)`` of the features that decide the verdicts.
        kinds: ``dataset -> `` what those features are (``"image-only"``).
        names: ``dataset -> `` display name.
    """
    vs = {"above": "higher than the originals", "below": "lower than the originals",
          "level": "no differently from the originals (within the noise over images)"}
    first = _grouped([(vs[nmi_order(t, "clarid", "original", b)], names[ds],
                       f"{t.loc['clarid', 'NMI']:.3f} vs {t.loc['original', 'NMI']:.3f}")
                      for ds, (t, b) in ranked.items()])
    fixed = {"above": "a fixed k clusters better still", "level": "a fixed k does as well",
             "below": "no fixed k does as well"}
    second = _grouped([(fixed[nmi_order(t, best_fixed_k(t), "clarid", b)], names[ds],
                        f"{method_label(best_fixed_k(t))}: {t.loc[best_fixed_k(t), 'NMI']:.3f}")
                       for ds, (t, b) in ranked.items()])
    kind = " and ".join(dict.fromkeys(kinds.values()))
    return f"on {kind} features, CLARID clusters {first}; and {second}"
