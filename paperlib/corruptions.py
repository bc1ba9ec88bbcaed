"""Common corruptions in the CIFAR-10-C style: 15 types x 5 severities at CIFAR scale (spec §9.3).

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), made CIFAR-10-C with the CIFAR parameters of their ``make_cifar_c.py``; every
severity table below (:data:`CIFAR10C_PARAMS`) is theirs. ``imagecorruptions`` (Michaelis et al. 2019) uses
the ImageNet-C severities, needs OpenCV and scikit-image and fails on NumPy 2 for three types, and the
reference script needs ImageMagick (Wand): so all 15 are written here on NumPy, SciPy, Pillow and torch,
following the reference algorithms step by step:

====================  =====================================================================================
noise (3)             Gaussian, Poisson (shot) and salt-and-pepper (impulse) noise, per pixel and channel
blur (4)              defocus (anti-aliased disk kernel), glass (blur, local pixel swaps, blur), motion
                      (ImageMagick's one-sided Gaussian line kernel, as ``imagecorruptions`` re-implements
                      it), zoom (mean of centre zooms)
weather (3)           snow (motion-blurred thresholded noise layer), frost (a crop of a frost photograph
                      blended in), fog (diamond-square plasma fractal)
digital (5)           brightness (HSV value shift), contrast, elastic (random affine, then a smoothed
                      random displacement field), pixelate (box down- and up-sampling), JPEG
====================  =====================================================================================

Frost blends crops of Hendrycks' frost photographs, which the ``imagecorruptions`` package ships (read as
files; the package is not imported, so it is installed without its dependencies).

**Image size.** The spatial corruptions (blurs, weather, elastic) are defined in pixels of a 32x32 CIFAR
image. A smaller image whose side divides 32 (16x16 shapes) is upsampled to 32x32 (nearest), corrupted with
the CIFAR parameters and box-averaged back, so it gets the same corruption relative to the image; an
identity corruption round-trips exactly. The per-pixel ones (noise, brightness, contrast, JPEG) and
pixelate run at the native size; pixelate's factors are relative to the side, as in the reference (at 32x32
the box-downsampled side is 30, 28, 27, 24, 20 pixels; at 16x16 it is 15, 14, 13, 12, 10: a resolution loss
through a 32x32 proxy would stay above 16 pixels and change a 16x16 image hardly at all).

**Randomness.** Image ``i`` of a call draws from its own stream ``numpy.random.default_rng([seed, type,
first_index + i])``: a batch gives the same result as its pieces (with ``first_index`` set), and all five
severities of a type draw the same random numbers where their draws have the same shape (common random
numbers: severity changes the parameters, not the noise). The reference used the global NumPy stream, so
the values are not its values; their distributions are.

**Severity order.** With these parameters 11 of the 15 types change an image strictly more at each
severity (mean absolute pixel change, at 32x32 and 16x16). Four do not, by the parameters themselves
(:data:`NOT_ORDERED_BY_PIXEL_CHANGE`, measured on CIFAR-10 test images and tested): motion blur 3 and 4
share sigma 2 (the two taps severity 4 adds weigh ``exp(-144/8)``), glass blur 1 and 2 differ only in a
pre-blur too small to matter (sigma 0.05 vs 0.25) and a larger blur smooths the swapped pixels back, frost
3 and 4 share the frost weight 0.4 and darken the image as they add frost (ordered in structure, 1-2-3-5,
not in L1), and elastic's affine jitter shrinks
from 2.56 to 0.96 pixels as its local displacement grows (less pixel change at higher severity).

Deviations from the reference, all below one grey level or a sub-pixel: OpenCV's fixed-point bilinear
warp and resize are replaced by exact bilinear interpolation (SciPy, torch); ImageMagick's 8-bit output of
the motion blur is kept in floating point for images (rounded for the snow layer, which is a PNG in the
reference); ``uint8`` outputs are rounded where the reference truncates (``np.uint8``).
"""

from __future__ import annotations

import importlib.metadata
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import Tensor

from paperlib.validate import check_int, check_tensor, describe

