import math

import numpy as np
import pytest
import torch

from paperlib.metrics import (
    bootstrap_nmi,
    kmeans_clusters,
    kmeans_nmi,
    knee_point,
    linear_probe_accuracy,
    mean_std,
    paired_interval,
    psnr,
    saturation_point,
    sliced_wasserstein,
)


def test_sliced_wasserstein_properties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b) < 0.05
    # a pure shift by s along a direction averages |s cos(theta)| over directions: 2 s / pi in 2-D
    # (every quantile moves by s cos(theta), so the value does not depend on the number of points: 200 keep it fast)
    shifted = sliced_wasserstein(a[:200], a[:200] + torch.tensor([1.0, 0.0]), n_projections=4096)
    assert shifted == pytest.approx(2 / torch.pi, rel=0.03)
    assert sliced_wasserstein(a, b, generator=3) == sliced_wasserstein(a, b, generator=3)
    with pytest.raises(ValueError, match="same d"):
        sliced_wasserstein(a, torch.zeros(5, 3))


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # sample std, ddof=1
    assert mean_std(torch.tensor([0.5])) == (0.5, 0.0)
    assert mean_std(np.array([2.0, 4.0])) == pytest.approx((3.0, math.sqrt(2)))
    with pytest.raises(ValueError, match="values"):
        mean_std([])


def _blobs(n_per: int = 100, k: int = 4, d: int = 8, spread: float = 20.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), n_per)
    return centers[y] + rng.normal(size=(len(y), d)), y


def test_kmeans_nmi_separated_and_independent():
    x, y = _blobs()
    res = kmeans_nmi(torch.from_numpy(x).float(), torch.from_numpy(y), seeds=(0, 1), n_init=3)
    assert res["values"] == pytest.approx([1.0, 1.0]) and res["mean"] == pytest.approx(1.0)
    assert res["std"] == pytest.approx(0.0, abs=1e-12)
    # label names need not be integers; n_clusters defaults to the 4 distinct labels
    assert kmeans_nmi(x, np.array(list("abcd"))[y], seeds=(0,), n_init=3)["mean"] == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=x.shape)
    res = kmeans_nmi(noise, y, seeds=(0, 1), n_init=3)
    assert 0 <= res["mean"] < 0.05
    # standardising keeps perfectly separated clusters perfect
    assert kmeans_nmi(x, y, seeds=(0,), n_init=3, standardize=True)["mean"] == pytest.approx(1.0)


def test_kmeans_nmi_seeds_and_errors():
    # overlapping clusters, so the result depends on the seed and the check is not trivial
    x, y = _blobs(n_per=60, k=5, d=4, spread=1.0, seed=2)
    r1 = kmeans_nmi(x, y, seeds=(3, 4, 5), n_init=2)
    r2 = kmeans_nmi(x, y, seeds=(3, 4, 5), n_init=2)
    assert r1 == r2 and len(r1["values"]) == 3 and 0 < r1["mean"] < 1
    assert r1["std"] == pytest.approx(np.std(r1["values"], ddof=1))
    one = kmeans_nmi(x, y, seeds=(7,), n_init=2)
    assert one["std"] == 0.0 and one["mean"] == one["values"][0]
    with pytest.raises(ValueError, match="n_clusters must be in"):
        kmeans_nmi(x, y, n_clusters=0)
    with pytest.raises(ValueError, match="labels must be"):
        kmeans_nmi(x, y[:-1])
    with pytest.raises(ValueError, match="features must be"):
        kmeans_nmi(x[:, 0], y)
    with pytest.raises(ValueError, match="seeds"):
        kmeans_nmi(x, y, seeds=())
    with pytest.raises(ValueError, match="n_init must be"):
        kmeans_nmi(x, y, n_init=0)


def test_kmeans_clusters_are_what_kmeans_nmi_scores():
    x, y = _blobs(n_per=60, k=5, d=4, spread=1.0, seed=2)
    c = kmeans_clusters(x, y, seeds=(3, 4), n_init=2)
    assert c.shape == (2, len(y)) and c.dtype == np.int64
    assert kmeans_nmi(x, y, seeds=(3, 4), n_init=2) == kmeans_nmi(x, y, seeds=(3, 4), n_init=2, clusters=c)


