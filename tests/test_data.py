"""Tests of paperlib.data: the shapes dataset, the Backgrounds Challenge, subsets and the CIFAR-10 loader."""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paperlib import data as D

N_CLS = len(D.SHAPES_CLASSES)


@pytest.fixture(scope="module")
def shapes() -> D.ShapesData:
    return D.make_shapes(2000, seed=7)


@pytest.fixture(scope="module")
def challenge(shapes: D.ShapesData) -> dict[str, D.ShapesData]:
    return D.backgrounds_challenge(shapes, seed=3)


# --------------------------------------------------------------------------------------------------- shapes


def test_constants() -> None:
    assert len(D.SHAPES_CLASSES) == len(set(D.SHAPES_CLASSES)) == 10
    assert len(D.SHAPES_BACKGROUNDS) == len(set(D.SHAPES_BACKGROUNDS)) == 10
    assert (
        D.CIFAR10_CLASSES[0] == "airplane"
        and D.CIFAR10_CLASSES[-1] == "truck"
        and len(D.CIFAR10_CLASSES) == 10
    )


def test_shapes_types_and_shapes(shapes: D.ShapesData) -> None:
    n = len(shapes)
    assert shapes.images.shape == (n, 3, 32, 32) and shapes.images.dtype == torch.uint8
    assert shapes.backgrounds.shape == (n, 3, 32, 32) and shapes.backgrounds.dtype == torch.uint8
    assert shapes.labels.shape == (n,) and shapes.labels.dtype == torch.int64
    assert shapes.masks.shape == (n, 32, 32) and shapes.masks.dtype == torch.bool
    f = shapes.factors
    assert torch.equal(f["shape"], shapes.labels)
    assert f["fg_color"].shape == (n, 3) and f["fg_color"].dtype == torch.float32
    for key in ("scale", "pos_x", "pos_y", "rotation", "bg_family", "bg_phase", "bg_freq", "bg_donor"):
        assert f[key].shape == (n,), key
    assert f["bg_family"].dtype == torch.int64
    assert f["bg_family"].min() >= 0 and f["bg_family"].max() < 10
    assert (f["scale"] >= D.SCALE_RANGE[0]).all() and (f["scale"] <= D.SCALE_RANGE[1]).all()
    assert f["rotation"].abs().max() <= D.MAX_ROTATION + 1e-6


def test_shapes_size_16() -> None:
    d = D.make_shapes(200, seed=1, size=16)
    assert d.images.shape == (200, 3, 16, 16) and d.masks.shape == (200, 16, 16)
    assert (d.masks.sum((1, 2)) >= 8).all()


def test_shapes_deterministic() -> None:
    a, b, c = D.make_shapes(300, seed=5), D.make_shapes(300, seed=5), D.make_shapes(300, seed=6)
    for x, y in [
        (a.images, b.images),
        (a.masks, b.masks),
        (a.backgrounds, b.backgrounds),
        (a.labels, b.labels),
    ]:
        assert torch.equal(x, y)
    assert all(torch.equal(a.factors[k], b.factors[k]) for k in a.factors)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.labels, c.labels)


def test_shapes_generator_seed() -> None:
    a = D.make_shapes(50, np.random.default_rng(11))
    b = D.make_shapes(50, np.random.default_rng(11))
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("n", [100, 105, 7])
def test_shapes_class_balance(n: int) -> None:
    counts = torch.bincount(D.make_shapes(n, seed=0).labels, minlength=N_CLS)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_shapes_order_is_shuffled(shapes: D.ShapesData) -> None:
    assert not torch.equal(shapes.labels, torch.arange(len(shapes)) % N_CLS)


