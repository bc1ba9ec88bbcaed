"""CIFAR-10-C corruptions: severity order, determinism, types, and exact references where there are some."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from scipy import ndimage

from paperlib import corruptions as C
from paperlib.corruptions import CORRUPTIONS, corrupt
from paperlib.data import make_shapes

SIZES = (32, 16)


def _smooth(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields (low-frequency images) as uint8."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
            .clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module", params=SIZES)
def batch(request) -> torch.Tensor:
    """A fixed batch of natural-ish images: shapes scenes (textured backgrounds, a sharp-edged object)."""
    return make_shapes(16, seed=7, size=request.param).images


def _l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item() / 255


def _structural(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - mean Pearson correlation of clean and corrupted images (blind to brightness and contrast)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_severity_changes_the_image_more(batch: torch.Tensor, name: str) -> None:
    _check_order(batch, name)


def _check_order(batch: torch.Tensor, name: str) -> None:
    d = [_l1(corrupt(batch, name, s, seed=0), batch) for s in C.SEVERITIES]
    if name not in C.NOT_ORDERED_BY_PIXEL_CHANGE:
        assert all(b > a for a, b in zip(d, d[1:])), d
    elif name == "motion_blur":  # severities 3 and 4 share sigma 2: the extra taps weigh exp(-144/8)
        assert d[0] < d[1] < d[2] < d[4] and d[3] > d[1]
        assert abs(d[3] - d[2]) < 1e-6 * d[2]
    elif name == "glass_blur":  # twice the swaps at an equal blur change more; sigma 0.05 ~ 0.25
        assert d[3] > d[1] and d[4] > d[2]
        assert abs(d[1] - d[0]) < 0.05 * d[0]
    elif name == "frost":  # the blend darkens the image as it adds frost: in structure (brightness ignored)
        s = [_structural(corrupt(batch, name, v, seed=0), batch) for v in C.SEVERITIES]
        assert s[0] < s[1] < s[2] < s[4] and s[3] < s[4], s
        assert abs(s[3] - s[2]) < 0.1 * s[2]  # 3 and 4 share the frost weight 0.4
        assert d[2] > d[3] > d[4]  # L1 falls with the image weight
    elif name == "elastic_transform":  # the affine jitter shrinks from 2.56 to 0.96 px: less pixel change
        assert all(b < a for a, b in zip(d, d[1:])), d
    else:  # pragma: no cover
        raise AssertionError(f"no expectation for {name}")


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_severity_order_on_cifar10_test_images(size: int) -> None:
    """The same order claims on 64 CIFAR-10 test images (16x16: their 2x2 box averages)."""
    from paperlib.data import dataset_unavailable, load_cifar10

    if dataset_unavailable("cifar10"):
        pytest.skip("no CIFAR-10 here")
    images = load_cifar10("test")[0][::157][:64]
    if size == 16:
        images = torch.nn.functional.avg_pool2d(images.double(), 2).round().to(torch.uint8)
    for name in CORRUPTIONS:
        _check_order(images, name)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_under_the_seed(batch: torch.Tensor, name: str) -> None:
    a, b = corrupt(batch, name, 3, seed=11), corrupt(batch, name, 3, seed=11)
    assert torch.equal(a, b)
    other = corrupt(batch, name, 3, seed=12)
    random = name not in {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}
    assert torch.equal(other, a) != random


@pytest.mark.parametrize("name", ["glass_blur", "snow", "frost", "fog", "elastic_transform", "impulse_noise"])
def test_a_batch_equals_its_pieces(batch: torch.Tensor, name: str) -> None:
    whole = corrupt(batch, name, 4, seed=2)
    parts = torch.cat([corrupt(batch[:5], name, 4, seed=2), corrupt(batch[5:], name, 4, seed=2, first_index=5)])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shapes_dtypes_and_range(batch: torch.Tensor, name: str) -> None:
    x8 = batch[:4]
    out8 = corrupt(x8, name, 5, seed=0)
    assert out8.dtype == torch.uint8 and out8.shape == x8.shape
    for dtype in (torch.float32, torch.float64):
        xf = x8.to(dtype) / 255
        out = corrupt(xf, name, 5, seed=0)
        assert out.dtype == dtype and out.shape == x8.shape
        assert out.min() >= 0 and out.max() <= 1
        # The same corruption whatever the input type (uint8 output rounded; float32 inputs are a few ulp
        # off, which moves glass blur's 8-bit quantisation by a level).
        tol = 0.5 + 1e-4 if dtype == torch.float64 else 1.5 if name == "glass_blur" else 0.5 + 1e-3
        assert (out * 255 - out8.to(dtype)).abs().max() <= tol
    assert corrupt(x8[:0], name, 1).shape == (0, *x8.shape[1:])


def test_bad_arguments_raise() -> None:
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    for kwargs, match in [
        ({"name": "blur"}, "name must be one of"),
        ({"severity": 0}, "severity"),
        ({"severity": 6}, "severity"),
        ({"severity": 2.0}, "severity"),
        ({"severity": True}, "severity"),
        ({"seed": -1}, "seed"),
    ]:
        args = {"images": x, "name": "fog", "severity": 1, **kwargs}
        with pytest.raises(ValueError, match=match):
            corrupt(**args)
    for images, match in [
        (torch.zeros(3, 16, 16, dtype=torch.uint8), "4 dimensions"),
        (torch.zeros(1, 1, 16, 16, dtype=torch.uint8), "3 channels"),
        (torch.full((1, 3, 16, 16), 2.0), r"\[0, 1\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.int32), "floating"),
        (torch.zeros(1, 3, 24, 24, dtype=torch.uint8), "divides"),
        (torch.zeros(1, 3, 16, 32, dtype=torch.uint8), "square"),
    ]:
        with pytest.raises(ValueError, match=match):
            corrupt(images, "snow", 1)
    assert corrupt(torch.zeros(1, 3, 24, 20, dtype=torch.uint8), "contrast", 1).shape == (1, 3, 24, 20)


# ---------------------------------------------------------------------------------------- exact references


def test_brightness_is_an_hsv_value_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 5, 3))
    x[0, 0, 0] = 0  # black: saturation 0, becomes grey
    x[0, 0, 1] = 0.4  # grey
    got = C._brightness(x, 0.3, [])
    want = np.array([[[colorsys.hsv_to_rgb(*(lambda h, s, v: (h, s, min(v + 0.3, 1)))(*colorsys.rgb_to_hsv(*p)))
                       for p in row] for row in img] for img in x])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_contrast_and_noise_follow_their_formulas() -> None:
    rng = np.random.default_rng(1)
    x = 0.3 + 0.4 * rng.random((3, 32, 32, 3))
    means = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(C._contrast(x, 0.4, []), (x - means) * 0.4 + means)
    rngs = [np.random.default_rng(i) for i in range(3)]
    noise = C._gaussian_noise(x, 0.1, rngs) - x
    assert abs(noise.std() - 0.1) < 0.003 and abs(noise.mean()) < 0.003
    imp = C._impulse_noise(x, 0.07, [np.random.default_rng(i) for i in range(3)])
    changed = imp != x
    assert abs(changed.mean() - 0.07) < 0.005 and set(np.unique(imp[changed])) <= {0.0, 1.0}
    assert abs(imp[changed].mean() - 0.5) < 0.05  # salt = pepper


def test_clipped_zoom_is_scipys_linear_zoom() -> None:
    x = np.random.default_rng(2).random((2, 32, 32, 3))
    for factor in (1.0, 1.07, 1.25, 1.75, 2.25):
        ch = int(np.ceil(32 / factor))
        top = (32 - ch) // 2
        ref = ndimage.zoom(x[:, top:top + ch, top:top + ch], (1, factor, factor, 1), order=1)
        trim = (ref.shape[1] - 32) // 2
        np.testing.assert_allclose(C._clipped_zoom(x, factor), ref[:, trim:trim + 32, trim:trim + 32], atol=1e-12)


def test_defocus_kernel_is_a_normalised_symmetric_disk() -> None:
    for radius, alias in C.CIFAR10C_PARAMS["defocus_blur"]:
        k = C._disk_kernel(radius, alias)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        np.testing.assert_allclose(k.sum(), 1, atol=1e-12)
        np.testing.assert_allclose(k, k.T, atol=1e-15)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    assert C._disk_kernel(1.5, 0.1).shape == (5, 5)  # 3x3 disk and the blur's one-pixel rim


def test_motion_blur_is_a_one_sided_line_kernel() -> None:
    k = C._motion_kernel(6, 2)
    assert len(k) == 13 and np.isclose(k.sum(), 1) and (np.diff(k) < 0).all()
    img = np.tile(np.linspace(0, 1, 16)[:, None, None], (1, 16, 3))  # varies along rows only
    np.testing.assert_allclose(C._motion_blur_one(img, 6, 2, angle=0.0), img, atol=1e-12)  # blur along x
    impulse = np.zeros((16, 16, 1))
    impulse[8, 3] = 1
    out = C._motion_blur_one(impulse, 6, 2, angle=0.0)  # out(p) = sum_i k_i x(p + i e_x)
    np.testing.assert_allclose(out[8, 3::-1, 0], k[:4], atol=1e-12)
    assert out[np.arange(16) != 8].sum() == 0


def test_small_images_see_the_cifar_corruption_box_averaged() -> None:
    """A 16x16 image gets the 32x32 corruption of its nearest upsampling, box-averaged back."""
    x16 = _smooth(3, 16, seed=5)
    x32 = x16.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    got = corrupt(x16.double() / 255, "zoom_blur", 4)
    want = torch.nn.functional.avg_pool2d(corrupt(x32.double() / 255, "zoom_blur", 4), 2)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_frost_textures_are_the_packaged_photographs() -> None:
    for i in range(len(C._FROST_FILES)):
        img = C._frost_image(i)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 32


def test_glass_blur_shuffles_as_the_reference_code_does() -> None:
    """The reference's swap line on NumPy views copies rather than swaps; with no blur (sigma 0) ours equals
    that loop run verbatim on the same shift draws."""
    delta, iterations, seed = 1, 2, 3
    img = np.random.default_rng(0).integers(0, 256, size=(12, 12, 3)).astype(np.float64)
    ours = C._glass_blur((img[None] + 0.5) / 255, (0, delta, iterations), [np.random.default_rng(seed)])[0]
    shifts = np.random.default_rng(seed).integers(-delta, delta, size=(iterations, 12 - 2 * delta, 12 - 2 * delta, 2))
    x = img.copy()
    for it in range(iterations):
        for a, h in enumerate(range(12 - delta, delta, -1)):
            for b, w in enumerate(range(12 - delta, delta, -1)):
                dx, dy = shifts[it, a, b]
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    np.testing.assert_allclose(ours * 255, x, atol=1e-9)
    assert sorted(x.ravel()) != sorted(img.ravel())  # not a permutation: pixels were copied
