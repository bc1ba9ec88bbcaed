"""Small image classifiers of three families, trained from scratch, for the ``t*`` choice and sample accuracy.

Paper §3.2.1 / App. H.1: ``t*`` is chosen by two-stage sampling, scoring the generated images by the top-1
accuracy of an *ensemble of three classifiers of different families* (ViT, Swin-V2 and ConvNeXt-V2 from timm,
pretrained on ImageNet), averaged over the three. The same classifiers report the accuracy of the
class-conditional samples of the diffusion model.

Our stand-ins ([O]; no pretrained weights exist for our datasets): three timm families small enough to train on
a 2-core CPU in minutes, on the 16x16 shapes and the 32x32 CIFAR-10 images:

- ``"resnet"``: timm ``ResNet``, BasicBlock, one block per stage, widths 16-32-64-128, the 3-conv deep stem
  without its max-pool, avg-pool shortcuts (a narrow ``resnet10t``);
- ``"convnext"``: timm ``ConvNeXt`` with GRN and no layer scale (ConvNeXt-V2 blocks), depths 1-1-2-1,
  widths 16-32-64-128, a patchify stem;
- ``"vit"``: timm ``VisionTransformer``, width 64, depth 4, 2 heads, MLP ratio 2, no class token, mean-pooled
  tokens, on an 8x8 grid of tokens from a small convolutional stem (timm ``HybridEmbed``: two 3x3 conv-BN-ReLU,
  the ViT-C of Xiao et al. 2021, "Early convolutions help transformers see better"). The plain patchify ViT
  (2x2 patches at 16 px) learned nothing but the background shortcut of the shapes in our CPU budget
  (shape-only accuracy at chance after 15 epochs), the conv stem learns the shapes.

All three work at a 16x16 resolution after the stem: at 32 px the stem has stride 2 (ResNet stem stride,
ConvNeXt 2x2 patches, ViT first stem conv), at 16 px stride 1, so a CIFAR classifier costs about what a shapes
classifier does per image.

Conventions: images are ``torch.uint8`` ``[N, 3, H, W]`` and labels ``torch.int64`` ``[N]`` (as in
:mod:`paperlib.data`); a classifier (:class:`Classifier`) takes float images in ``[0, 1]``
(``images.float() / 255``) and normalises them itself, so attacks working in ``[0, 1]`` (torchattacks) can use
it directly; bad arguments raise ``ValueError`` naming the parameter and its allowed values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import HybridEmbed
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn
from tqdm import tqdm

from paperlib.data import DatasetConfig, fingerprint, load_dataset

__all__ = [
    "CLASSIFIER_ARCHS",
    "IMAGE_SIZES",
    "RECOMMENDED_EPOCHS",
    "Classifier",
    "ClassifierConfig",
    "accuracy",
    "ensemble_accuracy",
    "load_or_train_classifier",
    "make_classifier",
    "predict",
    "random_crop_flip",
    "train_classifier",
]

CLASSIFIER_ARCHS: tuple[str, ...] = ("resnet", "convnext", "vit")
"""The three families of the ensemble (stand-ins for the paper's ViT, Swin-V2 and ConvNeXt-V2)."""

IMAGE_SIZES: tuple[int, ...] = (16, 32)
"""Image sides the classifiers are built for (shapes at 16 px, CIFAR-10 at 32 px)."""

STAGE = "classifier"
"""Cache stage of the trained classifiers."""

CACHE_VERSION = 2
"""Bump when a change of this module changes the trained weights (2: the ViT got its conv stem)."""

RECOMMENDED_EPOCHS: dict[str, dict[str, int]] = {
    "shapes": {"resnet": 30, "convnext": 20, "vit": 15},  # 10k images of 16 px: ~3-4.5 CPU-minutes each
    "cifar10": {"resnet": 20, "convnext": 12, "vit": 8},  # 50k images of 32 px: ~11-15 CPU-minutes each
}
"""Epochs per dataset and family within our CPU budget, from measured step times (batch 128, one thread, one
dedicated core; about twice the wall time when the cores are shared with other jobs)."""

_WIDTHS = (16, 32, 64, 128)  # ResNet and ConvNeXt stage widths
_CONVNEXT_DEPTHS = (1, 1, 2, 1)
_VIT = {"embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0}
_VIT_STEM = (32, 64)  # conv stem widths


def _check_arch_size(arch: str, image_size: int) -> None:
    if arch not in CLASSIFIER_ARCHS:
        raise ValueError(f"arch must be one of {CLASSIFIER_ARCHS}, got {arch!r}")
    if isinstance(image_size, bool) or image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")


def _check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        desc = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a torch.uint8 tensor of shape [N, 3, H, W], got {desc}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(images.shape)}")


def _check_labels(labels: Tensor, n: int, num_classes: int | None = None) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
        desc = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a torch.int64 tensor of shape [{n}], got {desc}")
    if num_classes is not None and ((labels < 0) | (labels >= num_classes)).any():
        raise ValueError(f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes})")


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """A timm network behind a per-channel normalisation: ``logits = net((x - mean) / std)``.

    Args:
        net: Network mapping normalised ``[B, 3, S, S]`` images to ``[B, num_classes]`` logits.
        arch: Its family (one of :data:`CLASSIFIER_ARCHS`, or any name for a custom ``net``).
        num_classes: Number of classes.
        image_size: Image side ``S`` the network is built for.
        mean: Per-channel mean of the ``[0, 1]`` inputs.
        std: Per-channel standard deviation of the ``[0, 1]`` inputs.
    """

    def __init__(
        self,
        net: nn.Module,
        arch: str,
        num_classes: int,
        image_size: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must hold 3 values, std > 0; got mean={mean!r}, std={std!r}")
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of float images.

        Args:
            x: ``[B, 3, S, S]`` float images in ``[0, 1]``.

        Returns:
            ``[B, num_classes]`` logits.
        """
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s) or not x.is_floating_point():
            raise ValueError(f"x must be a float tensor of shape [B, 3, {s}, {s}] in [0, 1], got "
                             f"{x.dtype} {tuple(x.shape)}")
        return self.net((x - self.mean) / self.std)


def _make_net(arch: str, num_classes: int, image_size: int) -> nn.Module:
    stride = image_size // 16  # stem stride: every net works at 16x16 after its stem
    if arch == "resnet":
        net = ResNet(BasicBlock, layers=(1, 1, 1, 1), num_classes=num_classes, channels=_WIDTHS,
                     stem_type="deep", stem_width=_WIDTHS[0] // 2, avg_down=True)
        net.conv1[0].stride = (stride, stride)  # first conv of the deep stem (stride 2 for ImageNet)
        net.maxpool = nn.Identity()  # no stem pooling on tiny images
        return net
    if arch == "convnext":
        # patch_size=1 keeps stage 0 at stride 1 (timm adds a stride-2 stage 0 when the stem has stride 2)
        net = ConvNeXt(num_classes=num_classes, depths=_CONVNEXT_DEPTHS, dims=_WIDTHS, patch_size=1,
                       use_grn=True, ls_init_value=None)
        if stride > 1:  # 2x2 patchify stem at 32 px, initialised as timm does
            conv = nn.Conv2d(3, _WIDTHS[0], kernel_size=stride, stride=stride)
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
            net.stem[0] = conv
        return net
    # ViT-C: conv stem (stride 2 * stride) -> 1x1 projection to tokens, one token per stem output pixel
    c1, c2 = _VIT_STEM
    stem = nn.Sequential(
        nn.Conv2d(3, c1, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
    )
    return VisionTransformer(img_size=image_size, patch_size=1, num_classes=num_classes, global_pool="avg",
                             class_token=False, embed_layer=partial(HybridEmbed, backbone=stem), **_VIT)


def make_classifier(
    arch: str,
    num_classes: int,
    image_size: int,
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    seed: int = 0,
) -> Classifier:
    """A freshly initialised classifier of family ``arch`` (never pretrained weights).

    Args:
        arch: One of :data:`CLASSIFIER_ARCHS`.
        num_classes: Number of classes, ``>= 2``.
        image_size: Image side, one of :data:`IMAGE_SIZES`.
        mean: Per-channel mean of the ``[0, 1]`` inputs.
        std: Per-channel standard deviation of the ``[0, 1]`` inputs.
        seed: Seed of the initialisation (the global RNG is left untouched).

    Returns:
        A :class:`Classifier` in train mode, taking ``[B, 3, image_size, image_size]`` floats in ``[0, 1]``
        and returning ``[B, num_classes]`` logits.
    """
    _check_arch_size(arch, image_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    with torch.random.fork_rng(devices=[]):  # timm initialises from the global generator
        torch.manual_seed(seed)
        net = _make_net(arch, num_classes, image_size)
    return Classifier(net, arch, num_classes, image_size, mean, std)


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Logits of uint8 images, in eval mode and without gradients (the model's mode is restored).

    Args:
        model: Takes ``[B, 3, H, W]`` floats in ``[0, 1]`` (e.g. a :class:`Classifier`).
        images: ``[N, 3, H, W]`` ``torch.uint8``.
        batch_size: Images per forward pass.

    Returns:
        ``[N, C]`` float logits.
    """
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        out = [model(images[i: i + batch_size].float() / 255) for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).float()


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def _c(default, note: str):
    return field(default=default, metadata={"tag": "O", "note": note})


@dataclass(frozen=True)
class ClassifierConfig:
    """How one classifier is trained (all [O]: the paper used ImageNet-pretrained timm models).

    Defaults suit the 2-core CPU: AdamW with a one-cycle schedule (linear warm-up, cosine decay), label
    smoothing, random crops (reflection padding) and horizontal flips. :data:`RECOMMENDED_EPOCHS` gives the
    epochs we use per dataset and family.
    """

    arch: str = _c("resnet", "family, one of CLASSIFIER_ARCHS")
    epochs: int = _c(15, "passes over the training set")
    batch_size: int = _c(128, "minibatch size")
    lr: float = _c(2e-3, "peak AdamW learning rate of the one-cycle schedule")
    weight_decay: float = _c(0.05, "AdamW weight decay (not on norms, biases, position embeddings)")
    label_smoothing: float = _c(0.1, "cross-entropy label smoothing")
    warmup: float = _c(0.15, "fraction of the steps with a rising learning rate")
    augment: bool = _c(True, "random crop with padding (and flips if hflip)")
    crop_padding: int | None = _c(None, "crop padding in pixels; None: image_size // 8")
    hflip: bool = _c(True, "random horizontal flips when augmenting")
    mean: tuple[float, float, float] = _c((0.5, 0.5, 0.5), "per-channel input mean (in [0, 1])")
    std: tuple[float, float, float] = _c((0.25, 0.25, 0.25), "per-channel input std (in [0, 1])")
    seed: int = _c(0, "seeds the initialisation, the batch order and the augmentation")

    def __post_init__(self) -> None:
        if self.arch not in CLASSIFIER_ARCHS:
            raise ValueError(f"arch must be one of {CLASSIFIER_ARCHS}, got {self.arch!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1 or not 0 < self.warmup < 1:
            raise ValueError(f"label_smoothing must be in [0, 1) and warmup in (0, 1), got "
                             f"{self.label_smoothing}, {self.warmup}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding must be None or >= 0, got {self.crop_padding}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)


def random_crop_flip(images: Tensor, generator: torch.Generator, padding: int, hflip: bool = True) -> Tensor:
    """Random crops of the reflection-padded images (and horizontal flips), per image, on tensors.

    Args:
        images: ``[B, 3, H, W]`` images (any dtype).
        generator: Draws the offsets and flips.
        padding: Pixels of reflection padding on each side; the crop offset is uniform in ``[0, 2 padding]``.
        hflip: Flip each image with probability 1/2.

    Returns:
        ``[B, 3, H, W]`` augmented images, same dtype.
    """
    b, c, h, w = images.shape
    if padding < 0 or padding >= min(h, w):
        raise ValueError(f"padding must be in [0, {min(h, w) - 1}], got {padding}")
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    if padding > 0:
        padded = F.pad(images, (padding,) * 4, mode="reflect")
        rows = off[0, :, None] + torch.arange(h)  # [B, H]
        cols = off[1, :, None] + torch.arange(w)  # [B, W]
        images = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]
    if hflip:
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


def train_classifier(
    cfg: ClassifierConfig,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    progress: bool = True,
) -> tuple[Classifier, dict[str, list[float]]]:
    """Train a :func:`make_classifier` model with cross-entropy, AdamW and a one-cycle schedule.

    Every epoch visits ``N // batch_size`` minibatches of a fresh permutation (the last partial batch is
    dropped). The same ``cfg.seed`` gives identical weights (initialisation, batch order and augmentation
    are all seeded).

    Args:
        cfg: Architecture and optimisation settings.
        images: ``[N, 3, S, S]`` ``torch.uint8`` training images, ``S`` in :data:`IMAGE_SIZES`.
        labels: ``[N]`` ``torch.int64`` in ``[0, num_classes)``.
        num_classes: Number of classes.
        progress: Show a tqdm bar with the running loss and accuracy.

    Returns:
        ``(model, history)``: the model in eval mode with frozen parameters, and per-epoch lists
        ``train_loss``, ``train_acc`` (on the augmented minibatches, in train mode), ``lr`` (at the epoch's
        end) and ``seconds``.
    """
    _check_images(images)
    _check_labels(labels, images.shape[0], num_classes)
    n, size = images.shape[0], images.shape[-1]
    if images.shape[-2] != size:
        raise ValueError(f"images must be square, got {tuple(images.shape)}")
    init_ss, data_ss = np.random.SeedSequence(cfg.seed).spawn(2)
    model = make_classifier(cfg.arch, num_classes, size, mean=cfg.mean, std=cfg.std,
                            seed=int(init_ss.generate_state(1)[0]))
    g = torch.Generator().manual_seed(int(data_ss.generate_state(1)[0]))
    padding = size // 8 if cfg.crop_padding is None else cfg.crop_padding

    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs
    no_wd = {f"net.{k}" for k in getattr(model.net, "no_weight_decay", set)()}
    opt = torch.optim.AdamW(param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=no_wd),
                            lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=cfg.warmup, anneal_strategy="cos", cycle_momentum=False)

    history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "lr": [], "seconds": []}
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=f"{cfg.arch} classifier", disable=not progress,
               mininterval=1.0)
    model.train()
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for i in range(steps_per_epoch):
            idx = perm[i * bs: (i + 1) * bs]
            x, y = images[idx], labels[idx]
            if cfg.augment:
                x = random_crop_flip(x, g, padding, cfg.hflip)
            logits = model(x.float() / 255)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            bar.update()
            if i % 20 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum.item() / (i + 1):.3f}",
                                acc=f"{correct.item() / ((i + 1) * bs):.3f}")
        history["train_loss"].append(loss_sum.item() / steps_per_epoch)
        history["train_acc"].append(correct.item() / (steps_per_epoch * bs))
        history["lr"].append(sched.get_last_lr()[0])
        history["seconds"].append(time.perf_counter() - start)
    bar.close()
    model.eval().requires_grad_(False)
    return model, history