def test_bg_correlation(shapes: D.ShapesData) -> None:
    own = (shapes.factors["bg_family"] == shapes.labels).float().mean().item()
    assert abs(own - (0.9 + 0.1 / N_CLS)) < 0.03  # the 10% random families may hit the own one
    full = D.make_shapes(500, seed=2, bg_correlation=1.0)
    assert torch.equal(full.factors["bg_family"], full.labels)
    none = D.make_shapes(2000, seed=2, bg_correlation=0.0)
    assert abs((none.factors["bg_family"] == none.labels).float().mean().item() - 0.1) < 0.03


def test_masks_exact(shapes: D.ShapesData) -> None:
    fg = (shapes.factors["fg_color"] * 255).round().to(torch.uint8)[:, :, None, None]
    expected = torch.where(shapes.masks[:, None], fg.expand_as(shapes.images), shapes.backgrounds)
    assert torch.equal(shapes.images, expected)


def test_masks_nonempty_and_inside(shapes: D.ShapesData) -> None:
    area = shapes.masks.sum((1, 2))
    assert (area >= 30).all()
    assert (area <= 0.6 * 32 * 32).all()
    for cls in range(N_CLS):
        assert shapes.masks[shapes.labels == cls].any(), D.SHAPES_CLASSES[cls]


def test_foreground_contrast(shapes: D.ShapesData) -> None:
    fg = shapes.factors["fg_color"][:, :, None, None]
    dist = (shapes.backgrounds.float() / 255 - fg).norm(dim=1)  # [N, H, W]
    assert dist.amin((1, 2)).min() >= D.MIN_FG_CONTRAST - 0.01


def test_backgrounds_differ_between_families() -> None:
    d = D.make_shapes(1000, seed=4, bg_correlation=0.0)
    means = torch.stack(
        [d.backgrounds[d.factors["bg_family"] == f].float().mean((0, 2, 3)) for f in range(10)]
    )
    dist = torch.cdist(means, means) + torch.eye(10) * 1e3
    assert dist.min() > 15  # mean colours alone separate the families (hue is part of the family)


def test_shape_templates_distinguishable() -> None:
    templates = torch.stack([D.shape_template(c, size=32) for c in range(N_CLS)]).float()
    area = templates.sum((1, 2))
    assert (area > 50).all()
    inter = torch.einsum("ahw,bhw->ab", templates, templates)
    iou = inter / (area[:, None] + area[None] - inter)
    off = iou[~torch.eye(N_CLS, dtype=torch.bool)]
    assert off.max() < 0.8  # circle/square and circle/heart are the closest pairs (~0.77)
    assert (area[:, None] + area[None] - 2 * inter)[~torch.eye(N_CLS, dtype=torch.bool)].min() >= 40


def test_shapes_splits() -> None:
    train, test = D.shapes_splits(0, n_train=50, n_test=30, size=16)
    assert len(train) == 50 and len(test) == 30 and train.size == 16
    train2, _ = D.shapes_splits(0, n_train=50, n_test=30, size=16)
    assert torch.equal(train.images, train2.images)
    assert not torch.equal(train.images[:30], test.images)


def test_subset(shapes: D.ShapesData) -> None:
    sub = shapes.subset([3, 1])
    assert len(sub) == 2 and torch.equal(sub.images[0], shapes.images[3])
    assert torch.equal(sub.factors["fg_color"][1], shapes.factors["fg_color"][1])


def test_model_range_roundtrip(shapes: D.ShapesData) -> None:
    x = D.to_model_range(shapes.images[:10])
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(D.from_model_range(x), shapes.images[:10])
    assert torch.equal(
        D.from_model_range(torch.full((1, 3, 2, 2), 5.0)), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    )


# ------------------------------------------------------------------------------------ backgrounds challenge


def test_challenge_keys_and_original(shapes: D.ShapesData, challenge: dict[str, D.ShapesData]) -> None:
    assert set(challenge) == {"original", "only_fg", "mixed_same", "mixed_rand", "mixed_next"}
    assert torch.equal(challenge["original"].images, shapes.images)
    for split in challenge.values():
        assert torch.equal(split.labels, shapes.labels) and torch.equal(split.masks, shapes.masks)


