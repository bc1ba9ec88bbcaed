"""Datasets of the book: an embedded procedural *shapes* set, its Backgrounds Challenge, and CIFAR-10.

Conventions (all public functions):

- images are ``torch.uint8`` tensors ``[N, 3, H, W]``, labels ``torch.int64`` ``[N]``;
  :func:`to_model_range` / :func:`from_model_range` convert to and from the ``[-1, 1]`` float range of the
  diffusion models;
- every random function takes a ``seed`` (an ``int >= 0`` or a ``numpy.random.Generator``): the same integer
  seed gives bit-identical output;
- bad arguments raise ``ValueError`` naming the parameter and its allowed values.

**Shapes** ([O], our stand-in for a dataset with spurious backgrounds): 10 silhouettes
(:data:`SHAPES_CLASSES`) with a random colour, scale, position and rotation, drawn on one of 10 background
families (:data:`SHAPES_BACKGROUNDS`: a hue *and* a texture). With probability ``bg_correlation`` an image
uses its class's family, otherwise a uniformly random family (which may again be the class's own), so the
background is a strong but imperfect shortcut for the class, as in ImageNet. The background of every image is
kept without the shape, so the Backgrounds Challenge splits (Xiao et al. 2020, "Noise or Signal"; spec §10)
are exact composites here, where IN-9 needs inpainting.

**CIFAR-10** is read from a JPEG archive (``train|test/<class>/NNNN.jpg``), decoded once into an ``.npz``
cache.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from paperlib.paths import cache_dir, shared_dir

log = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_CLASSES",
    "SHAPES_BACKGROUNDS",
    "SHAPES_CLASSES",
    "ShapesData",
    "background_only",
    "backgrounds_challenge",
    "foreground_box_mask",
    "fingerprint",
    "from_model_range",
    "load_cifar10",
    "make_shapes",
    "shape_template",
    "shapes_splits",
    "stratified_subset",
    "to_model_range",
]

SeedLike = int | np.random.Generator

# ----------------------------------------------------------------------------------------------------------
# Generic helpers
# ----------------------------------------------------------------------------------------------------------


def _rng(seed: SeedLike, name: str = "seed") -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be an int >= 0 or a numpy.random.Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {allowed}, got {value!r}")
    return int(value)


def _check_images(images: Tensor, name: str = "images") -> None:
    if (
        not isinstance(images, Tensor)
        or images.dtype != torch.uint8
        or images.ndim != 4
        or images.shape[1] != 3
    ):
        desc = (
            f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        )
        raise ValueError(f"{name} must be a torch.uint8 tensor of shape [N, 3, H, W], got {desc}")


def _check_masks(masks: Tensor, name: str = "masks") -> None:
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool or masks.ndim != 3:
        desc = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be a torch.bool tensor of shape [N, H, W], got {desc}")


def to_model_range(images: Tensor) -> Tensor:
    """Map uint8 images to the float range of the diffusion models.

    Args:
        images: ``[N, 3, H, W]`` ``torch.uint8``.

    Returns:
        ``[N, 3, H, W]`` ``float32`` in ``[-1, 1]`` (``0 -> -1``, ``255 -> 1``).
    """
    _check_images(images)
    return images.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: Tensor) -> Tensor:
    """Inverse of :func:`to_model_range`: round to the nearest uint8 level.

    Values outside ``[-1, 1]`` (normal for sampled images) are clipped, as every image writer would do.

    Args:
        x: ``[N, 3, H, W]`` floating tensor, nominally in ``[-1, 1]``.

    Returns:
        ``[N, 3, H, W]`` ``torch.uint8``.

    Raises:
        ValueError: If ``x`` is not a floating ``[N, 3, H, W]`` tensor or holds NaN/inf (NaN would become 0).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor of shape [N, 3, H, W], got {desc}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"x must be finite, got {int((~torch.isfinite(x)).sum())} NaN/inf value(s)")
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------------
# Shapes: silhouettes
# ----------------------------------------------------------------------------------------------------------

SHAPES_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "star",
    "ring",
    "crescent",
    "bar",
    "heart",
    "arrow",
)
"""Names of the 10 shape classes (label ``i`` is ``SHAPES_CLASSES[i]``)."""

SHAPES_BACKGROUNDS: tuple[str, ...] = (
    "red_hstripes",
    "orange_vstripes",
    "green_checker",
    "blue_dots",
    "purple_gradient",
    "brown_noise",
    "cyan_waves",
    "yellow_diagonal",
    "pink_rings",
    "grey_grid",
)
"""Names of the 10 background families; family ``i`` is the "own" background of class ``i``."""

SCALE_RANGE: tuple[float, float] = (0.45, 0.7)
"""Shape radius as a fraction of the half image width."""

MAX_ROTATION: float = math.pi / 6
"""Rotations are uniform in ``+-MAX_ROTATION``: small enough that no class turns into another."""

MIN_FG_CONTRAST: float = 0.45
"""Least RGB distance (colours in ``[0, 1]``) between the shape colour and every background colour."""

_NOISE_GRID = 5  # side of the value-noise lattice of the "noise" family