def test_bootstrap_nmi_scores_each_draw_like_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _blobs(n_per=40, k=4, d=4, spread=1.0, seed=3)
    c = kmeans_clusters(x, y, seeds=(0, 1, 2), n_init=2)
    boot = bootstrap_nmi(y, c, n_boot=50, seed=7)
    idx = np.random.default_rng(7).integers(0, len(y), size=(50, len(y)))  # the draws it documents
    ref = [normalized_mutual_info_score(y[i], c[b % 3][i]) for b, i in enumerate(idx)]
    np.testing.assert_allclose(boot, ref, atol=1e-12)
    assert boot.std() > 0  # the draws vary the score
    # the same seed gives the same draws for another clustering of the same images: paired replicates
    other = bootstrap_nmi(y, c[::-1], n_boot=50, seed=7)
    ref2 = [normalized_mutual_info_score(y[i], c[::-1][b % 3][i]) for b, i in enumerate(idx)]
    np.testing.assert_allclose(other, ref2, atol=1e-12)
    # degenerate tables as scikit-learn: one label and one cluster is a perfect match, independent ones 0
    assert bootstrap_nmi(np.zeros(6, int), np.zeros((1, 6), int), n_boot=3).tolist() == [1.0, 1.0, 1.0]
    assert bootstrap_nmi(np.array(list("ab" * 50)), np.zeros((1, 100), int), n_boot=5).max() == 0.0
    with pytest.raises(ValueError, match="clusters must be"):
        bootstrap_nmi(y, c[:, :-1])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_nmi(y, c, n_boot=0)


def test_paired_interval():
    a = np.arange(101, dtype=float)
    assert paired_interval(a + 1, a) == (1.0, 1.0)  # a constant difference
    lo, hi = paired_interval(a, np.zeros(101), level=0.9)
    assert (lo, hi) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError, match="paired"):
        paired_interval(a, a[:-1])
    with pytest.raises(ValueError, match="level"):
        paired_interval(a, a, level=1.0)


def test_saturation_point():
    t = np.arange(100, 1000, 100)
    acc = 1 - np.exp(-t / 200)
    # max = acc(900) = 1 - e^-4.5 ≈ 0.98889; threshold ≈ 0.97889;
    # acc(700) = 1 - e^-3.5 ≈ 0.96980 < threshold <= acc(800) = 1 - e^-4 ≈ 0.98168
    assert 1 - math.exp(-3.5) < 1 - math.exp(-4.5) - 0.01 <= 1 - math.exp(-4)
    assert saturation_point(t, acc, delta=0.01) == 800
    assert isinstance(saturation_point(torch.from_numpy(t), torch.from_numpy(acc)), int)
    assert saturation_point(t, acc, delta=0.0) == 900  # exact maximum
    assert saturation_point(t, acc, delta=1.0) == 100
    assert saturation_point(t, np.full(9, 0.7)) == 100  # constant curve: the first t
    # exactly delta below the maximum counts, despite rounding (0.91 - 0.01 != 0.90 in floats)
    assert saturation_point([10, 20, 30], [0.5, 0.90, 0.91], delta=0.01) == 20
    with pytest.raises(ValueError, match="strictly increasing"):
        saturation_point([100, 300, 200], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="strictly increasing"):
        saturation_point([100, 100, 200], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        saturation_point(t, acc[:-1])
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\]"):
        saturation_point(t, acc, delta=-0.01)
    with pytest.raises(ValueError, match=r"acc must be in \[0, 1\]"):
        saturation_point(t, acc * 100)  # percentages instead of fractions


def test_knee_point():
    x = np.arange(1, 11)
    kink = np.minimum(x, 4) * 1.0
    assert knee_point(x, kink) == 4.0
    assert knee_point(torch.from_numpy(x), torch.from_numpy(-kink), curve="convex", direction="decreasing") == 4.0
    # kneed 0.9.0 finds no knee on a straight line (its difference curve is identically 0) ...
    assert knee_point(x, 2.0 * x + 1.0) is None
    # ... nor on a constant curve (handled before kneed divides by zero)
    assert knee_point(x, np.full(10, 3.0)) is None
    with pytest.raises(ValueError, match="curve must be one of"):
        knee_point(x, kink, curve="sigmoid")
    with pytest.raises(ValueError, match="direction must be one of"):
        knee_point(x, kink, direction="up")
    with pytest.raises(ValueError, match="same length"):
        knee_point(x, kink[:-1])
    with pytest.raises(ValueError, match="strictly increasing"):
        knee_point(x[::-1], kink)


