"""ImageNet20, the paper's NMI dataset (spec §6): 20 ImageNet classes read from a local ImageNet folder.

The paper measures feature quality on 20 ImageNet classes (App. G, the indices below [S]) with 50 images per
class. ImageNet cannot be redistributed, so the reader points the book at their own copy: ``$PAPERLIB_IMAGENET``
(or the ``root`` argument) must hold the standard layout

    <root>/train/<wnid>/*.JPEG      (ILSVRC-2012 training images, one folder per class)
    <root>/val/<wnid>/*.JPEG        (the 50 validation images per class, sorted into class folders)

Only the 20 classes' folders are read (the others may be absent). Images are resized and center-cropped as DiT
and ADM prepare ImageNet (``center_crop_arr``: box-halve while the short side is at least twice the target,
bicubic to the target, center crop), decoded once and cached in the scratch cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGENET20_INDICES: tuple[int, ...] = (15, 95, 146, 151, 211, 242, 281, 294, 385, 404, 407, 409, 440, 444, 499,
                                       544, 579, 717, 765, 814)
"""ImageNet-1k class indices of ImageNet20 (spec §6 [S]); the book's label ``j`` is ImageNet class
``IMAGENET20_INDICES[j]``."""

IMAGENET20_WNIDS: tuple[str, ...] = (
    "n01558993", "n01843065", "n02058221", "n02085620", "n02100583", "n02108089", "n02123045", "n02132136",
    "n02504013", "n02690373", "n02701002", "n02708093", "n02823428", "n02835271", "n03041632", "n03259280",
    "n03452741", "n03930630", "n04099969", "n04273569",
)
"""WordNet ids of the 20 classes (the ILSVRC-2012 folder names), in label order."""

IMAGENET20_CLASSES: tuple[str, ...] = (
    "robin", "jacamar", "albatross", "Chihuahua", "vizsla", "boxer", "tabby", "brown bear", "Indian elephant",
    "airliner", "ambulance", "analog clock", "beer bottle", "bicycle-built-for-two", "cleaver", "Dutch oven",
    "grand piano", "pickup", "rocking chair", "speedboat",
)
"""Short class names (the first WordNet lemma), in label order."""

IMAGENET20_N = 1000
"""Images of each split the chapters use: 50 per class, the paper's NMI set size [S] (App. G)."""

IMAGENET_ENV = "PAPERLIB_IMAGENET"
"""Environment variable naming the ImageNet folder."""

SPLITS = {"train": "train", "test": "val"}
"""The book's split names and the ImageNet folders they read."""

_EXTENSIONS = (".jpeg", ".jpg", ".png")


class ImageNetNotFound(FileNotFoundError):
    """The ImageNet folder, or some of ImageNet20's class folders in it, is missing."""


def imagenet_root(root: str | Path | None = None) -> Path:
    """The ImageNet folder: ``root`` if given, else ``$PAPERLIB_IMAGENET``.

    Raises:
        ImageNetNotFound: If neither is set or the folder does not exist.
    """
    given = root if root is not None else os.environ.get(IMAGENET_ENV)
    if not given:
        raise ImageNetNotFound(f"ImageNet not found: set ${IMAGENET_ENV} to a folder holding train/<wnid>/*.JPEG "
                               f"and val/<wnid>/*.JPEG (ILSVRC-2012), or pass root=")
    path = Path(given).expanduser()
    if not path.is_dir():
        origin = "root=" if root is not None else "$" + IMAGENET_ENV
        raise ImageNetNotFound(f"ImageNet not found: {path} (from {origin}) is not a folder")
    return path