def _in_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule for one closed polygon ``vertices [V, 2]``, broadcast over the points."""
    inside = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_cross)
    return inside


def _regular(n: int, radius: float, start: float = math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


_TRIANGLE = _regular(3, 1.05)
_STAR = np.empty((10, 2))
_STAR[0::2] = _regular(5, 1.05)
_STAR[1::2] = _regular(5, 0.45, start=math.pi / 2 + math.pi / 5)
_ARROW = np.array(
    [[-0.25, -1.0], [0.25, -1.0], [0.25, 0.05], [0.7, 0.05], [0.0, 1.0], [-0.7, 0.05], [-0.25, 0.05]]
)


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Classic algebraic heart (x^2 + y^2 - 1)^3 <= x^2 y^3, recentred and shrunk to the unit disc.
    u, v = x * 1.15, y * 1.15 + 0.12
    return (u**2 + v**2 - 1) ** 3 - u**2 * v**3 <= 0


# Silhouettes in local coordinates (y up, radius ~1); inputs broadcast, output bool.
_SHAPE_FNS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    lambda x, y: x**2 + y**2 <= 0.92**2,  # circle
    lambda x, y: np.maximum(np.abs(x), np.abs(y)) <= 0.78,  # square
    lambda x, y: _in_polygon(x, y - 0.1, _TRIANGLE),  # triangle (centred on its bounding box)
    lambda x, y: ((np.abs(x) <= 0.3) & (np.abs(y) <= 0.95)) | ((np.abs(y) <= 0.3) & (np.abs(x) <= 0.95)),
    lambda x, y: _in_polygon(x, y + 0.05, _STAR),  # star
    lambda x, y: (x**2 + y**2 <= 1.0) & (x**2 + y**2 >= 0.55**2),  # ring
    lambda x, y: (x**2 + y**2 <= 1.0) & ((x - 0.5) ** 2 + y**2 >= 0.8**2),  # crescent (opens right)
    lambda x, y: (np.abs(x) <= 1.0) & (np.abs(y) <= 0.3),  # bar
    _heart,
    lambda x, y: _in_polygon(x, y, _ARROW),  # arrow (points up)
)


def _shape_masks(
    shape: np.ndarray,
    pos_x: np.ndarray,
    pos_y: np.ndarray,
    scale: np.ndarray,
    rotation: np.ndarray,
    size: int,
) -> np.ndarray:
    """Rasterise silhouettes -> [N, H, W], one sample per pixel centre (the mask is what is painted)."""
    n = len(shape)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    gx, gy = grid[None, None, :], grid[None, :, None]  # image coords in [-1, 1], y pointing down
    masks = np.zeros((n, size, size), dtype=bool)
    for cls in range(len(_SHAPE_FNS)):
        idx = np.flatnonzero(shape == cls)
        if idx.size == 0:
            continue
        c = np.cos(rotation[idx])[:, None, None].astype(np.float32)
        s = np.sin(rotation[idx])[:, None, None].astype(np.float32)
        k = scale[idx][:, None, None].astype(np.float32)
        dx = gx - pos_x[idx][:, None, None].astype(np.float32)
        dy = pos_y[idx][:, None, None].astype(np.float32) - gy  # flip to y-up
        # Rotate the shape by +rotation (counter-clockwise on screen) = rotate the points by -rotation.
        lx, ly = (c * dx + s * dy) / k, (-s * dx + c * dy) / k
        masks[idx] = _SHAPE_FNS[cls](lx, ly)
    return masks


def shape_template(
    shape: int,
    size: int = 32,
    scale: float = 0.6,
    rotation: float = 0.0,
    pos: tuple[float, float] = (0.0, 0.0),
) -> Tensor:
    """The mask of one silhouette at a fixed pose (for figures and for checking the classes differ).

    Args:
        shape: Class index in ``[0, 9]``.
        size: Image side in pixels, in ``[8, 256]``.
        scale: Radius as a fraction of the half image width, in ``(0, 1]``.
        rotation: Counter-clockwise rotation in radians.
        pos: Centre ``(x, y)`` in image coordinates ``[-1, 1]`` (``y`` pointing down).

    Returns:
        ``[size, size]`` bool mask.
    """
    shape = _check_int(shape, "shape", 0, len(SHAPES_CLASSES) - 1)
    size = _check_int(size, "size", 8, 256)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    one = np.ones(1)
    mask = _shape_masks(np.array([shape]), one * pos[0], one * pos[1], one * scale, one * rotation, size)
    return torch.from_numpy(mask[0])


# ----------------------------------------------------------------------------------------------------------
# Shapes: backgrounds
# ----------------------------------------------------------------------------------------------------------

# Two colours per family; the texture mixes them, so every background pixel lies on the segment between them.
_BG_COLORS = np.array(
    [
        [[0.80, 0.22, 0.20], [0.50, 0.08, 0.08]],  # red
        [[0.95, 0.60, 0.20], [0.70, 0.35, 0.05]],  # orange
        [[0.30, 0.70, 0.25], [0.10, 0.40, 0.10]],  # green
        [[0.30, 0.45, 0.90], [0.10, 0.15, 0.50]],  # blue
        [[0.65, 0.35, 0.80], [0.30, 0.10, 0.45]],  # purple
        [[0.60, 0.45, 0.30], [0.30, 0.20, 0.12]],  # brown
        [[0.35, 0.85, 0.90], [0.05, 0.50, 0.60]],  # cyan
        [[0.95, 0.90, 0.35], [0.70, 0.62, 0.10]],  # yellow
        [[0.95, 0.55, 0.75], [0.70, 0.25, 0.50]],  # pink
        [[0.70, 0.70, 0.70], [0.40, 0.40, 0.40]],  # grey
    ],
    dtype=np.float32,
)
_BG_FREQ = np.array([3.0, 3.0, 2.0, 3.0, 1.0, 1.0, 2.5, 3.0, 2.5, 3.0], dtype=np.float32)  # cycles per image
_TINT = 0.08  # per-image colour jitter of the background palette


def _soft_square(z: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(3.0 * z)


def _frac(z: np.ndarray) -> np.ndarray:
    return z - np.floor(z)


def _bg_texture(
    family: int, x: np.ndarray, y: np.ndarray, freq: np.ndarray, phase: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Mixing weight in [0, 1]: x, y [1, H, W] (y down), freq and phase [m, 1, 1], noise [m, G, G]."""
    w = math.pi * freq  # `freq` full cycles over the 2 units of the image
    if family == 0:  # horizontal stripes
        return _soft_square(np.sin(w * y + phase))
    if family == 1:  # vertical stripes
        return _soft_square(np.sin(w * x + phase))
    if family == 2:  # checkerboard
        return _soft_square(np.sin(w * x + phase) * np.sin(w * y + 1.7 * phase) * 2)
    if family == 3:  # dot lattice
        u = _frac(x * freq / 2 + phase / (2 * math.pi)) - 0.5
        v = _frac(y * freq / 2 + phase / (2 * math.pi)) - 0.5
        return np.clip((0.32 - np.sqrt(u**2 + v**2)) / 0.08, 0, 1)
    if family == 4:  # linear gradient along the direction `phase`
        return 0.5 + 0.5 * (np.cos(phase) * x + np.sin(phase) * y) / math.sqrt(2)
    if family == 5:  # smooth value noise: bilinear upsampling of a GxG lattice
        g = noise.shape[-1]
        px, py = (x + 1) / 2 * (g - 1), (y + 1) / 2 * (g - 1)
        x0 = np.clip(np.floor(px).astype(int), 0, g - 2)
        y0 = np.clip(np.floor(py).astype(int), 0, g - 2)
        fx, fy = px - x0, py - y0
        x0, y0 = np.broadcast_to(x0, fx.shape), np.broadcast_to(y0, fy.shape)
        rows = np.arange(len(noise))[:, None, None]
        top = noise[rows, y0, x0] * (1 - fx) + noise[rows, y0, x0 + 1] * fx
        bottom = noise[rows, y0 + 1, x0] * (1 - fx) + noise[rows, y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy
    if family == 6:  # smooth horizontal waves
        return 0.5 + 0.5 * np.sin(w * y + 1.2 * np.sin(0.8 * w * x + phase) + phase)
    if family == 7:  # diagonal stripes
        return _soft_square(np.sin(w * (x + y) / math.sqrt(2) + phase))
    if family == 8:  # concentric rings around a centre set by the phase
        r = np.sqrt((x - 0.5 * np.cos(phase)) ** 2 + (y - 0.5 * np.sin(phase)) ** 2)
        return 0.5 + 0.5 * np.cos(w * r)
    if family == 9:  # grid lines
        u = _frac(x * freq / 2 + phase / (2 * math.pi))
        v = _frac(y * freq / 2 + 0.5 * phase / (2 * math.pi))
        return ((u < 0.22) | (v < 0.22)).astype(np.float32)
    raise AssertionError(family)


def _bg_palette(family: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """Per-image colour pair [N, 2, 3] in [0, 1]."""
    return np.clip(_BG_COLORS[family] + tint[:, None, :].astype(np.float32), 0.0, 1.0)


def _render_backgrounds(
    family: np.ndarray, freq: np.ndarray, phase: np.ndarray, tint: np.ndarray, noise: np.ndarray, size: int
) -> np.ndarray:
    """Backgrounds as uint8 [N, 3, H, W]."""
    n = len(family)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    x, y = grid[None, None, :], grid[None, :, None]
    t = np.empty((n, size, size), dtype=np.float32)
    for fam in range(len(SHAPES_BACKGROUNDS)):
        idx = np.flatnonzero(family == fam)
        if idx.size:
            f = freq[idx][:, None, None].astype(np.float32)
            p = phase[idx][:, None, None].astype(np.float32)
            t[idx] = _bg_texture(fam, x, y, f, p, noise[idx])
    pal = _bg_palette(family, tint) * 255  # [N, 2, 3]
    lo, span = pal[:, 1, :, None, None], (pal[:, 0] - pal[:, 1])[:, :, None, None]
    return np.rint(lo + span * t[:, None]).astype(np.uint8)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points [N, K, 3] to the segments [a_i, b_i] (a, b: [N, 3]) -> [N, K]."""
    ab = (b - a)[:, None, :]
    ap = points - a[:, None, :]
    lam = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(ap - lam[..., None] * ab, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Shapes: dataset
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShapesData:
    """A batch of the shapes dataset.

    Attributes:
        images: ``[N, 3, H, W]`` uint8, ``where(masks, fg_color, backgrounds)`` exactly.
        labels: ``[N]`` int64 class index into :data:`SHAPES_CLASSES`.
        masks: ``[N, H, W]`` bool, the pixels painted with the shape colour.
        backgrounds: ``[N, 3, H, W]`` uint8, the same background without the shape.
        factors: Generative factors, tensors indexed by image:
            ``shape`` [N] int64 (= labels); ``fg_color`` [N, 3] float32 in [0, 1] (``round(255 * fg_color)``
            is the painted value); ``scale``, ``pos_x``, ``pos_y`` (image coords in [-1, 1], y down),
            ``rotation`` (radians, counter-clockwise) [N] float32; ``bg_family`` [N] int64 into
            :data:`SHAPES_BACKGROUNDS`; ``bg_phase`` (radians), ``bg_freq`` (cycles per image) [N] float32;
            ``bg_tint`` [N, 3] float32 (palette shift); ``bg_noise`` [N, 25] float32 (lattice of the noise
            family, unused by the others); ``bg_donor`` [N] int64 (index of the image whose background is
            used; -1 for none).
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    backgrounds: Tensor
    factors: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """Image side in pixels."""
        return int(self.images.shape[-1])

    def subset(self, indices: Tensor | np.ndarray | list[int]) -> ShapesData:
        """The rows ``indices`` of every tensor (``bg_donor`` keeps pointing into the full set)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ShapesData(
            images=self.images[idx],
            labels=self.labels[idx],
            masks=self.masks[idx],
            backgrounds=self.backgrounds[idx],
            factors={k: v[idx] for k, v in self.factors.items()},
        )


def make_shapes(n: int, seed: SeedLike, size: int = 32, bg_correlation: float = 0.9) -> ShapesData:
    """Generate the shapes dataset (no files needed; ~1-2 s per 10,000 images of 32x32 on one core).

    Class-balanced: class ``i`` gets ``n // 10`` images, plus one for the first ``n % 10`` classes, in an
    order shuffled by ``seed``. Each image: a silhouette with a random colour (at least
    :data:`MIN_FG_CONTRAST` away from every background colour), scale in :data:`SCALE_RANGE`, position keeping
    it inside the image, rotation in ``+-MAX_ROTATION``; on a background whose family is the class's own with
    probability ``bg_correlation`` and uniform over all 10 families otherwise (so the own family has
    probability ``bg_correlation + (1 - bg_correlation) / 10``), with random phase, frequency and tint.

    Args:
        n: Number of images, ``>= 1``.
        seed: ``int >= 0`` or ``numpy.random.Generator``.
        size: Image side in pixels, in ``[8, 256]``.
        bg_correlation: Probability of the class's own background family, in ``[0, 1]``.

    Returns:
        A :class:`ShapesData` with ``images`` ``[n, 3, size, size]``.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 8, 256)
    if not isinstance(bg_correlation, (int, float)) or not 0.0 <= bg_correlation <= 1.0:
        raise ValueError(f"bg_correlation must be a float in [0, 1], got {bg_correlation!r}")
    rng = _rng(seed)
    n_cls, n_fam = len(SHAPES_CLASSES), len(SHAPES_BACKGROUNDS)

    # Every draw is made for the whole batch in a fixed order, so the stream never depends on the labels.
    labels = rng.permutation(np.arange(n) % n_cls)
    scale = rng.uniform(*SCALE_RANGE, size=n)
    reach = 0.97 - scale  # keep the centre far enough from the border for the radius-~1 silhouettes
    pos_x = rng.uniform(-1, 1, size=n) * reach
    pos_y = rng.uniform(-1, 1, size=n) * reach
    rotation = rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=n)
    own = rng.random(n) < bg_correlation
    family = np.where(own, labels, rng.integers(0, n_fam, size=n))
    phase = rng.uniform(0, 2 * math.pi, size=n)
    freq = _BG_FREQ[family] * rng.uniform(0.8, 1.25, size=n)
    tint = rng.uniform(-_TINT, _TINT, size=(n, 3))
    noise = rng.random((n, _NOISE_GRID, _NOISE_GRID))

    # Shape colour: first of K uniform candidates far enough from the background palette segment.
    pal = _bg_palette(family, tint)
    cand = rng.integers(0, 256, size=(n, 32, 3)).astype(np.float32)
    dist = _segment_distance(cand / 255, pal[:, 0], pal[:, 1])
    ok = dist >= MIN_FG_CONTRAST + 0.01  # margin for the uint8 rounding of the background
    pick = np.where(ok.any(1), ok.argmax(1), dist.argmax(1))  # argmax: never reached in practice
    fg = cand[np.arange(n), pick].astype(np.uint8)  # [n, 3]

    masks = _shape_masks(labels, pos_x, pos_y, scale, rotation, size)
    bg = _render_backgrounds(family, freq, phase, tint, noise, size)  # [n, 3, H, W]
    images = np.where(masks[:, None], fg[:, :, None, None], bg)

    def f32(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    factors = {
        "shape": torch.from_numpy(labels.astype(np.int64)),
        "fg_color": f32(fg / 255.0),
        "scale": f32(scale),
        "pos_x": f32(pos_x),
        "pos_y": f32(pos_y),
        "rotation": f32(rotation),
        "bg_family": torch.from_numpy(family.astype(np.int64)),
        "bg_phase": f32(phase),
        "bg_freq": f32(freq),
        "bg_tint": f32(tint),
        "bg_noise": f32(noise.reshape(n, -1)),
        "bg_donor": torch.arange(n, dtype=torch.int64),
    }
    return ShapesData(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        masks=torch.from_numpy(masks),
        backgrounds=torch.from_numpy(np.ascontiguousarray(bg)),
        factors=factors,
    )


def shapes_splits(
    seed: int, n_train: int = 10_000, n_test: int = 2_000, size: int = 32, bg_correlation: float = 0.9
) -> tuple[ShapesData, ShapesData]:
    """Train and test sets drawn with two independent seeds derived from ``seed``.

    Args:
        seed: ``int >= 0``.
        n_train: Training images, ``>= 1``.
        n_test: Test images, ``>= 1``.
        size: Image side in pixels, in ``[8, 256]``.
        bg_correlation: As in :func:`make_shapes`, for both splits.

    Returns:
        ``(train, test)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    train_ss, test_ss = np.random.SeedSequence(int(seed)).spawn(2)
    train = make_shapes(n_train, int(train_ss.generate_state(1)[0]), size, bg_correlation)
    test = make_shapes(n_test, int(test_ss.generate_state(1)[0]), size, bg_correlation)
    return train, test


# ----------------------------------------------------------------------------------------------------------
# Backgrounds Challenge (Xiao et al. 2020)
# ----------------------------------------------------------------------------------------------------------

_BG_FACTORS = ("bg_family", "bg_phase", "bg_freq", "bg_tint", "bg_noise")


def _with_background(data: ShapesData, donor: np.ndarray) -> ShapesData:
    """Foregrounds of ``data`` pasted on the backgrounds of images ``donor`` of the same set."""
    d = torch.from_numpy(donor.astype(np.int64))
    backgrounds = data.backgrounds[d]
    factors = dict(data.factors)
    for key in _BG_FACTORS:
        factors[key] = data.factors[key][d]
    factors["bg_donor"] = data.factors["bg_donor"][d]
    images = torch.where(data.masks[:, None], data.images, backgrounds)
    return ShapesData(images, data.labels, data.masks, backgrounds, factors)


def backgrounds_challenge(data: ShapesData, seed: SeedLike, *, rand_from_other_class: bool = False
                          ) -> dict[str, ShapesData]:
    """The Backgrounds Challenge splits (the paper's four of Table 2, and Mixed-Next), as exact composites.

    - ``original``: ``data`` unchanged;
    - ``only_fg``: the background set to black (``bg_family`` = -1, ``bg_donor`` = -1, other ``bg_*`` NaN);
    - ``mixed_same``: foreground on the background of another random image of the same class (itself only if
      the class has a single image);
    - ``mixed_rand``: foreground on the background of a random image of a uniformly random class (the own
      class included, as in Xiao et al.; with ``rand_from_other_class``, a uniformly random *other* class, as
      the CLARID paper words it: "randomly chosen backgrounds from other classes");
    - ``mixed_next``: foreground on the background of a random image of the next class (``y + 1`` cyclically
      among the classes present; Xiao et al.'s fixed wrong-class pairing).

    ``mixed_next`` is drawn after the other splits, so they are what they were before it was added.

    Labels, masks and foreground factors are kept; ``backgrounds`` and the ``bg_*`` factors are the donor's.

    Args:
        data: The source set (every class that occurs is a donor pool).
        seed: ``int >= 0`` or ``numpy.random.Generator``.
        rand_from_other_class: Mixed-Rand's donor class is never the image's own (needs two classes).

    Returns:
        ``{"original", "only_fg", "mixed_same", "mixed_rand", "mixed_next"} -> ShapesData``.
    """
    if not isinstance(data, ShapesData) or len(data) == 0:
        raise ValueError(f"data must be a non-empty ShapesData, got {type(data).__name__}")
    rng = _rng(seed)
    labels = data.labels.numpy()
    n = len(labels)

    # mixed_same: a random *other* member of the own class (offset 1..m-1 in a shuffled member list).
    same = np.arange(n)
    pools: dict[int, np.ndarray] = {}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        pools[int(cls)] = members
        m = len(members)
        if m > 1:
            offset = rng.integers(1, m, size=m)
            same[members] = members[(np.arange(m) + offset) % m]

    # mixed_rand: a uniform class among those present, then a uniform member of it.
    classes = np.array(sorted(pools))
    if rand_from_other_class:
        if len(classes) < 2:
            raise ValueError("rand_from_other_class needs images of at least two classes")
        shift = rng.integers(1, len(classes), size=n)
        donor_cls = classes[(np.searchsorted(classes, labels) + shift) % len(classes)]
    else:
        donor_cls = classes[rng.integers(0, len(classes), size=n)]
    u = rng.random(n)
    rand = np.array([pools[int(c)][int(x * len(pools[int(c)]))] for c, x in zip(donor_cls, u, strict=True)])
    rand = rand.astype(np.int64).reshape(n)

    # mixed_next: a uniform member of the next class present (cyclically).
    nxt = classes[(np.searchsorted(classes, labels) + 1) % len(classes)]
    u = rng.random(n)
    next_donor = np.array([pools[int(c)][int(x * len(pools[int(c)]))] for c, x in zip(nxt, u, strict=True)])
    next_donor = next_donor.astype(np.int64).reshape(n)

    only_factors = dict(data.factors)
    for key in _BG_FACTORS:
        v = data.factors[key]
        only_factors[key] = torch.full_like(v, -1) if key == "bg_family" else torch.full_like(v, float("nan"))
    only_factors["bg_donor"] = torch.full((n,), -1, dtype=torch.int64)
    black = torch.zeros_like(data.backgrounds)
    only_fg = ShapesData(
        torch.where(data.masks[:, None], data.images, black), data.labels, data.masks, black, only_factors
    )
    return {
        "original": data,
        "only_fg": only_fg,
        "mixed_same": _with_background(data, same),
        "mixed_rand": _with_background(data, rand),
        "mixed_next": _with_background(data, next_donor),
    }


def foreground_box_mask(masks: Tensor, margin: int = 2) -> Tensor:
    """The bounding box of each foreground mask, grown by ``margin`` pixels (clipped to the image).

    Args:
        masks: ``[N, H, W]`` bool foreground masks.
        margin: Pixels added on every side, ``>= 0``.

    Returns:
        ``[N, H, W]`` bool; all False where a mask is empty.
    """
    _check_masks(masks)
    margin = _check_int(margin, "margin", 0)
    _, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)  # [N, H], [N, W]
    r_idx, c_idx = torch.arange(h), torch.arange(w)
    big = max(h, w) + margin + 1
    r0 = torch.where(rows, r_idx, big).amin(1) - margin
    r1 = torch.where(rows, r_idx, -big).amax(1) + margin
    c0 = torch.where(cols, c_idx, big).amin(1) - margin
    c1 = torch.where(cols, c_idx, -big).amax(1) + margin
    in_r = (r_idx[None] >= r0[:, None]) & (r_idx[None] <= r1[:, None])
    in_c = (c_idx[None] >= c0[:, None]) & (c_idx[None] <= c1[:, None])
    return in_r[:, :, None] & in_c[:, None, :]


def background_only(images: Tensor, masks: Tensor, margin: int = 2, fill: int = 128) -> Tensor:
    """Grey out the foreground's bounding box (a background-only probe input).

    Filling only the mask would leave the silhouette readable, hence the box (as IN-9's "Only-BG-B" does
    with black).

    Args:
        images: ``[N, 3, H, W]`` uint8.
        masks: ``[N, H, W]`` bool foreground masks.
        margin: Box growth in pixels, ``>= 0``.
        fill: Grey level in ``[0, 255]``.

    Returns:
        ``[N, 3, H, W]`` uint8, a new tensor.
    """
    _check_images(images)
    _check_masks(masks)
    if masks.shape != (images.shape[0], *images.shape[2:]):
        want = [images.shape[0], *images.shape[2:]]
        raise ValueError(f"masks must have shape [N, H, W] = {want} to match images, got {list(masks.shape)}")
    fill = _check_int(fill, "fill", 0, 255)
    box = foreground_box_mask(masks, margin)
    return images.masked_fill(box[:, None], fill)


# ----------------------------------------------------------------------------------------------------------
# Subsets
# ----------------------------------------------------------------------------------------------------------


def fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short sha256 of a labelled image set (shapes and bytes): identifies training data in keys and manifests.

    Args:
        images: ``[N, 3, H, W]`` ``torch.uint8``.
        labels: ``[N]`` ``torch.int64``.

    Returns:
        16 hex characters.
    """
    _check_images(images)
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be a tensor of shape [N] = [{images.shape[0]}]")
    h = hashlib.sha256(f"{tuple(images.shape)} {tuple(labels.shape)}".encode())
    h.update(images.contiguous().numpy())  # buffer protocol, no copy
    h.update(labels.contiguous().numpy())
    return h.hexdigest()[:16]


def stratified_subset(
    labels: Tensor, fraction: float | None = None, n: int | None = None, seed: SeedLike = 0
) -> Tensor:
    """Class-stratified random subset (spec §8.1: the 10% of the data that gets CLAReps).

    The total is ``round(fraction * N)`` or ``n``; it is split as equally as possible over the classes present
    (a class with too few images gives all of them and the rest is shared by the others; leftover units go to
    random classes), then each class's images are drawn uniformly without replacement.

    Args:
        labels: ``[N]`` integer labels.
        fraction: In ``(0, 1]``; exactly one of ``fraction`` / ``n``.
        n: Subset size in ``[1, N]``.
        seed: ``int >= 0`` or ``numpy.random.Generator``.

    Returns:
        ``[k]`` int64 sorted indices into ``labels``.
    """
    if (
        not isinstance(labels, Tensor)
        or labels.ndim != 1
        or labels.is_floating_point()
        or labels.dtype == torch.bool
    ):
        raise ValueError("labels must be a 1-D integer tensor")
    total = len(labels)
    if total == 0:
        raise ValueError("labels must be non-empty")
    if (fraction is None) == (n is None):
        raise ValueError(f"exactly one of fraction and n must be given, got fraction={fraction!r}, n={n!r}")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        k = round(fraction * total)
        if k < 1:
            raise ValueError(f"fraction must keep at least one of the {total} items, got {fraction!r}")
    else:
        k = _check_int(n, "n", 1, total)
    rng = _rng(seed)
    lab = labels.cpu().numpy()
    classes, counts = np.unique(lab, return_counts=True)

    # Water-filling: equal shares, capped by availability; leftovers to random classes with room.
    take = np.zeros(len(classes), dtype=np.int64)
    remaining = k
    while remaining > 0:
        room = np.flatnonzero(take < counts)
        share = remaining // len(room)
        if share == 0:
            take[rng.choice(room, size=remaining, replace=False)] += 1
            break
        add = np.minimum(share, counts[room] - take[room])
        take[room] += add
        remaining -= int(add.sum())
    chosen = [
        rng.choice(np.flatnonzero(lab == c), size=int(t), replace=False)
        for c, t in zip(classes, take, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------------------

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""CIFAR-10 class names in the standard label order."""

CIFAR10_ARCHIVE = "cifar10-jpeg.tar.gz"
_TV_FOLDER = "cifar-10-batches-py"
_SPLITS = ("train", "test")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expected_sha256(sums: Path, filename: str) -> str | None:
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    return None


def _verify(archive: Path, sums: Path, required: bool) -> str:
    """sha256 of ``archive``, checked against ``sums`` (mandatory if ``required``)."""
    digest = _sha256(archive)
    expected = _expected_sha256(sums, archive.name) if sums.is_file() else None
    if expected is None:
        if required:
            raise RuntimeError(f"cannot verify {archive}: {sums} is missing or does not list {archive.name}")
        return digest
    if digest != expected:
        raise RuntimeError(
            f"sha256 mismatch for {archive}: expected {expected} (from {sums}), got {digest}. The archive is "
            f"corrupt or was replaced; restore it, or point $PAPERLIB_DATA at a good copy."
        )
    return digest


def _decode_archive(archive: Path) -> dict[str, np.ndarray]:
    """Decode every JPEG -> {x_train, y_train, x_test, y_test}, each sorted by (class, file name)."""
    from PIL import Image

    from paperlib.progress import tqdm

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in _SPLITS}
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg"))]
        for member in tqdm(members, desc=f"decoding {archive.name}", unit="img"):
            parts = Path(member.name).parts
            parts = parts[1:] if parts[0] == "." else parts
            if len(parts) != 3 or parts[0] not in _SPLITS or parts[1] not in CIFAR10_CLASSES:
                raise RuntimeError(
                    f"unexpected member {member.name!r} in {archive} (want train|test/<class>/x.jpg)"
                )
            data = tar.extractfile(member)
            assert data is not None
            with Image.open(BytesIO(data.read())) as img:
                arr = np.asarray(img.convert("RGB"))
            if arr.shape != (32, 32, 3):
                raise RuntimeError(f"{member.name} in {archive} is {arr.shape[1]}x{arr.shape[0]}, not 32x32")
            found[parts[0]].append((CIFAR10_CLASSES.index(parts[1]), parts[2], arr))
    out = {}
    for split, items in found.items():
        items.sort(key=lambda it: (it[0], it[1]))
        out[f"x_{split}"] = (
            np.stack([it[2] for it in items]).transpose(0, 3, 1, 2).copy()
            if items
            else np.zeros((0, 3, 32, 32), np.uint8)
        )
        out[f"y_{split}"] = np.array([it[0] for it in items], dtype=np.int64)
    return out


def _load_archive(archive: Path, digest: str, split: str) -> tuple[Tensor, Tensor]:
    cache = cache_dir() / "cifar10" / f"cifar10-jpeg-{digest[:16]}.npz"
    if cache.is_file():
        log.info("found cached %s, loading", cache.name)
    else:
        log.info("decoding %s once into the cache (%s)", archive.name, cache.name)
        start = time.perf_counter()
        import gzip
        import zlib

        try:
            arrays = _decode_archive(archive)
        except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as err:  # a bare EOFError names no file
            raise RuntimeError(
                f"cannot read {archive}: the archive is truncated or corrupt ({type(err).__name__}: {err}). "
                f"Download it again (with its SHA256SUMS beside it, so that it is verified), or point "
                f"$PAPERLIB_DATA at a good copy."
            ) from err
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)  # atomic: a crashed decode never leaves a half-written cache
        n_images = sum(len(arrays[f"y_{s}"]) for s in _SPLITS)
        log.info("decoded %d images in %.1f s", n_images, time.perf_counter() - start)
    with np.load(cache) as npz:
        x, y = npz[f"x_{split}"], npz[f"y_{split}"]
    return torch.from_numpy(x), torch.from_numpy(y)


def _torchvision_cifar10(root: Path, train: bool, download: bool) -> Any:
    # Separate so that tests can replace it (no network in tests).
    from torchvision.datasets import CIFAR10

    return CIFAR10(root=str(root), train=train, download=download)


def _load_torchvision(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    ds = _torchvision_cifar10(root, split == "train", download)
    x = np.asarray(ds.data).transpose(0, 3, 1, 2)
    y = np.asarray(ds.targets, dtype=np.int64)
    order = np.argsort(y, kind="stable")  # class-major like the archive path; original order within a class
    return torch.from_numpy(np.ascontiguousarray(x[order])), torch.from_numpy(y[order])


def _from_location(location: Path, split: str, origin: str) -> tuple[Tensor, Tensor]:
    """Load from a user-given path: an archive, a folder holding one, or a torchvision CIFAR-10 root."""
    if location.is_file():
        archive = location
    elif (location / CIFAR10_ARCHIVE).is_file():
        archive = location / CIFAR10_ARCHIVE
    elif location.name == _TV_FOLDER and location.is_dir():
        return _load_torchvision(location.parent, split, download=False)
    elif (location / _TV_FOLDER).is_dir():
        return _load_torchvision(location, split, download=False)
    else:
        raise FileNotFoundError(
            f"{origin}={location} is neither a {CIFAR10_ARCHIVE} file, a folder containing one, nor a "
            f"torchvision CIFAR-10 root (a folder containing {_TV_FOLDER}/)"
        )
    # A user-supplied archive is checked only when a SHA256SUMS beside it lists it.
    digest = _verify(archive, archive.parent / "SHA256SUMS", required=False)
    return _load_archive(archive, digest, split)


def load_cifar10(split: str = "train", source: str | None = None) -> tuple[Tensor, Tensor]:
    """Load CIFAR-10 as uint8 images and int64 labels, sorted by class, then by file name.

    Resolution order (``source=None``):

    1. ``$PAPERLIB_DATA``: a ``cifar10-jpeg.tar.gz``, a folder containing one, or a torchvision root (a folder
       containing ``cifar-10-batches-py/``); an invalid value is an error, not skipped;
    2. ``shared_dir()/data/cifar10-jpeg.tar.gz``, verified against ``shared_dir()/data/SHA256SUMS``;
    3. ``torchvision.datasets.CIFAR10(cache_dir()/"torchvision", download=True)`` (needs internet; skipped
       when ``$PAPERLIB_OFFLINE`` is set).

    An archive is decoded once (tqdm bar, ~20 s for the full set) into ``cache_dir()/cifar10/``, keyed by
    its sha256; later calls load that ``.npz``.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        source: ``None`` for the order above; ``"env"``, ``"shared"`` or ``"torchvision"`` to use only that
            way; or a path, used like ``$PAPERLIB_DATA``.

    Returns:
        ``(images [N, 3, 32, 32] uint8, labels [N] int64)``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    ways = ("env", "shared", "torchvision")
    if source is not None and source not in ways:
        path = Path(source).expanduser()
        if not path.exists():
            raise ValueError(f"source must be None, one of {ways}, or an existing path, got {source!r}")
        return _from_location(path, split, "source")

    env = os.environ.get("PAPERLIB_DATA")
    shared_archive = shared_dir() / "data" / CIFAR10_ARCHIVE
    tv_root = cache_dir() / "torchvision"
    if source in (None, "env") and env:
        return _from_location(Path(env).expanduser(), split, "$PAPERLIB_DATA")
    if source in (None, "shared") and shared_archive.is_file():
        digest = _verify(shared_archive, shared_archive.parent / "SHA256SUMS", required=True)
        return _load_archive(shared_archive, digest, split)

    error: BaseException | None = None
    offline = bool(os.environ.get("PAPERLIB_OFFLINE"))
    if source in (None, "torchvision") and not offline:
        try:
            return _load_torchvision(tv_root, split, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure (offline, no torchvision) ends in the message below
            error = exc
    raise FileNotFoundError(
        f"CIFAR-10 not found (source={source!r}). Provide it one of three ways: (a) set $PAPERLIB_DATA to "
        f"a {CIFAR10_ARCHIVE} file, a folder containing one, or a torchvision root with {_TV_FOLDER}/ "
        f"(currently {env!r}); (b) place {CIFAR10_ARCHIVE} and its SHA256SUMS in {shared_archive.parent}; "
        f"(c) let torchvision download it into {tv_root} (needs internet"
        + ("; not tried: $PAPERLIB_OFFLINE is set)" if offline else ")")
        + (f"; the download failed with {type(error).__name__}: {error}" if error is not None else "")
    ) from error


# ----------------------------------------------------------------------------------------------------------
# One entry point for the image chapters
# ----------------------------------------------------------------------------------------------------------

TRAINED_DATASETS: tuple[str, ...] = ("shapes", "cifar10")
"""Datasets whose CDMs and classifiers the book trains itself (the CPU book)."""

DATASETS: tuple[str, ...] = (*TRAINED_DATASETS, "imagenet20")
"""Datasets an image chapter can run on (a notebook parameter); ``imagenet20`` (the paper's NMI set with the
pretrained DiT-XL/2, :mod:`paperlib.imagenet`, :mod:`paperlib.dit`) needs a local ImageNet and a GPU (profile
``paper``)."""

DATASET_NAMES: dict[str, str] = {"shapes": "shapes", "cifar10": "CIFAR-10", "imagenet20": "ImageNet20"}
"""How the prose names each dataset."""


@dataclass(frozen=True)
class DatasetConfig:
    """Which images a chapter uses.

    Attributes:
        name: ``"shapes"`` (embedded, with masks and factors), ``"cifar10"`` or ``"imagenet20"``.
        size: Image side; shapes are rendered at this size, CIFAR-10 must be 32, ImageNet20 is resized and
            center-cropped to it.
        n_train: Training images (shapes: generated; CIFAR-10: a class-stratified subset when below 50,000;
            ImageNet20: a class-stratified subset of the ImageNet training folders).
        n_test: Test images (shapes: generated; CIFAR-10: a class-stratified subset when below 10,000;
            ImageNet20: of the validation folders, 1000 images in all).
        seed: Seed of the shapes draw (and of the ImageNet20 subsets).
        bg_correlation: Shapes' background/class correlation.
    """

    name: str = "shapes"
    size: int = 32
    n_train: int = 10_000
    n_test: int = 2_000
    seed: int = 0
    bg_correlation: float = 0.9

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(f"dataset name must be one of {DATASETS}, got {self.name!r}")
        if self.name == "cifar10" and self.size != 32:
            raise ValueError(f"CIFAR-10 images are 32x32; size must be 32, got {self.size}")

    @property
    def classes(self) -> tuple[str, ...]:
        if self.name == "imagenet20":
            from paperlib.imagenet import IMAGENET20_CLASSES

            return IMAGENET20_CLASSES
        return SHAPES_CLASSES if self.name == "shapes" else CIFAR10_CLASSES

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "n_train": self.n_train, "n_test": self.n_test,
                "seed": self.seed, "bg_correlation": self.bg_correlation}


def load_shapes(cfg: DatasetConfig) -> tuple[ShapesData, ShapesData]:
    """The shapes train and test sets of ``cfg`` (with masks and factors)."""
    if cfg.name != "shapes":
        raise ValueError(f"load_shapes needs a shapes config, got name={cfg.name!r}")
    return shapes_splits(cfg.seed, cfg.n_train, cfg.n_test, cfg.size, cfg.bg_correlation)


def load_dataset(cfg: DatasetConfig, split: str = "train") -> tuple[Tensor, Tensor]:
    """``(images [N, 3, H, W] uint8, labels [N] int64)`` of ``split`` (``"train"`` or ``"test"``)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if cfg.name == "cifar10":
        images, labels = load_cifar10(split)
        n = cfg.n_train if split == "train" else cfg.n_test
        if n > len(labels):
            raise ValueError(
                f"the {split} split of the CIFAR-10 found here has {len(labels)} images, but the config asks for "
                f"n_{split}={n} (CIFAR-10 has 50,000 training and 10,000 test images): the archive is partial. "
                f"Point $PAPERLIB_DATA at the full archive, or ask for fewer images."
            )
        if n < len(labels):
            keep = stratified_subset(labels, n=n, seed=cfg.seed)
            images, labels = images[keep], labels[keep]
        return images, labels
    if cfg.name == "imagenet20":
        from paperlib.imagenet import load_imagenet20

        return load_imagenet20(split, cfg.n_train if split == "train" else cfg.n_test, cfg.seed, cfg.size)
    data = load_shapes(cfg)[_SPLITS.index(split)]
    return data.images, data.labels


def dataset_unavailable(name: str) -> str | None:
    """Why dataset ``name`` cannot be loaded here, or ``None`` when it can (shapes always can).

    CIFAR-10 is looked up as :func:`load_cifar10` does (and its test split decoded and cached on the way);
    ImageNet20's class folders in ``$PAPERLIB_IMAGENET`` are listed (nothing is decoded).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")
    if name == "shapes":
        return None
    if name == "imagenet20":
        from paperlib.imagenet import imagenet20_unavailable

        return imagenet20_unavailable()
    try:
        load_cifar10("test")
    except FileNotFoundError as exc:
        return str(exc)
    return None