__all__ = [
    "CIFAR10C_PARAMS",
    "CODE_VERSION",
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "NOT_ORDERED_BY_PIXEL_CHANGE",
    "SEVERITIES",
    "SPATIAL",
    "corrupt",
]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 CIFAR-10-C corruptions, in the reference order and with its (file) names."""

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:10],
    "digital": CORRUPTIONS[10:15],
}
"""Hendrycks & Dietterich's four families."""

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Severity levels."""

SPATIAL: frozenset[str] = frozenset(
    {"defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog", "elastic_transform"}
)
"""Corruptions defined in pixels of a 32x32 image (run at 32x32 for smaller images, see the module doc)."""

CIFAR_SIZE = 32
"""Side of the images the CIFAR-10-C parameters are defined for."""

_E = CIFAR_SIZE  # elastic: the reference writes its parameters as multiples of IMSIZE = 32

CODE_VERSION = 2
"""Bumped when a corruption's code changes what it outputs (2: glass blur copies pixels as the reference
does); part of a corruption evaluation's cache key (:func:`paperlib.robustness.corruption_parameters_hash`)."""

CIFAR10C_PARAMS: dict[str, tuple] = {
    # Hendrycks & Dietterich (2019), make_cifar_c.py; one entry per severity 1..5.
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of N(0, c^2) added to x in [0, 1]
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity: Poisson(x c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1 (salt = pepper)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, delta, iters
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # ImageMagick radius, sigma
    "zoom_blur": tuple(np.arange(1, end, 0.01) for end in (1.06, 1.11, 1.16, 1.21, 1.26)),  # zoom factors
    # snow: layer mean, std, zoom, threshold, blur radius, blur sigma, image weight
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal wibble decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the per-channel mean
    # elastic: displacement amplitude, displacement smoothing sigma, affine jitter (pixels)
    "elastic_transform": ((_E * 0, _E * 0, _E * 0.08), (_E * 0.05, _E * 0.2, _E * 0.07),
                          (_E * 0.08, _E * 0.06, _E * 0.06), (_E * 0.1, _E * 0.04, _E * 0.05),
                          (_E * 0.1, _E * 0.03, _E * 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side fraction of the box-downsampled image
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}
"""The CIFAR-10-C severity parameters of Hendrycks & Dietterich (2019), per corruption and severity."""

NOT_ORDERED_BY_PIXEL_CHANGE: dict[str, str] = {
    "motion_blur": "severities 3 and 4 (radius 6 and 8, both sigma 2) give the same kernel to 1e-7",
    "glass_blur": "severities 1 and 2 (sigma 0.05, 0.25) are the same swaps; a larger sigma smooths them back",
    "frost": "severities 3 and 4 share the frost weight 0.4 (image weight 0.9, 0.85); as the image weight falls "
             "the blend's brightening cancels in L1, which falls from 3 to 5",
    "elastic_transform": "the affine jitter falls from 2.56 to 0.96 px as the elastic field grows",
}
"""Types whose published CIFAR-10-C severities do not change an image more at every level, and why."""

_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # the reference draws
# randint(5): frost6.jpg, which the package also ships, is never used


# ----------------------------------------------------------------------------------------------------------
# Helpers (arrays are [B, H, W, 3] float64 in [0, 1])
# ----------------------------------------------------------------------------------------------------------


def _gaussian_hw(x: np.ndarray, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """scikit-image's ``gaussian`` on the spatial axes of ``[B, H, W, C]`` (SciPy underneath)."""
    if sigma == 0:
        return x.copy()
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=truncate)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of ``[B, H, W, C]`` by ``factor >= 1`` and crop to ``H x W`` (the reference's
    ``clipped_zoom``: SciPy ``zoom(order=1)``, i.e. linear interpolation with the corners aligned, which is
    torch's ``bilinear`` with ``align_corners=True``)."""
    h = x.shape[1]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out_size = round(ch * factor)  # SciPy's output shape
    crop = torch.from_numpy(np.ascontiguousarray(x[:, top:top + ch, top:top + ch])).permute(0, 3, 1, 2)
    out = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=True)
    trim = (out_size - h) // 2
    return out[:, :, trim:trim + h, trim:trim + h].permute(0, 2, 3, 1).numpy()


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: a rasterised disk on a 17x17 grid (radius <= 8), normalised, then
    blurred by a 3x3 Gaussian of std ``alias_blur`` (OpenCV ``GaussianBlur``), cropped to its support."""
    if radius > 8:  # the reference's larger grid and 5x5 blur (never reached at CIFAR severities)
        grid, ksize = np.arange(-radius, radius + 1), 5
    else:
        grid, ksize = np.arange(-8, 8 + 1), 3
    X, Y = np.meshgrid(grid, grid)
    disk = ((X**2 + Y**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-((np.arange(ksize) - ksize // 2) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    k = ndimage.correlate1d(ndimage.correlate1d(disk, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")
    rows = np.flatnonzero(k.any(1))
    half = max(len(k) // 2 - rows[0], rows[-1] - len(k) // 2)  # symmetric crop keeps the centre
    c = len(k) // 2
    return k[c - half:c + half + 1, c - half:c + half + 1]


def _motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights: a one-sided Gaussian over ``2 radius + 1`` taps, normalised."""
    width = int(2 * np.ceil(radius) + 1)
    k = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2 * sigma**2))
    return k / k.sum()


def _motion_blur_one(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Motion blur of one ``[H, W, C]`` image along ``angle`` degrees: ``sum_i k_i x(p + offset_i)``, edge
    pixels repeated (ImageMagick ``MotionBlurImage``, as ``imagecorruptions`` re-implements it)."""
    k = _motion_kernel(radius, sigma)
    h, w = img.shape[:2]
    s, c = np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
    rows, cols = np.arange(h), np.arange(w)
    out = np.zeros_like(img)
    for i, ki in enumerate(k):
        oy, ox = int(np.ceil(i * s - 0.5)), int(np.ceil(i * c - 0.5))
        if abs(oy) >= h or abs(ox) >= w:  # the motion left the image: the reference stops here
            break
        out += ki * img[np.clip(rows + oy, 0, h - 1)][:, np.clip(cols + ox, 0, w - 1)]
    return out


def _plasma_fractal(rng: np.random.Generator, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height map ``[mapsize, mapsize]`` in ``[0, 1]`` (the reference's ``plasma_fractal``,
    including its ``wibble * U(-wibble, wibble)`` perturbation)."""
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[0:mapsize:step, 0:mapsize:step]
        sq = corners + np.roll(corners, -1, axis=0)
        sq += np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled_mean(sq)  # squares
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        m[0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)  # diamonds, one parity
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        m[half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)  # diamonds, the other
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def _frost_path(name: str):
    try:
        dist = importlib.metadata.distribution("imagecorruptions")
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            "the frost corruption blends Hendrycks' frost photographs, which the imagecorruptions package ships: "
            "pip install --no-deps imagecorruptions==1.1.2 (make env does)"
        ) from exc
    return dist.locate_file(f"imagecorruptions/frost/{name}")


@cache
def _frost_image(index: int) -> np.ndarray:
    """Frost photograph ``index`` (of :data:`_FROST_FILES`) as ``[h, w, 3]`` uint8, resized by 0.2 with
    bilinear interpolation at pixel centres (OpenCV ``resize(fx=fy=0.2)``, no anti-aliasing)."""
    with Image.open(_frost_path(_FROST_FILES[index])) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)  # RGBA -> RGB drops alpha, as cv2.imread does
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    small = F.interpolate(t, scale_factor=0.2, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


# ----------------------------------------------------------------------------------------------------------
# The corruptions: f(x [B, H, W, 3] float64 in [0, 1], c = the severity's parameters, rngs) -> array
# ----------------------------------------------------------------------------------------------------------

Rngs = Sequence[np.random.Generator]


def _gaussian_noise(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    noise = np.stack([r.standard_normal(x.shape[1:]) for r in rngs])
    return x + c * noise


def _shot_noise(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    return np.stack([r.poisson(xi * c) for r, xi in zip(rngs, x)]) / c


def _impulse_noise(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    # scikit-image random_noise(mode="s&p", amount=c): each value flipped with probability c, to 1 or 0 (1/2)
    u = np.stack([r.random((2, *x.shape[1:])) for r in rngs])
    flipped, salt = u[:, 0] < c, u[:, 1] < 0.5
    return np.where(flipped, salt.astype(x.dtype), x)


def _defocus_blur(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    k = _disk_kernel(*c)
    return ndimage.correlate(x, k[None, :, :, None], mode="mirror")  # cv2.filter2D: BORDER_REFLECT_101


def _glass_blur(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    sigma, delta, iterations = c
    b, h, w = x.shape[:3]
    # Blur, quantise to uint8 (the reference's np.uint8: truncation), locally shuffle pixels, blur again.
    # The reference's "swap" `x[h, w], x[h2, w2] = x[h2, w2], x[h, w]` acts on NumPy views: it copies
    # x[h2, w2] into x[h, w] and writes that copy back, so CIFAR-10-C was made with a copy, not a swap.
    y = np.floor(_gaussian_hw(x, sigma, "nearest") * 255).astype(np.float64)
    hs, ws = range(h - delta, delta, -1), range(w - delta, delta, -1)
    shifts = np.stack([r.integers(-delta, delta, size=(iterations, len(hs), len(ws), 2)) for r in rngs])
    idx = np.arange(b)
    for it in range(iterations):
        for a, hh in enumerate(hs):
            for bb, ww in enumerate(ws):
                dx, dy = shifts[:, it, a, bb, 0], shifts[:, it, a, bb, 1]
                h2, w2 = hh + dy, ww + dx
                y[idx, hh, ww] = y[idx, h2, w2]
    return _gaussian_hw(y / 255, sigma, "nearest")


def _motion_blur(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    return np.stack([_motion_blur_one(xi, c[0], c[1], r.uniform(-45, 45)) for r, xi in zip(rngs, x)])


def _zoom_blur(x: np.ndarray, c: np.ndarray, rngs: Rngs) -> np.ndarray:
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, float(factor))
    return (x + out) / (len(c) + 1)


def _snow(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = c
    h, w = x.shape[1:3]
    layers = []
    for r in rngs:
        layer = r.normal(mean, std, size=(h, w))
        layer = _clipped_zoom(layer[None, :, :, None], zoom)[0, :, :, 0]
        layer[layer < threshold] = 0
        layer = np.floor(np.clip(layer, 0, 1) * 255)  # the reference's 8-bit PNG of the layer
        blurred = _motion_blur_one(layer[:, :, None], radius, sigma, r.uniform(-135, -45))[:, :, 0]
        layers.append(np.clip(np.round(blurred), 0, 255) / 255)  # ImageMagick's 8-bit output
    snow = np.stack(layers)[..., None]
    gray = (x @ np.array([0.299, 0.587, 0.114]))[..., None]  # OpenCV RGB2GRAY
    x = keep * x + (1 - keep) * np.maximum(x, gray * 1.5 + 0.5)
    return x + snow + np.rot90(snow, k=2, axes=(1, 2))


def _frost(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    h, w = x.shape[1:3]
    crops = []
    for r in rngs:
        frost = _frost_image(int(r.integers(len(_FROST_FILES))))
        top, left = r.integers(0, frost.shape[0] - h), r.integers(0, frost.shape[1] - w)
        crops.append(frost[top:top + h, left:left + w])
    return c[0] * x + c[1] * np.stack(crops).astype(np.float64) / 255


def _fog(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    h, w = x.shape[1:3]
    size = 1 << int(np.ceil(np.log2(max(h, w))))
    fog = np.stack([_plasma_fractal(r, size, c[1])[:h, :w] for r in rngs])[..., None]
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + c[0] * fog) * max_val / (max_val + c[0])


def _brightness(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    # HSV value + c with hue and saturation kept == RGB scaled by v'/v (a black pixel, s = 0, becomes grey v').
    v = x.max(axis=-1, keepdims=True)
    v_new = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * v_new / np.where(v > 0, v, 1), v_new)


def _contrast(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def _elastic_one(img: np.ndarray, c: tuple, r: np.random.Generator) -> np.ndarray:
    alpha, sigma, jitter = c
    h, w = img.shape[:2]
    # Random affine: three points around the centre moved by U(-jitter, jitter), OpenCV warpAffine semantics
    # (dst(p) = src(M^-1 p), bilinear, BORDER_REFLECT_101 = SciPy "mirror"); points are (x, y).
    centre = np.float32([h, w])[::-1] // 2  # the reference's float32(shape_size) // 2, used as (x, y)
    sq = min(h, w) // 3
    pts1 = np.float32([centre + sq, [centre[0] + sq, centre[1] - sq], centre - sq]).astype(np.float64)
    pts2 = pts1 + r.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    M = np.linalg.solve(np.c_[pts1, np.ones(3)], pts2).T  # pts2 = M [pts1; 1], M [2, 3]
    A_inv = np.linalg.inv(M[:, :2])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = np.einsum("ij,jhw->ihw", A_inv, np.stack([xx - M[0, 2], yy - M[1, 2]]))  # (x, y) in the source
    warped = np.stack([ndimage.map_coordinates(img[:, :, ch], [src[1], src[0]], order=1, mode="mirror")
                       for ch in range(img.shape[2])], axis=-1)
    # Smooth random displacement (scikit-image gaussian: mode reflect, truncate 3), bilinear, mode reflect.
    dx = _gaussian_hw(r.uniform(-1, 1, size=(1, h, w, 1)), sigma, "reflect", 3.0)[0, :, :, 0] * alpha
    dy = _gaussian_hw(r.uniform(-1, 1, size=(1, h, w, 1)), sigma, "reflect", 3.0)[0, :, :, 0] * alpha
    dx, dy = dx.astype(np.float32), dy.astype(np.float32)
    return np.stack([ndimage.map_coordinates(warped[:, :, ch], [yy + dy, xx + dx], order=1, mode="reflect")
                     for ch in range(img.shape[2])], axis=-1)


def _elastic_transform(x: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    return np.stack([_elastic_one(xi, c, r) for r, xi in zip(rngs, x)])


def _pixelate(x: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    h, w = x.shape[1:3]
    small = (int(w * c), int(h * c))
    out = np.empty_like(x)
    for i, xi in enumerate(x):
        for ch in range(x.shape[3]):
            im = Image.fromarray(xi[:, :, ch].astype(np.float32), mode="F")
            out[i, :, :, ch] = np.asarray(im.resize(small, Image.BOX).resize((w, h), Image.BOX))
    return out


def _jpeg_compression(x: np.ndarray, c: int, rngs: Rngs) -> np.ndarray:
    out = np.empty_like(x)
    for i, xi in enumerate(np.clip(np.round(x * 255), 0, 255).astype(np.uint8)):
        buf = BytesIO()
        Image.fromarray(xi).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"), dtype=np.float64) / 255
    return out


_FUNCS: dict[str, Callable[[np.ndarray, object, Rngs], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
assert tuple(_FUNCS) == CORRUPTIONS


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0, *, first_index: int = 0) -> Tensor:
    """Apply one CIFAR-10-C corruption at one severity (Hendrycks & Dietterich 2019, CIFAR parameters).

    Args:
        images: ``[B, 3, H, W]``, either ``torch.uint8`` or floating in ``[0, 1]``. The spatial corruptions
            (:data:`SPATIAL`) need square images whose side divides 32 (32, 16, 8); the others any size.
        name: One of :data:`CORRUPTIONS`.
        severity: ``1..5``.
        seed: ``int >= 0``; image ``i`` draws from ``default_rng([seed, type, first_index + i])``.
        first_index: Index of ``images[0]`` in the whole set, so that a set corrupted in pieces equals the set
            corrupted at once.

    Returns:
        ``[B, 3, H, W]`` of the input's dtype: ``uint8`` rounded, or float clipped to ``[0, 1]``.

    Raises:
        ValueError: Unknown name, severity outside 1..5, bad seed, images not ``[B, 3, H, W]`` uint8 or float
            in ``[0, 1]``, or a size the spatial corruptions do not support.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"name must be one of {CORRUPTIONS}, got {describe(name)}")
    severity = check_int("severity", severity, 1, 5)
    seed = check_int("seed", seed, 0)
    first_index = check_int("first_index", first_index, 0)
    check_tensor("images", images, ndim=4)
    is_uint8 = images.dtype == torch.uint8
    if not is_uint8:
        check_tensor("images", images, dtype="floating", finite=True, value_range=(0.0, 1.0),
                     range_note="float images must be in [0, 1]; or pass uint8")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels, [B, 3, H, W], got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    up = 1
    if name in SPATIAL:
        if h != w or CIFAR_SIZE % h:
            raise ValueError(f"{name} is defined on 32x32 CIFAR pixels and needs square images whose side divides "
                             f"32 (32, 16, 8), got {h}x{w}")
        up = CIFAR_SIZE // h
    if b == 0:
        return images.clone()

    x = images.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    x = x / 255 if is_uint8 else x
    if up > 1:  # nearest upsampling to 32x32; box averaging back below
        x = x.repeat(up, axis=1).repeat(up, axis=2)
    kind = zlib.crc32(name.encode())
    rngs = [np.random.default_rng([seed, kind, first_index + i]) for i in range(b)]
    out = _FUNCS[name](x, CIFAR10C_PARAMS[name][severity - 1], rngs)
    if up > 1:
        out = out.reshape(b, h, up, w, up, 3).mean(axis=(2, 4))
    out = torch.from_numpy(np.clip(np.ascontiguousarray(out), 0, 1)).permute(0, 3, 1, 2).contiguous()
    if is_uint8:
        return (out * 255).round().to(torch.uint8)
    return out.to(images.dtype)