def imagenet20_files(split: str = "train", root: str | Path | None = None) -> tuple[list[Path], Tensor]:
    """The image files of ImageNet20's ``split`` and their labels, sorted by class then file name.

    Args:
        split: ``"train"`` (``<root>/train``) or ``"test"`` (``<root>/val``).
        root: The ImageNet folder (default ``$PAPERLIB_IMAGENET``).

    Returns:
        ``(paths, labels [N] int64)``.

    Raises:
        ValueError: For an unknown split.
        ImageNetNotFound: If the split folder, a class folder, or every image of a class is missing; the
            message names each missing class (wnid and name).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    folder = imagenet_root(root) / SPLITS[split]
    if not folder.is_dir():
        raise ImageNetNotFound(f"ImageNet split folder {folder} is missing (needed: {SPLITS[split]}/<wnid>/*.JPEG)")
    paths: list[Path] = []
    labels: list[int] = []
    missing = []
    for label, (wnid, name) in enumerate(zip(IMAGENET20_WNIDS, IMAGENET20_CLASSES)):
        d = folder / wnid
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in _EXTENSIONS) if d.is_dir() else []
        if not files:
            missing.append(f"{wnid} ({name})")
        paths += files
        labels += [label] * len(files)
    if missing:
        hint = " (val/ must be sorted into class folders, as torchvision's ImageNet does)" if split == "test" else ""
        raise ImageNetNotFound(f"ImageNet20: no images for {len(missing)} of 20 classes in {folder}: "
                               f"{', '.join(missing)}{hint}")
    return paths, torch.tensor(labels, dtype=torch.int64)


def center_crop_arr(image, image_size: int) -> np.ndarray:
    """DiT's / ADM's ImageNet preprocessing of one PIL image: ``[S, S, 3]`` uint8.

    Box-downsample by 2 while the short side is at least ``2 S``, resize (bicubic) so the short side is ``S``,
    then crop the center ``S x S``.
    """
    from PIL import Image

    image = image.convert("RGB")
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def load_imagenet20(split: str = "train", n: int | None = IMAGENET20_N, seed: int = 0, size: int = 256,
                    root: str | Path | None = None, progress: bool = False) -> tuple[Tensor, Tensor]:
    """ImageNet20 images of ``split``, resized and center-cropped to ``size`` (cached after the first call).

    Args:
        split: ``"train"`` or ``"test"`` (the validation images).
        n: Class-stratified, ``seed``-fixed subset of this many images (``None``: all of them).
        seed: Seed of the subset.
        size: Image side.
        root: The ImageNet folder (default ``$PAPERLIB_IMAGENET``).
        progress: tqdm bar over the files decoded.

    Returns:
        ``(images [N, 3, size, size] uint8, labels [N] int64)``, ordered as the files.

    Raises:
        ImageNetNotFound: See :func:`imagenet20_files`.
        ValueError: If ``n`` exceeds the images found, or ``size`` is not a positive integer.
    """
    from PIL import Image
    from tqdm import tqdm

    from paperlib.cache import config_key, load_or_compute
    from paperlib.data import stratified_subset
    from paperlib.validate import check_int

    size = check_int("size", size, 1)
    paths, labels = imagenet20_files(split, root)
    if n is not None:
        n = check_int("n", n, 1)
        if n > len(labels):
            raise ValueError(f"n={n} ImageNet20 {split} images asked for, {len(labels)} found in "
                             f"{paths[0].parent.parent}")
        keep = stratified_subset(labels, n=n, seed=seed).sort().values
        paths, labels = [paths[i] for i in keep.tolist()], labels[keep]
    folder = paths[0].parent.parent
    files = [f"{p.parent.name}/{p.name}:{p.stat().st_size}" for p in paths]
    config = {"folder": str(folder.resolve()), "files": config_key(files), "size": size}

    def compute() -> dict[str, Tensor]:
        arrs = []
        for p in tqdm(paths, desc=f"ImageNet20 {split}", disable=not progress):
            with Image.open(p) as im:
                arrs.append(center_crop_arr(im, size))
        return {"images": torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous(), "labels": labels}

    tensors, _ = load_or_compute("imagenet20", config, compute, verbose=False)
    return tensors["images"], tensors["labels"]


def imagenet20_unavailable(root: str | Path | None = None) -> str | None:
    """Why ImageNet20 cannot be read here (both splits), or ``None`` when it can."""
    try:
        for split in SPLITS:
            imagenet20_files(split, root)
    except ImageNetNotFound as exc:
        return str(exc)
    return None
