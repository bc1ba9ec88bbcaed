"""CDM features of images, ``avgpool f_{l,t}(x_t, c)`` (paper §3.2.1, §3.7, App. G).

The CDM sees an image only through a noisy latent, so a feature of an image at time ``t`` is taken at its
deterministic DDIM inversion ``x_t = F_inv(x_0; c, t)`` (spec §3.7 for raw images). We use the same rule for
every image a chapter compares — originals, Canonical Samples, CFG samples — so their features differ only
through the images [O]. One inversion trajectory gives the features at every grid time at once
(:func:`layer_time_features`, for the layer x time NMI sweep of App. G.1).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from paperlib.data import to_model_range
from paperlib.diffusion import ddim_grid, ddim_invert
from paperlib.models import ClassConditionalUNet


@torch.no_grad()
def layer_time_features(
    model: ClassConditionalUNet,
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
        images: ``[N, 3, H, W]`` uint8 images.
        labels: ``[N]`` class labels (the condition ``c``).
        alpha_bar: ``[T + 1]`` schedule of the model.
        times: Grid times (``0`` = the clean image itself).
        layers: Layer names (:meth:`ClassConditionalUNet.layer_names`).
        num_steps: DDIM grid of the inversion.
        batch_size: Images per batch.
        progress: tqdm bar over batches.

    Returns:
        ``{(layer, t): [N, C_l] float32}``.
    """
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
    for start in tqdm(range(0, len(images), batch_size), desc="CDM features", disable=not progress, leave=False):
        x0 = to_model_range(images[start : start + batch_size])
        y = labels[start : start + batch_size]
        traj = {0: x0}
        if t_max > 0:
            _, traj = ddim_invert(model, x0, y, alpha_bar, t_max, num_steps=num_steps, return_trajectory=True)
        for t in times:
            tt = torch.full((len(y),), t)
            for layer in layers:
                out[(layer, t)].append(model.pooled_features(traj[t], tt, y, layer).float())
    return {k: torch.cat(v) for k, v in out.items()}


def image_features(
    model: ClassConditionalUNet,
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
