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

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor

from paperlib.cache import load_or_compute, tensor_fingerprint
from paperlib.data import to_model_range
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
    config = {"model": model_key, "images": tensor_fingerprint(images), "labels": tensor_fingerprint(labels),
              "t": int(t), "layer": layer, "num_steps": num_steps}
    tensors, _ = load_or_compute(
        "image_features", config,
        lambda: {"features": image_features(model, images, labels, alpha_bar, t, layer, num_steps, progress=progress)},
        publish=publish, verbose=False)
    return tensors["features"]


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
        ``layers``, columns ``times``.
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

    tensors, _ = load_or_compute("layer_time_nmi", config, compute, publish=publish, verbose=False)
    return pd.DataFrame(tensors["nmi"].numpy(), index=list(layers), columns=list(times))


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
) -> tuple[pd.DataFrame, dict[str, Tensor]]:
    """K-means NMI with ``labels`` of each method's pooled features at ``(layer, t)`` (Fig. 4), cached.

    Args:
        sets: ``method -> [N, 3, H, W] uint8`` images aligned with ``labels`` (originals, CLARID, CFG, ...).
        condition: ``[N]`` class condition of the inversion and the features (e.g. the null class);
            default ``labels`` (the paper's ``f_{l,t}(x, c)``).

    Returns:
        ``(table, features)``: one row per method with the ``NMI`` mean and ``std`` over ``seeds``, and
        ``method -> [N, C_l]`` features (:func:`cached_image_features`).
    """
    from paperlib.metrics import kmeans_nmi

    cond = labels if condition is None else condition
    feats, rows = {}, {}
    for name, imgs in sets.items():
        feats[name] = cached_image_features(model, model_key, imgs, cond, alpha_bar, int(t), layer, num_steps,
                                            publish=publish, progress=False)
        nmi = kmeans_nmi(feats[name], labels, seeds=seeds)
        rows[name] = {"NMI": nmi["mean"], "std": nmi["std"]}
    return pd.DataFrame(rows).T.rename_axis("method"), feats


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
) -> dict[str, dict[str, float]]:
    """K-means NMI of features taken under a *shuffled* class condition (our control for App. G's NMI).

    The images are inverted and featurised with ``labels`` permuted (seeded by ``seed``). If the features
    cluster by that condition more than by the true class, NMI measures the class embedding, not the image.

    Returns:
        ``{"condition": NMI with the shuffled labels, "class": NMI with the true labels}``, each
        :func:`paperlib.metrics.kmeans_nmi`'s ``{"mean", "std", ...}``.
    """
    from paperlib.metrics import kmeans_nmi

    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    f = cached_image_features(model, model_key, images, shuffled, alpha_bar, t, layer, num_steps, publish=publish,
                              progress=False)
    return {"condition": kmeans_nmi(f, shuffled, seeds=seeds), "class": kmeans_nmi(f, labels, seeds=seeds)}


NMI_SATURATED = 0.95
"""NMI of the originals from which clustering cannot show an improvement (the paper: 1.0 on CIFAR-10)."""


def nmi_verdict(table: pd.DataFrame, dataset: str, saturated: float = NMI_SATURATED, cfg: str | None = None) -> str:
    """One sentence on a dataset's NMI table: saturation on the originals, CLARID against the originals
    (beyond both K-means spreads) and against the random-direction control; optionally CFG against CLARID
    (the paper's Fig. 4 has CFG above CLARID).

    Args:
        table: Indexed by method (``original``, ``clarid``, ``random``, ...), columns ``NMI`` and ``std``.
        dataset: Name used in the sentence.
        saturated: NMI of the originals from which it cannot show an improvement.
        cfg: Row of the CFG samples to compare with CLARID (e.g. ``"cfg3"``).

    Raises:
        KeyError: if a needed method is missing.
    """
    o, c, rnd = (table.loc[m, "NMI"] for m in ("original", "clarid", "random"))
    sat = (f"saturated (≥ {saturated:g}) already on the originals, so it cannot show an improvement"
           if o >= saturated else "not saturated on the originals")
    rel = {"above": "higher", "below": "lower", "level": "no different (within the K-means spread)"}[
        nmi_order(table, "clarid", "original")]
    beat = "better" if nmi_order(table, "clarid", "random") == "above" else "no better"
    out = (f"**{dataset}**: NMI is {sat}; CLARID's features cluster {rel} than the originals' "
           f"({c:.3f} vs {o:.3f}), and {beat} than after removing as many random directions ({rnd:.3f})")
    if cfg is not None:
        order = {"above": "above", "below": "below", "level": "level with"}[nmi_order(table, cfg, "clarid")]
        out += f"; CFG ({cfg}) clusters {order} CLARID ({table.loc[cfg, 'NMI']:.3f})"
    return out + "."


def nmi_order(table: pd.DataFrame, a: str, b: str) -> str:
    """``"above"``, ``"below"`` or ``"level"``: method ``a``'s NMI against ``b``'s, beyond the sum of their
    K-means spreads (``std`` columns) or within it."""
    gap, spread = table.loc[a, "NMI"] - table.loc[b, "NMI"], table.loc[a, "std"] + table.loc[b, "std"]
    return "above" if gap > spread else "below" if gap < -spread else "level"


def nmi_claim_verdict(table: pd.DataFrame, method: str = "clarid", reference: str = "original",
                      saturated: float = NMI_SATURATED) -> str:
    """Verdict on a claim that ``method``'s features cluster above ``reference``'s (§3.2.1 / Fig. 4:
    CLARID above the originals; App. G.2: CFG above CLARID) on one dataset.

    "cannot tell" when the originals are already saturated (NMI ``>= saturated``: the paper's own caveat);
    otherwise "holds" if ``method`` is above ``reference`` beyond their K-means spreads, else "does not".
    """
    if table.loc["original", "NMI"] >= saturated:
        return "cannot tell"
    return "holds" if nmi_order(table, method, reference) == "above" else "does not"


def follows_label(leak: dict[str, dict[str, float]]) -> bool:
    """True when :func:`condition_control` finds that features computed under a shuffled condition cluster
    by that condition more than by the images' class: NMI of class-conditioned features then measures the
    label embedding and cannot rank methods that all condition on the true class."""
    return leak["condition"]["mean"] > leak["class"]["mean"]


def condition_verdict(leak: dict[str, dict[str, float]], dataset: str) -> str:
    """One sentence from :func:`condition_control`: do the features follow the condition or the image?"""
    lc, lt = leak["condition"]["mean"], leak["class"]["mean"]
    return (f"Under a shuffled condition the {dataset} features cluster "
            + (f"by the condition they are given (NMI {lc:.2f}) more than by the image's class ({lt:.2f}): "
               "here NMI measures mostly the label embedding, so it cannot rank methods that all condition "
               "on the true class." if follows_label(leak) else
               f"by the image's class (NMI {lt:.2f}) more than by the condition ({lc:.2f}): the features "
               "follow the image, and NMI can compare methods."))