@pytest.mark.parametrize("key", ["mixed_same", "mixed_rand", "mixed_next"])
def test_challenge_mixed_exact(shapes: D.ShapesData, challenge: dict[str, D.ShapesData], key: str) -> None:
    split = challenge[key]
    donor = split.factors["bg_donor"]
    inside = shapes.masks[:, None].expand_as(shapes.images)
    assert torch.equal(split.images[inside], shapes.images[inside])
    assert torch.equal(split.images[~inside], shapes.backgrounds[donor][~inside])
    assert torch.equal(split.backgrounds, shapes.backgrounds[donor])
    assert torch.equal(split.factors["bg_family"], shapes.factors["bg_family"][donor])
    assert torch.equal(split.factors["fg_color"], shapes.factors["fg_color"])


def test_challenge_mixed_same_donors(shapes: D.ShapesData, challenge: dict[str, D.ShapesData]) -> None:
    donor = challenge["mixed_same"].factors["bg_donor"]
    assert torch.equal(shapes.labels[donor], shapes.labels)
    assert (donor != torch.arange(len(shapes))).all()


def test_challenge_mixed_rand_donors(shapes: D.ShapesData, challenge: dict[str, D.ShapesData]) -> None:
    donor = challenge["mixed_rand"].factors["bg_donor"]
    donor_cls = shapes.labels[donor]
    assert (donor_cls == shapes.labels).float().mean() < 0.2
    for cls in range(N_CLS):  # every class's images get backgrounds from many classes
        assert len(torch.unique(donor_cls[shapes.labels == cls])) >= 8
    own = (challenge["mixed_rand"].factors["bg_family"] == shapes.labels).float().mean()
    assert own < 0.25  # the shortcut is broken


def test_challenge_mixed_next_donors(shapes: D.ShapesData, challenge: dict[str, D.ShapesData]) -> None:
    donor = challenge["mixed_next"].factors["bg_donor"]
    assert torch.equal(shapes.labels[donor], (shapes.labels + 1) % N_CLS)
    assert len(torch.unique(donor)) > len(shapes) // 4  # random members, not one donor per class


def test_challenge_mixed_next_keeps_the_other_splits(shapes: D.ShapesData) -> None:
    """Mixed-Next is drawn last: the other splits equal a replay of the draws made before it existed."""
    small = shapes.subset(torch.arange(300))
    got = D.backgrounds_challenge(small, seed=5)
    rng = np.random.default_rng(5)
    labels = small.labels.numpy()
    same = np.arange(len(labels))
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) > 1:
            same[members] = members[(np.arange(len(members)) + rng.integers(1, len(members), len(members)))
                                    % len(members)]
    assert torch.equal(got["mixed_same"].factors["bg_donor"], torch.from_numpy(same))


def test_challenge_mixed_rand_from_other_classes(shapes: D.ShapesData) -> None:
    """The paper's wording: Mixed-Rand donors never share the image's class; every other class occurs."""
    got = D.backgrounds_challenge(shapes, seed=4, rand_from_other_class=True)
    donor_cls = shapes.labels[got["mixed_rand"].factors["bg_donor"]]
    assert (donor_cls != shapes.labels).all()
    assert len(torch.unique(donor_cls[shapes.labels == 0])) == N_CLS - 1
    default = D.backgrounds_challenge(shapes, seed=4)["mixed_rand"].factors["bg_donor"]
    assert (shapes.labels[default] == shapes.labels).any()  # Xiao et al.'s draw keeps the own class


def test_challenge_only_fg(shapes: D.ShapesData, challenge: dict[str, D.ShapesData]) -> None:
    split = challenge["only_fg"]
    inside = shapes.masks[:, None].expand_as(shapes.images)
    assert (split.images[~inside] == 0).all()
    assert torch.equal(split.images[inside], shapes.images[inside])
    assert (split.factors["bg_family"] == -1).all() and (split.factors["bg_donor"] == -1).all()