def load_or_train_classifier(
    cfg: ClassifierConfig,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    data_fingerprint: str,
    publish: bool = False,
    progress: bool = True,
) -> tuple[Classifier, dict]:
    """The classifier of ``(cfg, data)``: loaded from the artifacts/cache, else trained and saved.

    The cache key covers ``cfg``, ``num_classes``, the image size and count, and ``data_fingerprint`` (e.g.
    :func:`fingerprint` of the training set, or a dataset config hash), so other data means another key.

    Args:
        cfg: Training settings.
        images: ``[N, 3, S, S]`` ``torch.uint8`` training images (only their shape is used on a cache hit).
        labels: ``[N]`` ``torch.int64``.
        num_classes: Number of classes.
        data_fingerprint: Identifies the training data.
        publish: Save into the committed ``artifacts/`` instead of the scratch cache.
        progress: Show the training bar.

    Returns:
        ``(model, manifest)``: the model (eval, frozen) and the artifact manifest plus a ``history`` entry
        (per-epoch lists as returned by :func:`train_classifier`).
    """
    from paperlib.cache import load_or_compute

    _check_images(images)
    _check_labels(labels, images.shape[0], num_classes)
    if not isinstance(data_fingerprint, str) or not data_fingerprint:
        raise ValueError(f"data_fingerprint must be a non-empty str, got {data_fingerprint!r}")
    size = images.shape[-1]
    _check_arch_size(cfg.arch, size)

    def compute() -> dict[str, Tensor]:
        model, history = train_classifier(cfg, images, labels, num_classes, progress=progress)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"history.{k}": torch.tensor(v, dtype=torch.float64) for k, v in history.items()})
        return tensors

    config = {**cfg.to_dict(), "num_classes": num_classes, "image_size": size, "n_images": images.shape[0],
              "data": data_fingerprint}
    tensors, manifest = load_or_compute(STAGE, config, compute, version=CACHE_VERSION, publish=publish)
    model = make_classifier(cfg.arch, num_classes, size, mean=cfg.mean, std=cfg.std)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval().requires_grad_(False)
    history = {k[len("history."):]: v.tolist() for k, v in tensors.items() if k.startswith("history.")}
    return model, {**manifest, "history": history}