def test_psnr():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    assert torch.isinf(psnr(a, a)).all() and psnr(a, a).shape == (3,)
    # constant offset c: MSE = c^2, PSNR = 10 log10(range^2 / c^2) = 20 log10(range / c)
    offsets = torch.tensor([0.1, 0.2, 0.5]).view(3, 1, 1, 1)
    out = psnr(a, a + offsets)
    expected = [20 * math.log10(2.0 / c) for c in (0.1, 0.2, 0.5)]
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx(expected, rel=1e-5)
    assert psnr(a, a + 0.1, data_range=1.0).tolist() == pytest.approx([20.0] * 3, rel=1e-5)
    assert psnr(torch.zeros(2, 4, dtype=torch.uint8), torch.full((2, 4), 255, dtype=torch.uint8),
                data_range=255.0).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:2])
    with pytest.raises(ValueError, match="data_range must be"):
        psnr(a, a, data_range=0.0)


def test_linear_probe_accuracy():
    rng = np.random.default_rng(0)
    n, d = 400, 10
    y = rng.integers(0, 2, size=2 * n)
    w = rng.normal(size=d)
    x = rng.normal(size=(2 * n, d))
    x += (2 * y - 1)[:, None] * 3.0 * w / np.linalg.norm(w)  # separated by a margin of 6 along w
    assert linear_probe_accuracy(torch.from_numpy(x), torch.from_numpy(y), x[n:], y[n:]) == 1.0
    acc = linear_probe_accuracy(x[:n], y[:n], x[n:], y[n:])
    assert acc >= 0.99
    # labels independent of the features: chance (1/4) on a large test set
    xr = rng.normal(size=(3000, d))
    yr = rng.integers(0, 4, size=3000)
    chance = linear_probe_accuracy(xr[:1000], yr[:1000], xr[1000:], yr[1000:], C=0.1)
    assert abs(chance - 0.25) < 0.05
    with pytest.raises(ValueError, match="test_x must be"):
        linear_probe_accuracy(x[:n], y[:n], x[n:, :3], y[n:])
    with pytest.raises(ValueError, match="train_y must be"):
        linear_probe_accuracy(x[:n], y[: n - 1], x[n:], y[n:])
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe_accuracy(x[:n], np.zeros(n), x[n:], y[n:])
    with pytest.raises(ValueError, match=r"C must be in \(0, inf\)"):
        linear_probe_accuracy(x[:n], y[:n], x[n:], y[n:], C=0.0)


def test_distances_reject_non_finite_and_empty_sets():
    a = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    bad = a.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="a and b must be finite"):
        sliced_wasserstein(a, bad)
    with pytest.raises(ValueError, match=r"at least one point .*got \(0, 3\), \(10, 3\)"):
        sliced_wasserstein(a[:0], a)
    with pytest.raises(ValueError, match="a and b must be finite"):
        psnr(bad, a)


def test_ssim_identity_reference_and_monotone():
    from skimage.metrics import structural_similarity

    from paperlib.metrics import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    noisy = [(a.float() + s * torch.randn(a.shape, generator=g)).clamp(0, 255) for s in (5, 20, 60)]
    vals = [ssim(n, a.float()).mean().item() for n in noisy]
    assert vals[0] > vals[1] > vals[2]
    want = structural_similarity(noisy[1][0].double().numpy(), a[0].double().numpy(), data_range=255,
                                 channel_axis=0, win_size=7)
    assert abs(ssim(noisy[1][:1], a[:1].float()).item() - want) < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, a[:2])
def test_two_standard_errors_of_a_difference():
    from paperlib.metrics import two_standard_errors

    assert two_standard_errors(3.0, 4.0) == pytest.approx(10.0)
    assert two_standard_errors(0.0, 0.5) == pytest.approx(1.0)