def test_challenge_deterministic(shapes: D.ShapesData) -> None:
    small = shapes.subset(torch.arange(200))
    a, b = D.backgrounds_challenge(small, seed=1), D.backgrounds_challenge(small, seed=1)
    c = D.backgrounds_challenge(small, seed=2)
    assert torch.equal(a["mixed_rand"].images, b["mixed_rand"].images)
    assert not torch.equal(a["mixed_rand"].factors["bg_donor"], c["mixed_rand"].factors["bg_donor"])


def test_foreground_box_and_background_only(shapes: D.ShapesData) -> None:
    masks = shapes.masks[:200]
    box = D.foreground_box_mask(masks, margin=2)
    assert box.shape == masks.shape and box.dtype == torch.bool
    assert (box | ~masks).all()  # contains the mask
    tight = D.foreground_box_mask(masks, margin=0)
    rows, cols = masks.any(2), masks.any(1)
    assert torch.equal(tight, rows[:, :, None] & cols[:, None, :])
    assert (box.sum((1, 2)) >= tight.sum((1, 2))).all()
    assert not D.foreground_box_mask(torch.zeros(1, 8, 8, dtype=torch.bool)).any()
    edge = torch.zeros(1, 8, 8, dtype=torch.bool)
    edge[0, 0, 0] = True
    assert D.foreground_box_mask(edge, margin=2)[0].sum() == 9  # clipped at the border

    images = shapes.images[:200]
    grey = D.background_only(images, masks, margin=2, fill=128)
    b = box[:, None].expand_as(images)
    assert (grey[b] == 128).all() and torch.equal(grey[~b], images[~b])
    assert grey.data_ptr() != images.data_ptr()


# --------------------------------------------------------------------------------------- stratified subsets