# ----------------------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------------------


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: the fraction of rows whose argmax is the label.

    Args:
        logits: ``[N, C]`` scores (logits or probabilities).
        labels: ``[N]`` ``torch.int64``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape [N, C] with N >= 1, got {tuple(logits.shape)}")
    _check_labels(labels, logits.shape[0], logits.shape[1])
    return (logits.argmax(1) == labels).double().mean().item()


def ensemble_accuracy(
    models: Sequence[nn.Module],
    images: Tensor,
    labels: Tensor,
    batch_size: int = 256,
) -> dict:
    """Top-1 accuracy of each classifier, their mean (the paper's score) and the averaged-softmax ensemble's.

    Args:
        models: Classifiers taking ``[B, 3, H, W]`` floats in ``[0, 1]`` (e.g. one per :data:`CLASSIFIER_ARCHS`).
        images: ``[N, 3, H, W]`` ``torch.uint8`` (e.g. class-conditional samples).
        labels: ``[N]`` ``torch.int64`` (e.g. the classes they were generated for).
        batch_size: Images per forward pass.

    Returns:
        ``{"names": [arch per model], "per_model": [acc per model], "mean": mean of per_model,
        "ensemble": accuracy of the mean of the models' softmax probabilities}``.
    """
    if len(models) < 1:
        raise ValueError("models must hold at least one classifier")
    _check_images(images)
    _check_labels(labels, images.shape[0])
    logits = [predict(m, images, batch_size) for m in models]
    per_model = [accuracy(z, labels) for z in logits]
    probs = torch.stack([z.softmax(dim=1) for z in logits]).mean(0)
    return {
        "names": [getattr(m, "arch", f"model {i}") for i, m in enumerate(models)],
        "per_model": per_model,
        "mean": math.fsum(per_model) / len(per_model),
        "ensemble": accuracy(probs, labels),
    }


