"""ImageNet20 from a tiny fake ImageNet folder made in tmp_path: class ids, files, preprocessing, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from paperlib.data import DATASETS, DatasetConfig, dataset_unavailable, load_dataset
from paperlib.imagenet import (
    IMAGENET20_CLASSES,
    IMAGENET20_INDICES,
    IMAGENET20_WNIDS,
    ImageNetNotFound,
    center_crop_arr,
    imagenet20_files,
    load_imagenet20,
)


def test_the_papers_twenty_classes_are_imagenets():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    assert len(IMAGENET20_INDICES) == len(set(IMAGENET20_INDICES)) == 20
    assert IMAGENET20_INDICES[:3] == (15, 95, 146) and IMAGENET20_INDICES[-1] == 814  # spec §6
    assert [info.index_to_label_name(i) for i in IMAGENET20_INDICES] == list(IMAGENET20_WNIDS)
    assert [info.index_to_description(i).split(",")[0] for i in IMAGENET20_INDICES] == list(IMAGENET20_CLASSES)
    assert "imagenet20" in DATASETS and DatasetConfig("imagenet20", size=256).classes == IMAGENET20_CLASSES


def test_center_crop_is_dits_preprocessing():
    arr = np.zeros((300, 1200, 3), np.uint8)
    arr[:, 450:750] = 255  # a white band in the middle third
    out = center_crop_arr(Image.fromarray(arr), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # 1200x300 -> box-halved to 600x150 (150 < 128*2 would stop at 128; here 150 >= 128 is not >= 2*64=128? no:
    # halving runs while min side >= 2*64), then bicubic to 256x64 and the center 64 columns are all white
    assert out[:, 8:56].min() > 250 and out.mean() > 240
    tall = center_crop_arr(Image.fromarray(np.full((90, 30, 3), 7, np.uint8)), 16)
    assert tall.shape == (16, 16, 3) and (np.abs(tall.astype(int) - 7) <= 1).all()


def test_load_train_and_val_from_a_fake_folder(fake_imagenet, monkeypatch):
    root = fake_imagenet(per_class=3, val_per_class=2)
    paths, labels = imagenet20_files("train", root)
    assert len(paths) == 60 and labels.tolist() == sorted(labels.tolist()) and paths[0].parent.name == "n01558993"
    images, labels = load_imagenet20("train", n=None, size=16, root=root)
    assert images.shape == (60, 3, 16, 16) and images.dtype == torch.uint8 and torch.equal(labels.bincount(),
                                                                                             torch.full((20,), 3))
    # each fake image is filled with its class's grey level 12 * label (grayscale JPEGs become RGB)
    assert (images.float().mean((1, 2, 3)) - 12 * labels).abs().max() < 4
    sub, sub_labels = load_imagenet20("train", n=20, seed=1, size=16, root=root)
    assert torch.equal(sub_labels, torch.arange(20))
    again, _ = load_imagenet20("train", n=20, seed=1, size=16, root=root)  # from the cache now
    assert torch.equal(sub, again)
    monkeypatch.setenv("PAPERLIB_IMAGENET", str(root))
    val, val_labels = load_dataset(DatasetConfig("imagenet20", size=16, n_train=20, n_test=40), "test")
    assert val.shape == (40, 3, 16, 16) and torch.equal(val_labels.bincount(), torch.full((20,), 2))
    assert dataset_unavailable("imagenet20") is None
    with pytest.raises(ValueError, match="n=41 ImageNet20 test images asked for, 40 found"):
        load_imagenet20("test", n=41, size=16)


def test_clear_errors_naming_what_is_missing(fake_imagenet, monkeypatch, tmp_path):
    monkeypatch.delenv("PAPERLIB_IMAGENET", raising=False)
    with pytest.raises(ImageNetNotFound, match=r"set \$PAPERLIB_IMAGENET"):
        load_imagenet20()
    assert "PAPERLIB_IMAGENET" in dataset_unavailable("imagenet20")
    with pytest.raises(ImageNetNotFound, match="is not a folder"):
        imagenet20_files("train", tmp_path / "nowhere")
    partial = fake_imagenet("partial", classes=IMAGENET20_WNIDS[:18])
    with pytest.raises(ImageNetNotFound, match=r"2 of 20 classes .*n04099969 \(rocking chair\), n04273569 "
                                               r"\(speedboat\)"):
        imagenet20_files("train", partial)
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    (flat / "val").mkdir()
    with pytest.raises(ImageNetNotFound, match="sorted into class folders"):
        imagenet20_files("test", flat)
    monkeypatch.setenv("PAPERLIB_IMAGENET", str(partial))
    assert "speedboat" in dataset_unavailable("imagenet20")
    with pytest.raises(ValueError, match="split must be one of"):
        imagenet20_files("val", partial)