def test_stratified_subset_counts() -> None:
    labels = torch.arange(1000) % 10
    idx = D.stratified_subset(labels, fraction=0.1, seed=0)
    assert idx.dtype == torch.int64 and len(idx) == 100
    assert torch.equal(idx, idx.sort().values) and len(torch.unique(idx)) == 100
    assert (torch.bincount(labels[idx], minlength=10) == 10).all()
    counts = torch.bincount(labels[D.stratified_subset(labels, n=25, seed=0)], minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1


def test_stratified_subset_scarce_class() -> None:
    labels = torch.tensor([0] * 2 + [1] * 50 + [2] * 50)
    counts = torch.bincount(labels[D.stratified_subset(labels, n=30, seed=1)])
    assert counts.tolist() == [2, 14, 14]


def test_stratified_subset_deterministic() -> None:
    labels = torch.arange(500) % 10
    a = D.stratified_subset(labels, fraction=0.2, seed=3)
    assert torch.equal(a, D.stratified_subset(labels, fraction=0.2, seed=3))
    assert not torch.equal(a, D.stratified_subset(labels, fraction=0.2, seed=4))


# ----------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: D.make_shapes(0, seed=0), "n"),
        (lambda: D.make_shapes(10, seed=-1), "seed"),
        (lambda: D.make_shapes(10, seed=0, size=4), "size"),
        (lambda: D.make_shapes(10, seed=0, bg_correlation=1.5), "bg_correlation"),
        (lambda: D.shapes_splits(-3, 10, 10), "seed"),
        (lambda: D.shape_template(10), "shape"),
        (lambda: D.backgrounds_challenge("nope", seed=0), "data"),  # type: ignore[arg-type]
        (lambda: D.foreground_box_mask(torch.zeros(2, 4, 4)), "masks"),
        (lambda: D.foreground_box_mask(torch.zeros(2, 4, 4, dtype=torch.bool), margin=-1), "margin"),
        (
            lambda: D.background_only(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool)),
            "images",
        ),
        (
            lambda: D.background_only(
                torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 4, 4, dtype=torch.bool), fill=300
            ),
            "fill",
        ),
        (lambda: D.to_model_range(torch.zeros(1, 3, 4, 4)), "images"),
        (lambda: D.from_model_range(torch.zeros(1, 3, 4, 4, dtype=torch.uint8)), "x"),
        (lambda: D.stratified_subset(torch.arange(10)), "fraction"),
        (lambda: D.stratified_subset(torch.arange(10), fraction=0.5, n=3), "fraction"),
        (lambda: D.stratified_subset(torch.arange(10), fraction=1.5), "fraction"),
        (lambda: D.stratified_subset(torch.arange(10), n=11), "n"),
        (lambda: D.stratified_subset(torch.rand(10), n=3), "labels"),
        (lambda: D.load_cifar10("val"), "split"),
        (lambda: D.load_cifar10(source="/definitely/not/here"), "source"),
    ],
)
def test_bad_inputs(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


# ------------------------------------------------------------------------------------------------- CIFAR-10


def _colour(cls: int, i: int) -> tuple[int, int, int]:
    return (20 * cls + 10, 40 + 50 * i, 200 - 15 * cls)


def _fake_archive(path: Path, per_split: dict[str, int]) -> None:
    """A tiny archive in the real layout: flat-coloured 32x32 JPEGs, listed in reverse to test the sorting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for split, count in per_split.items():
            for cls, name in reversed(list(enumerate(D.CIFAR10_CLASSES))):
                for i in reversed(range(count)):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), _colour(cls, i)).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


def _write_sums(archive: Path, digest: str | None = None) -> None:
    digest = digest or hashlib.sha256(archive.read_bytes()).hexdigest()
    (archive.parent / "SHA256SUMS").write_text(f"{digest}  {archive.name}\n")


@pytest.fixture()
def cifar_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated shared/cache dirs, no $PAPERLIB_DATA, and a torchvision path that must not be reached."""
    monkeypatch.setenv("PAPERLIB_SHARED", str(tmp_path / "shared"))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PAPERLIB_DATA", raising=False)

    def no_network(root: Path, train: bool, download: bool) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(D, "_torchvision_cifar10", no_network)
    return tmp_path


def _check_fake(x: torch.Tensor, y: torch.Tensor, count: int) -> None:
    assert x.shape == (10 * count, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and torch.equal(y, torch.arange(10).repeat_interleave(count))
    expected = torch.tensor([_colour(c, i) for c, i in itertools.product(range(10), range(count))])
    assert (x.float().mean((2, 3)) - expected).abs().max() < 4  # JPEG is lossy


def test_cifar_shared_archive_and_cache(cifar_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = cifar_env / "shared" / "data" / D.CIFAR10_ARCHIVE
    _fake_archive(archive, {"train": 2, "test": 1})
    _write_sums(archive)
    caplog.set_level("INFO", logger="paperlib.data")
    x, y = D.load_cifar10("train")
    _check_fake(x, y, 2)
    assert "found cached" not in caplog.text
    caches = list((cifar_env / "cache" / "cifar10").glob("*.npz"))
    assert len(caches) == 1
    caplog.clear()
    x2, y2 = D.load_cifar10("train")
    assert "found cached" in caplog.text
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xt, yt = D.load_cifar10("test")
    _check_fake(xt, yt, 1)
    assert len(list((cifar_env / "cache" / "cifar10").glob("*.npz"))) == 1


def test_cifar_checksum_mismatch(cifar_env: Path) -> None:
    archive = cifar_env / "shared" / "data" / D.CIFAR10_ARCHIVE
    _fake_archive(archive, {"train": 1, "test": 1})
    _write_sums(archive, digest="0" * 64)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        D.load_cifar10("train")
    (archive.parent / "SHA256SUMS").unlink()
    with pytest.raises(RuntimeError, match="SHA256SUMS"):
        D.load_cifar10("train")


def test_cifar_env_archive(cifar_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = cifar_env / "elsewhere" / D.CIFAR10_ARCHIVE
    _fake_archive(archive, {"train": 1, "test": 3})
    monkeypatch.setenv("PAPERLIB_DATA", str(archive.parent))  # a folder holding the archive
    _check_fake(*D.load_cifar10("test"), 3)
    monkeypatch.setenv("PAPERLIB_DATA", str(archive))  # the archive itself
    _check_fake(*D.load_cifar10("train"), 1)
    _check_fake(*D.load_cifar10("test", source=str(archive)), 3)
    monkeypatch.setenv("PAPERLIB_DATA", str(cifar_env / "empty"))
    (cifar_env / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="PAPERLIB_DATA"):
        D.load_cifar10("train")


def test_cifar_env_torchvision_root(cifar_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cifar_env / "tv"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    calls = []

    class FakeCIFAR:
        def __init__(self) -> None:
            self.data = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (3, 1, 2, 0)])
            self.targets = [1, 0, 1, 0]

    def fake(r: Path, train: bool, download: bool) -> FakeCIFAR:
        calls.append((Path(r), train, download))
        return FakeCIFAR()

    monkeypatch.setattr(D, "_torchvision_cifar10", fake)
    monkeypatch.setenv("PAPERLIB_DATA", str(root))
    x, y = D.load_cifar10("test")
    assert calls == [(root, False, False)]
    assert y.tolist() == [0, 0, 1, 1] and x[:, 0, 0, 0].tolist() == [1, 0, 3, 2]  # stable sort by class


def test_cifar_none_available(cifar_env: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        D.load_cifar10("train")
    msg = str(info.value)
    assert "PAPERLIB_DATA" in msg and "SHA256SUMS" in msg and str(cifar_env / "shared" / "data") in msg
    assert "torchvision" in msg and "network disabled in tests" in msg


# ------------------------------------------------------------------------------------------------ real data

REAL_ARCHIVE = Path("/work/shared/data") / D.CIFAR10_ARCHIVE


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason="the shared CIFAR-10 archive is not available")
def test_cifar_real_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLIB_SHARED", str(REAL_ARCHIVE.parent.parent))
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("PAPERLIB_DATA", raising=False)
    for split, n in (("train", 50_000), ("test", 10_000)):
        x, y = D.load_cifar10(split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert (torch.bincount(y, minlength=10) == n // 10).all()
        assert torch.equal(y, y.sort().values)
        assert 80 < x.float().mean() < 160


def test_from_model_range_rejects_non_finite() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN/inf"):  # NaN used to become level 0
        D.from_model_range(x)


def test_cifar_truncated_archive_names_the_path(cifar_env: Path) -> None:
    """A truncated archive without SHA256SUMS beside it (nothing to verify against) fails with its path."""
    archive = cifar_env / "elsewhere" / D.CIFAR10_ARCHIVE
    _fake_archive(archive, {"train": 2, "test": 1})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=re.escape(f"cannot read {archive}: the archive is truncated or corrupt")
                       + r" \(EOFError.*Download it again.*PAPERLIB_DATA"):
        D.load_cifar10("train", source=str(archive))
    archive.write_bytes(b"not a gzip file at all")
    with pytest.raises(RuntimeError, match="truncated or corrupt"):
        D.load_cifar10("train", source=str(archive))


def test_a_partial_cifar10_is_refused(monkeypatch):
    import paperlib.data as data

    images = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    monkeypatch.setattr(data, "load_cifar10", lambda split: (images, torch.arange(200) % 10))
    cfg = data.DatasetConfig("cifar10", size=32, n_train=50_000, n_test=10_000)
    with pytest.raises(ValueError, match=r"has 200 images, but the config asks for n_train=50000"):
        data.load_dataset(cfg, "train")
    small = data.DatasetConfig("cifar10", size=32, n_train=100, n_test=10)
    assert data.load_dataset(small, "train")[0].shape == (100, 3, 32, 32)