def classifier_data(cdm) -> DatasetConfig:
    """The training data of a chapter's classifiers: the CDM's own, except for shapes.

    Shapes' training set puts 90% of the images on their class's background, and classifiers trained on it
    learn the background: they reach that 0.9 on the test set but sit near chance on the shape alone
    (Mixed-Rand). To judge whether a *sample shows its class's shape*, shapes classifiers are trained on an
    independent draw with uncorrelated backgrounds (``bg_correlation = 0``) [O].
    """
    data = cdm.recipe.data
    if data.name == "shapes":
        return replace(data, bg_correlation=0.0, seed=data.seed + 1)
    return data


def book_classifiers(
    cdm, profile: str, dataset: str, epochs: int | dict[str, int] | None = None, seed: int = 0,
    progress: bool = True,
) -> dict[str, Classifier]:
    """The three classifiers of a chapter's dataset (one per :data:`CLASSIFIER_ARCHS`), trained on
    :func:`classifier_data`. With ``epochs`` (chapter 2) they are trained or loaded and the setting recorded;
    with ``epochs=None`` the recorded setting is reused (later chapters).

    Args:
        cdm: A :class:`paperlib.train.BookCDM`.
        profile: ``"full"`` saves into ``artifacts/``.
        dataset: Dataset name (key of the recorded choice).
        epochs: Epochs for every family (int), per family (dict; missing ones from
            :data:`RECOMMENDED_EPOCHS`), ``{}`` for the recommended ones, or ``None`` to reuse chapter 2's.
        seed: Training seed (recorded with the epochs).
        progress: tqdm bars.

    Returns:
        ``{arch: classifier}`` in eval mode.
    """
    from paperlib.selection import load_choice, record_choice

    if epochs is None:
        spec = load_choice(profile, dataset, "classifiers")
        per_arch, seed = spec["epochs"], spec["seed"]
    else:
        base = RECOMMENDED_EPOCHS.get(dataset, RECOMMENDED_EPOCHS["cifar10"])
        per_arch = {a: epochs for a in CLASSIFIER_ARCHS} if isinstance(epochs, int) else {**base, **epochs}
        record_choice(profile, dataset, "classifiers", {"epochs": per_arch, "seed": seed}, "02_t_star")
    images, labels = load_dataset(classifier_data(cdm), "train")
    fp = fingerprint(images, labels)
    out = {}
    for arch in CLASSIFIER_ARCHS:
        cfg = ClassifierConfig(arch=arch, epochs=per_arch[arch], seed=seed)
        out[arch], _ = load_or_train_classifier(cfg, images, labels, len(cdm.classes), fp,
                                                publish=profile == "full", progress=progress)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m paperlib.classifiers``: train the book's three classifiers of a dataset ahead of chapter 2
    (which then loads them), e.g. in the background while the CDM trains."""
    import argparse
    from types import SimpleNamespace

    from paperlib.data import DATASETS
    from paperlib.train import cdm_recipe

    parser = argparse.ArgumentParser(prog="python -m paperlib.classifiers", description=main.__doc__)
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--profile", choices=["smoke", "full"], default="full")
    parser.add_argument("--epochs", type=int, default=None, help="for every family (default: recommended)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = cdm_recipe(args.dataset, args.profile)
    stand_in = SimpleNamespace(recipe=recipe, classes=recipe.data.classes)  # the data is all they need of a CDM
    models = book_classifiers(stand_in, args.profile, args.dataset, {} if args.epochs is None else args.epochs)
    images, labels = load_dataset(classifier_data(stand_in), "test")
    scores = ensemble_accuracy(list(models.values()), images, labels)
    for arch, acc in zip(models, scores["per_model"]):
        print(f"{arch}: test accuracy {acc:.3f}")
    print(f"mean of the three {scores['mean']:.3f}, softmax ensemble {scores['ensemble']:.3f}")


if __name__ == "__main__":
    main()
