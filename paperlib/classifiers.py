"""Image classifiers of three families, trained from scratch, for the ``t*`` choice and sample accuracy.

Paper §3.2.1 / App. H.1: ``t*`` is chosen by two-stage sampling, scoring the generated images by the top-1
accuracy of an *ensemble of three classifiers of different families* (ViT, Swin-V2 and ConvNeXt-V2 from timm,
pretrained on ImageNet), averaged over the three. The same classifiers report the accuracy of the
class-conditional samples of the diffusion model.

Our stand-ins ([O]; no pretrained weights exist for our datasets) are timm networks of three families, in two
designs (``ClassifierConfig.net``):

``"v2"`` (the shapes classifiers, and the CIFAR-10 ones the book uses today): small enough to train on a 2-core
CPU in minutes; every net works at 16x16 after its stem (stride 2 at 32 px, stride 1 at 16 px):

- ``"resnet"``: timm ``ResNet``, BasicBlock, one block per stage, widths 16-32-64-128, the 3-conv deep stem
  without its max-pool, avg-pool shortcuts (a narrow ``resnet10t``);
- ``"convnext"``: timm ``ConvNeXt`` with GRN and no layer scale (ConvNeXt-V2 blocks), depths 1-1-2-1,
  widths 16-32-64-128, a patchify stem;
- ``"vit"``: timm ``VisionTransformer``, width 64, depth 4, 2 heads, MLP ratio 2, no class token, mean-pooled
  tokens, on an 8x8 grid of tokens from a small convolutional stem (timm ``HybridEmbed``: two 3x3 conv-BN-ReLU,
  the ViT-C of Xiao et al. 2021, "Early convolutions help transformers see better"). The plain patchify ViT
  (2x2 patches at 16 px) learned nothing but the background shortcut of the shapes in our CPU budget
  (shape-only accuracy at chance after 15 epochs), the conv stem learns the shapes.

On CIFAR-10 these average 72.8% test accuracy: too weak to judge whether a sample shows its class.
``"v3"`` (:data:`CLASSIFIER_RECIPES` ``"v3"``, CIFAR-10) works at the full 32x32 resolution in its first stage,
with twice the v2 widths (4-9x the v2 cost per step):

- ``"resnet"``: timm ``ResNet``, BasicBlock, one block per stage, widths 32-64-128-256 (stages at 32, 16, 8,
  4 px), a single 3x3 stride-1 stem conv, no max-pool (a narrow CIFAR ResNet-10), SGD with Nesterov momentum;
- ``"convnext"``: timm ``ConvNeXt``, depths 1-1-2-1, widths 32-64-128-256, a 3x3 stride-1 stem conv (stages
  at 32, 16, 8, 4 px), depth-wise kernels 5-5-5-3 (at 4 px a 7x7 kernel sees only padding beyond 3x3), no
  GRN and no layer scale: GRN doubled the step time at 32 px on our CPU (its norms are memory-bound);
- ``"vit"``: timm ``VisionTransformer``, width 128, depth 6, 4 heads, MLP ratio 2, mean-pooled, on 8x8 tokens
  from a three-conv ``HybridEmbed`` stem (3x3 conv-BN-ReLU at 32 px with 32 channels, then two stride-2 ones
  with 64 and 128 channels).

The full v3 ResNet reached 87.7% (its training accuracy ended at 92.5%: too little capacity for 25 epochs), so
``"v4"`` (:data:`CLASSIFIER_RECIPES` ``"v4"``) doubles its depth, two BasicBlocks per stage (a half-width CIFAR
ResNet-18, 30 epochs), and keeps the v3 ConvNeXt and ViT. It reached 89.2% (training accuracy 95.9% and
still rising as the cosine decay ended), so ``"v5"`` trains the same network twice as long (60 epochs). The v3
ConvNeXt reached 83.8% (training accuracy 90.4%), so ``"v5"`` also gives the ConvNeXt the v4 ResNet's 2.8M
parameters (net ``"v5"``: depths 1-1-4-1, widths 32-64-192-384), stochastic depth 0.1 and 40 epochs.

Training (:func:`train_classifier`) is resumable: a checkpoint after every epoch, on SIGTERM/Ctrl-C and when
a time budget runs out; every epoch's batch order and every step's augmentation are seeded by
``(seed, epoch[, step])`` (``batch_rng="per_step"``, the v3 recipe), or drawn from one seeded stream whose
state is checkpointed (``"stream"``, v2), so a resumed run equals an uninterrupted one.

Conventions: images are ``torch.uint8`` ``[N, 3, H, W]`` and labels ``torch.int64`` ``[N]`` (as in
:mod:`paperlib.data`); a classifier (:class:`Classifier`) takes float images in ``[0, 1]``
(``images.float() / 255``) and normalises them itself, so attacks working in ``[0, 1]`` (torchattacks) can use
it directly; bad arguments raise ``ValueError`` naming the parameter and its allowed values.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import HybridEmbed
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn

from paperlib import __version__
from paperlib.cache import (
    PUBLISH_MAX_BYTES,
    ProvenanceError,
    artifact_exists,
    artifact_path,
    check_may_compute,
    config_key,
    delete_artifact,
    load_artifact,
    save_artifact,
)
from paperlib.checkpoint import (
    BatchOrder,
    LoopPosition,
    check_resumable,
    flatten_optimizer,
    run_epochs,
    seed_of,
    strip_prefix,
    unflatten_optimizer,
)
from paperlib.data import DatasetConfig, fingerprint, load_dataset
from paperlib.progress import tqdm
from paperlib.setup import channels_last
from paperlib.train import TrainingIncomplete as _TrainingIncomplete

log = logging.getLogger(__name__)

__all__ = [
    "BATCH_RNGS",
    "BOOK_CLASSIFIER_RECIPE",
    "CLASSIFIER_ARCHS",
    "CLASSIFIER_RECIPES",
    "IMAGE_SIZES",
    "NETS",
    "OPTIMIZERS",
    "PRETRAINED_IMAGENET",
    "RECOMMENDED_EPOCHS",
    "Classifier",
    "ClassifierConfig",
    "SubsetClassifier",
    "TrainingIncomplete",
    "accuracy",
    "add_test_accuracy",
    "book_classifiers",
    "classifier_data",
    "ensemble_accuracy",
    "load_or_train_classifier",
    "make_classifier",
    "predict",
    "pretrained_classifiers",
    "random_crop_flip",
    "recipe_config",
    "train_classifier",
]

CLASSIFIER_ARCHS: tuple[str, ...] = ("resnet", "convnext", "vit")
"""The three families of the ensemble (stand-ins for the paper's ViT, Swin-V2 and ConvNeXt-V2)."""

NETS: tuple[str, ...] = ("v2", "v3", "v4", "v5")
"""Network designs per family: ``"v2"`` works at 16x16 after its stem, ``"v3"`` at 32x32 in its first stage;
``"v4"`` (ResNet only) is the v3 ResNet with two blocks per stage."""

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
"""AdamW, or SGD with Nesterov momentum 0.9; both with a one-cycle schedule and no decay on norms and biases."""

BATCH_RNGS: tuple[str, ...] = ("stream", "per_step")
"""How batches are drawn: one seeded stream over all epochs (v2; its state is checkpointed), or a permutation
seeded by ``(seed, epoch)`` and an augmentation seeded by ``(seed, epoch, step)``."""

IMAGE_SIZES: tuple[int, ...] = (16, 32)
"""Image sides the classifiers are built for (shapes at 16 px, CIFAR-10 at 32 px)."""

STAGE = "classifier"
"""Cache stage of the trained classifiers."""

CACHE_VERSION = 2
"""Bump when a change of this module changes the trained weights (2: the ViT got its conv stem). The v3
fields of :class:`ClassifierConfig` are in the key only when they differ from their defaults, so the v2
classifiers keep their keys."""

RECOMMENDED_EPOCHS: dict[str, dict[str, int]] = {
    "shapes": {"resnet": 30, "convnext": 20, "vit": 15},  # 10k images of 16 px: ~3-4.5 CPU-minutes each
    "cifar10": {"resnet": 20, "convnext": 12, "vit": 8},  # 50k images of 32 px: ~11-15 CPU-minutes each
}
"""Epochs of the v2 recipe per dataset and family within our CPU budget, from measured step times (batch 128,
one thread, one dedicated core; about twice the wall time when the cores are shared with other jobs)."""

_V3 = {"net": "v3", "batch_rng": "per_step"}
_V3_CIFAR10: dict[str, dict] = {
    "resnet": {**_V3, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 25},
    "convnext": {**_V3, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "epochs": 20},
    "vit": {**_V3, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "epochs": 22},
}
# Cost of v3 on CIFAR-10 (batch 128, one thread), in CPU seconds per step (time.process_time, median of 3x2
# steps; the 2-core machine shared with two CDM trainings, so wall time ~1.5-2.5x this), beside the v2 nets
# measured in the same run (v2: resnet 0.10, convnext 0.20, vit 0.24):
#   resnet v3   0.88 s/step x 390 steps x 25 epochs = 2.4 h
#   convnext v3 1.05 s/step (2.21 with GRN)    x 20 = 2.3 h
#   vit v3      1.01 s/step                    x 22 = 2.4 h
# Together ~7.1 single-core hours (plus ~1% for the per-epoch monitor accuracy on 2000 test images).
_V3_PILOTS: dict[str, dict[str, float]] = {
    # Test accuracy after ONE one-cycle epoch on the 50k images (v3 vs v2 nets, same data and seed); the v2 nets
    # reached 79.7 / 68.5 / 70.1% after their 20 / 12 / 8 epochs.
    "v3 1 epoch": {"resnet": 0.458, "convnext": 0.512, "vit": 0.550},
    "v2 1 epoch": {"resnet": 0.548, "convnext": 0.477, "vit": 0.512},
    "v3 resnet, AdamW 2e-3 instead of SGD, 1 epoch": {"resnet": 0.558},
    # a 3-epoch one-cycle run of the v3 ResNet recipe, test accuracy after each epoch
    "v3 resnet 3 epochs: after 1, 2, 3": {"epoch 1": 0.482, "epoch 2": 0.620, "epoch 3": 0.676},
    # the full v3 ResNet (25 epochs, key e974b6b4abbc9668, 6.5 h wall on the shared machine): 10k test images;
    # its training accuracy (augmented, label-smoothed) ended at 0.925, so it is capacity-limited
    "v3 resnet 25 epochs": {"resnet": 0.8772},
}
"""Pilot accuracies behind :data:`CLASSIFIER_RECIPES` ``"v3"`` (expected after the full schedule: ResNet about
91%, ConvNeXt and ViT 86-89%, mean about 88.5%). Measured: the full v3 ResNet reached 87.7%, below the 90% the
judges need, so its recipe is not the book's yet."""

_V4_CIFAR10: dict[str, dict] = {
    "resnet": {**_V3_CIFAR10["resnet"], "net": "v4", "epochs": 30},
    "convnext": _V3_CIFAR10["convnext"], "vit": _V3_CIFAR10["vit"],  # the v3 ones: same keys, same artifacts
}
# Cost of the v4 ResNet (2.8M parameters): 1.92x the v3 ResNet's CPU time per step (median of 4 interleaved
# pairs, range 1.8-2.1; batch 128, one thread, machine shared with two CDM trainings), 30 epochs: ~5.5 CPU hours.
# Measured: 8.1 h wall (shared machine), test accuracy 0.8924 (key 1baf768a81fb74dc), training accuracy 0.959.

_V5_CIFAR10: dict[str, dict] = {
    **_V4_CIFAR10, "resnet": {**_V4_CIFAR10["resnet"], "epochs": 60},
    "convnext": {**_V3_CIFAR10["convnext"], "net": "v5", "drop_path": 0.1, "epochs": 40},
}
# The v4 ResNet trained for 60 epochs (~11 CPU hours in NCHW, ~7.5 in the NHWC that training now uses); the v5
# ConvNeXt (2.8M parameters, as the v4 ResNet; the v3 one has 1.0M): the v3 ConvNeXt (0.8376, training accuracy
# 0.904 -- the v4 ResNet's train-test gap, so short of capacity rather than overfitting) with four blocks at
# 8 px, widths 192 and 384 at 8 and 4 px (capacity where it costs least on a CPU: 1.67x the v3 ConvNeXt's CPU
# time per step, against 1.95x for depths 2-2-2-2 at 1.6M parameters; median of 3, NHWC, batch 128, one
# thread), stochastic depth 0.1, 40 epochs: ~6.5 CPU hours. The v3 ViT.

CLASSIFIER_RECIPES: dict[str, dict[str, dict[str, dict]]] = {
    "v2": {ds: {arch: {"epochs": e} for arch, e in per.items()} for ds, per in RECOMMENDED_EPOCHS.items()},
    "v3": {"cifar10": _V3_CIFAR10},
    "v4": {"cifar10": _V4_CIFAR10},
    "v5": {"cifar10": _V5_CIFAR10},
}
"""Classifier recipes: ``recipe -> dataset -> family -> ClassifierConfig fields`` (the others default)."""

BOOK_CLASSIFIER_RECIPE: dict[str, str] = {"shapes": "v2", "cifar10": "v2"}
"""The recipe the book's chapters use per dataset (switch CIFAR-10 to ``"v3"`` once its artifacts exist)."""

_WIDTHS = (16, 32, 64, 128)  # v2 ResNet and ConvNeXt stage widths
_CONVNEXT_DEPTHS = (1, 1, 2, 1)
_VIT = {"embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0}
_VIT_STEM = (32, 64)  # v2 conv stem widths

_V3_WIDTHS = (32, 64, 128, 256)  # v3 ResNet and ConvNeXt stage widths
_V3_RESNET_LAYERS = (1, 1, 1, 1)
_V4_RESNET_LAYERS = (2, 2, 2, 2)  # a half-width CIFAR ResNet-18
_RESNET_LAYERS_32PX = {"v3": _V3_RESNET_LAYERS, "v4": _V4_RESNET_LAYERS}  # the 32 px designs' ResNet depths
_V3_CONVNEXT_DEPTHS = (1, 1, 2, 1)
_V3_CONVNEXT_KERNELS = (5, 5, 5, 3)
_V5_CONVNEXT = {"depths": (1, 1, 4, 1), "dims": (32, 64, 192, 384)}  # 2.8M parameters, as the v4 ResNet
_NET_ARCH = {"v4": "resnet", "v5": "convnext"}  # designs of one family only
_V3_VIT = {"embed_dim": 128, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0}
_V3_VIT_STEM = (32, 64, 128)  # stride 1, 2, 2: 8x8 tokens at 32 px


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


def _make_net(arch: str, num_classes: int, image_size: int, net: str = "v2", drop_path: float = 0.0
              ) -> nn.Module:
    if net == "v5":
        return _make_net_v3(arch, num_classes, drop_path=drop_path, **_V5_CONVNEXT)
    if net in _RESNET_LAYERS_32PX:
        return _make_net_v3(arch, num_classes, _RESNET_LAYERS_32PX[net], drop_path)
    stride = image_size // 16  # stem stride: every v2 net works at 16x16 after its stem
    if arch == "resnet":
        net = ResNet(BasicBlock, layers=(1, 1, 1, 1), num_classes=num_classes, channels=_WIDTHS,
                     stem_type="deep", stem_width=_WIDTHS[0] // 2, avg_down=True, drop_path_rate=drop_path)
        net.conv1[0].stride = (stride, stride)  # first conv of the deep stem (stride 2 for ImageNet)
        net.maxpool = nn.Identity()  # no stem pooling on tiny images
        return net
    if arch == "convnext":
        # patch_size=1 keeps stage 0 at stride 1 (timm adds a stride-2 stage 0 when the stem has stride 2)
        net = ConvNeXt(num_classes=num_classes, depths=_CONVNEXT_DEPTHS, dims=_WIDTHS, patch_size=1,
                       use_grn=True, ls_init_value=None, drop_path_rate=drop_path)
        if stride > 1:  # 2x2 patchify stem at 32 px, initialised as timm does
            net.stem[0] = _timm_conv(3, _WIDTHS[0], kernel_size=stride, stride=stride)
        return net
    # ViT-C: conv stem (stride 2 * stride) -> 1x1 projection to tokens, one token per stem output pixel
    return _vit(num_classes, image_size, _VIT_STEM, (stride, 2), {**_VIT, "drop_path_rate": drop_path})


def _timm_conv(c_in: int, c_out: int, **kwargs) -> nn.Conv2d:
    """A conv initialised as timm's ConvNeXt initialises its own (truncated normal, std 0.02, zero bias)."""
    conv = nn.Conv2d(c_in, c_out, **kwargs)
    nn.init.trunc_normal_(conv.weight, std=0.02)
    nn.init.zeros_(conv.bias)
    return conv


def _vit(num_classes: int, image_size: int, widths: Sequence[int], strides: Sequence[int], dims: dict) -> nn.Module:
    """A timm ViT on the tokens of a 3x3 conv-BN-ReLU stem (``HybridEmbed`` adds the 1x1 projection)."""
    layers: list[nn.Module] = []
    for c_in, c_out, s in zip((3, *widths[:-1]), widths, strides):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    return VisionTransformer(img_size=image_size, patch_size=1, num_classes=num_classes, global_pool="avg",
                             class_token=False, embed_layer=partial(HybridEmbed, backbone=nn.Sequential(*layers)),
                             **dims)


def _make_net_v3(arch: str, num_classes: int, resnet_layers: Sequence[int] = _V3_RESNET_LAYERS,
                 drop_path: float = 0.0, depths: Sequence[int] = _V3_CONVNEXT_DEPTHS,
                 dims: Sequence[int] = _V3_WIDTHS) -> nn.Module:
    """The v3 designs: the first stage at the input resolution (stride-1 stems), see the module docstring;
    ``resnet_layers``: BasicBlocks per ResNet stage (v4: two); ``drop_path``: timm's stochastic-depth rate;
    ``depths``, ``dims``: the ConvNeXt's blocks and widths per stage (v5: deeper and wider at 8 and 4 px)."""
    if arch == "resnet":
        # stem_type="deep" with stem_width w/2 makes timm size the stem output (and layer1's input) w ...
        net = ResNet(BasicBlock, layers=tuple(resnet_layers), num_classes=num_classes, channels=_V3_WIDTHS,
                     stem_type="deep", stem_width=_V3_WIDTHS[0] // 2, drop_path_rate=drop_path)
        net.conv1 = nn.Conv2d(3, _V3_WIDTHS[0], 3, stride=1, padding=1, bias=False)  # ... then one 3x3 conv
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
        net.maxpool = nn.Identity()
        return net
    if arch == "convnext":
        net = ConvNeXt(num_classes=num_classes, depths=tuple(depths), dims=tuple(dims), patch_size=1,
                       kernel_sizes=_V3_CONVNEXT_KERNELS, use_grn=False, ls_init_value=None,
                       drop_path_rate=drop_path)
        net.stem[0] = _timm_conv(3, dims[0], kernel_size=3, stride=1, padding=1)  # was a 1x1 conv
        return net
    return _vit(num_classes, 32, _V3_VIT_STEM, (1, 2, 2), {**_V3_VIT, "drop_path_rate": drop_path})


def make_classifier(
    arch: str,
    num_classes: int,
    image_size: int,
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    seed: int = 0,
    net: str = "v2",
    drop_path: float = 0.0,
) -> Classifier:
    """A freshly initialised classifier of family ``arch`` (never pretrained weights).

    Args:
        arch: One of :data:`CLASSIFIER_ARCHS`.
        num_classes: Number of classes, ``>= 2``.
        image_size: Image side, one of :data:`IMAGE_SIZES`.
        mean: Per-channel mean of the ``[0, 1]`` inputs.
        std: Per-channel standard deviation of the ``[0, 1]`` inputs.
        seed: Seed of the initialisation (the global RNG is left untouched).
        net: Design, one of :data:`NETS` (all but ``"v2"`` are built for 32 px only, ``"v4"`` for the
            ResNet only, ``"v5"`` for the ConvNeXt only).
        drop_path: Stochastic-depth rate (timm's ``drop_path_rate``: the last block's drop probability, rising
            linearly from 0 over the blocks), in ``[0, 1)``.

    Returns:
        A :class:`Classifier` in train mode, taking ``[B, 3, image_size, image_size]`` floats in ``[0, 1]``
        and returning ``[B, num_classes]`` logits.
    """
    _check_arch_size(arch, image_size)
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    if net != "v2" and image_size != 32:
        raise ValueError(f"net {net!r} is built for image_size 32 (CIFAR-10), got {image_size}")
    if net in _NET_ARCH and arch != _NET_ARCH[net]:
        raise ValueError(f"net {net!r} is a {_NET_ARCH[net]} design (its recipe trains the v3 {arch}), "
                         f"got arch {arch!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not 0 <= drop_path < 1:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
    with torch.random.fork_rng(devices=[]):  # timm initialises from the global generator
        torch.manual_seed(seed)
        module = _make_net(arch, num_classes, image_size, net, drop_path)
    return channels_last(Classifier(module, arch, num_classes, image_size, mean, std))


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


_KEY_IF_NOT_DEFAULT = ("net", "optimizer", "batch_rng", "drop_path")
"""Fields added after the v2 recipe: in :meth:`ClassifierConfig.to_dict` (the cache key) only when not default."""


@dataclass(frozen=True)
class ClassifierConfig:
    """How one classifier is trained (all [O]: the paper used ImageNet-pretrained timm models).

    Defaults suit the 2-core CPU: AdamW with a one-cycle schedule (linear warm-up, cosine decay), label
    smoothing, random crops (reflection padding) and horizontal flips. :data:`CLASSIFIER_RECIPES` gives the
    settings we use per recipe, dataset and family (:func:`recipe_config`).
    """

    arch: str = _c("resnet", "family, one of CLASSIFIER_ARCHS")
    epochs: int = _c(15, "passes over the training set")
    batch_size: int = _c(128, "minibatch size")
    lr: float = _c(2e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = _c(0.05, "weight decay (decoupled for AdamW; not on norms, biases, position embeddings)")
    label_smoothing: float = _c(0.1, "cross-entropy label smoothing")
    warmup: float = _c(0.15, "fraction of the steps with a rising learning rate")
    augment: bool = _c(True, "random crop with padding (and flips if hflip)")
    crop_padding: int | None = _c(None, "crop padding in pixels; None: image_size // 8")
    hflip: bool = _c(True, "random horizontal flips when augmenting")
    mean: tuple[float, float, float] = _c((0.5, 0.5, 0.5), "per-channel input mean (in [0, 1])")
    std: tuple[float, float, float] = _c((0.25, 0.25, 0.25), "per-channel input std (in [0, 1])")
    seed: int = _c(0, "seeds the initialisation, the batch order and the augmentation")
    net: str = _c("v2", "network design, one of NETS (v3: first stage at 32x32)")
    optimizer: str = _c("adamw", "one of OPTIMIZERS (sgd: Nesterov momentum 0.9)")
    batch_rng: str = _c("stream", "one of BATCH_RNGS ('stream': the order the v2 classifiers were trained in)")
    drop_path: float = _c(0.0, "stochastic-depth rate of the last block (timm drop_path_rate)")

    def __post_init__(self) -> None:
        if self.arch not in CLASSIFIER_ARCHS:
            raise ValueError(f"arch must be one of {CLASSIFIER_ARCHS}, got {self.arch!r}")
        for name, allowed in (("net", NETS), ("optimizer", OPTIMIZERS), ("batch_rng", BATCH_RNGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
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
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    def to_dict(self) -> dict:
        """The fields as a dict (the cache key's config); the v3 fields only when they differ from their
        defaults, so that the keys of the v2 classifiers stay what they were."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in asdict(self).items() if k not in _KEY_IF_NOT_DEFAULT or v != defaults[k]}


def recipe_config(recipe: str, dataset: str, arch: str, epochs: int | None = None, seed: int = 0
                  ) -> ClassifierConfig:
    """The :class:`ClassifierConfig` of ``arch`` in a :data:`CLASSIFIER_RECIPES` recipe for ``dataset``.

    Args:
        recipe: A key of :data:`CLASSIFIER_RECIPES` (``"v2"``, ``"v3"``).
        dataset: Dataset name (v2 falls back to the CIFAR-10 settings for other datasets, as before).
        arch: One of :data:`CLASSIFIER_ARCHS`.
        epochs: Overrides the recipe's epochs.
        seed: Training seed.
    """
    if recipe not in CLASSIFIER_RECIPES:
        raise ValueError(f"recipe must be one of {tuple(CLASSIFIER_RECIPES)}, got {recipe!r}")
    per_dataset = CLASSIFIER_RECIPES[recipe]
    if dataset not in per_dataset and recipe != "v2":
        raise ValueError(f"recipe {recipe!r} is defined for {tuple(per_dataset)} only, got dataset {dataset!r}")
    settings = dict(per_dataset.get(dataset, per_dataset["cifar10"])[arch])
    if epochs is not None:
        settings["epochs"] = epochs
    return ClassifierConfig(arch=arch, seed=seed, **settings)


class TrainingIncomplete(_TrainingIncomplete):
    """A time budget stopped classifier training before its last epoch; a checkpoint was written and calling
    again resumes from it (a :class:`paperlib.train.TrainingIncomplete`)."""


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
    checkpoint: str | Path | None = None,
    max_seconds: float | None = None,
    monitor: tuple[Tensor, Tensor] | None = None,
) -> tuple[Classifier, dict[str, list[float]]]:
    """Train (or resume training) a :func:`make_classifier` model: cross-entropy, one-cycle schedule.

    Every epoch visits ``N // batch_size`` minibatches of a fresh permutation (the last partial batch is
    dropped). The same ``cfg.seed`` gives identical weights (initialisation, batch order and augmentation
    are all seeded, see :data:`BATCH_RNGS`), also across interruptions: with a ``checkpoint`` the state
    (weights, optimizer, schedule, history, position in the epoch, batch generator) is written after every
    epoch, on SIGTERM/Ctrl-C (then ``KeyboardInterrupt`` is re-raised) and when ``max_seconds`` runs out, and
    read back when the file exists.

    Args:
        cfg: Architecture and optimisation settings.
        images: ``[N, 3, S, S]`` ``torch.uint8`` training images, ``S`` in :data:`IMAGE_SIZES`.
        labels: ``[N]`` ``torch.int64`` in ``[0, num_classes)``.
        num_classes: Number of classes.
        progress: Show a tqdm bar with the running loss and accuracy.
        checkpoint: Resume file (``.safetensors``, written with :func:`paperlib.cache.save_artifact`);
            ``None``: no checkpoints.
        max_seconds: Stop after the step that exceeds this many seconds of this call, with a checkpoint
            (needs ``checkpoint``); ``None``: run to the end.
        monitor: ``(images, labels)`` whose accuracy is measured after every epoch (eval mode, no effect
            on training), to watch a long run; recorded as the history's ``monitor_acc``.

    Returns:
        ``(model, history)``: the model in eval mode with frozen parameters, and per-epoch lists
        ``train_loss``, ``train_acc`` (on the augmented minibatches, in train mode), ``lr`` (at the epoch's
        end), ``seconds`` (summed over the pieces of an interrupted epoch) and, with ``monitor``,
        ``monitor_acc``.

    Raises:
        TrainingIncomplete: ``max_seconds`` ran out (the checkpoint is written; call again to resume).
        ProvenanceError: The checkpoint was made with another config or other data.
    """
    _check_images(images)
    _check_labels(labels, images.shape[0], num_classes)
    n, size = images.shape[0], images.shape[-1]
    if images.shape[-2] != size:
        raise ValueError(f"images must be square, got {tuple(images.shape)}")
    if max_seconds is not None and checkpoint is None:
        raise ValueError("max_seconds needs a checkpoint to resume from")
    _check_arch_size(cfg.arch, size)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    init_ss, data_ss = np.random.SeedSequence(cfg.seed).spawn(2)
    model = make_classifier(cfg.arch, num_classes, size, mean=cfg.mean, std=cfg.std, net=cfg.net,
                            seed=seed_of(init_ss), drop_path=cfg.drop_path)
    batches = BatchOrder(cfg.batch_rng, seed_of(data_ss), n)
    padding = size // 8 if cfg.crop_padding is None else cfg.crop_padding

    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs
    no_wd = {f"net.{k}" for k in getattr(model.net, "no_weight_decay", set)()}
    groups = param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=no_wd)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=cfg.warmup, anneal_strategy="cos", cycle_momentum=False)

    history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "lr": [], "seconds": []}
    if monitor is not None:
        _check_images(monitor[0], "monitor images")
        _check_labels(monitor[1], monitor[0].shape[0], num_classes)
        history["monitor_acc"] = []
    pos = LoopPosition()
    run = {"loss_sum": torch.zeros(()), "correct": torch.zeros((), dtype=torch.long)}
    config = {**cfg.to_dict(), "num_classes": num_classes, "image_size": size, "n_images": n}
    data_fp = fingerprint(images, labels) if checkpoint is not None else ""
    if checkpoint is not None and artifact_exists(checkpoint):
        tensors, meta = load_artifact(checkpoint)
        check_resumable(checkpoint, meta, config, data_fp)
        model.load_state_dict(strip_prefix(tensors, "model."))
        opt.load_state_dict(unflatten_optimizer(tensors, meta["param_groups"]))
        sched.load_state_dict(meta["scheduler"])
        history = {k: list(v) for k, v in meta["history"].items()}
        if monitor is None:
            history.pop("monitor_acc", None)
        else:  # epochs trained without a monitor have none
            history.setdefault("monitor_acc", [math.nan] * len(history["train_loss"]))
        pos = LoopPosition(meta["epoch"], meta["step"], meta["epoch_seconds"])
        run = {"loss_sum": tensors["run.loss_sum"], "correct": tensors["run.correct"]}
        batches.load(tensors, pos.epoch)
        log.info("resuming %s at epoch %d, step %d/%d", checkpoint.name, pos.epoch, pos.step, steps_per_epoch)
    elif pos.epoch < cfg.epochs:
        batches.start_epoch(0)

    def save() -> None:
        if checkpoint is None:
            return
        opt_tensors, opt_groups = flatten_optimizer(opt)
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors,
                   **batches.state(), "run.loss_sum": run["loss_sum"], "run.correct": run["correct"]}
        save_artifact(checkpoint, tensors, {
            "stage": f"{STAGE}_resume", "config": config, "data": data_fp, "epoch": pos.epoch, "step": pos.step,
            "epoch_seconds": round(pos.epoch_seconds, 3), "history": history, "param_groups": opt_groups,
            "scheduler": sched.state_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, max_bytes=PUBLISH_MAX_BYTES)

    def train_step(epoch: int, step: int) -> None:
        idx = batches.perm[step * bs: (step + 1) * bs]
        x, y = images[idx], labels[idx]
        if cfg.augment:
            x = random_crop_flip(x, batches.generator(epoch, step), padding, cfg.hflip)
        logits = model(x.float() / 255)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run["loss_sum"] += loss.detach()
        run["correct"] += (logits.detach().argmax(1) == y).sum()
        if step % 20 == 0:
            bar.set_postfix(epoch=epoch + 1, loss=f"{run['loss_sum'].item() / (step + 1):.3f}",
                            acc=f"{run['correct'].item() / ((step + 1) * bs):.3f}")

    def end_epoch(epoch: int, seconds: float) -> None:
        history["train_loss"].append(run["loss_sum"].item() / steps_per_epoch)
        history["train_acc"].append(run["correct"].item() / (steps_per_epoch * bs))
        history["lr"].append(sched.get_last_lr()[0])
        history["seconds"].append(seconds)
        if monitor is not None:
            history["monitor_acc"].append(accuracy(predict(model, monitor[0]), monitor[1]))
        run.update(loss_sum=torch.zeros(()), correct=torch.zeros((), dtype=torch.long))
        if epoch + 1 < cfg.epochs:
            batches.start_epoch(epoch + 1)
        log.info("%s classifier: epoch %d/%d, loss %.4f, train acc %.4f%s, %.0f s", cfg.arch, epoch + 1,
                 cfg.epochs, history["train_loss"][-1], history["train_acc"][-1],
                 f", monitor acc {history['monitor_acc'][-1]:.4f}" if monitor is not None else "", seconds)

    def incomplete(where: str) -> TrainingIncomplete:
        return TrainingIncomplete(f"{cfg.arch} classifier: the budget of {max_seconds:.0f} s ran out {where}; "
                                  f"checkpoint {checkpoint}")

    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=pos.epoch * steps_per_epoch + pos.step,
               desc=f"{cfg.arch} classifier", disable=not progress, mininterval=1.0)
    model.train()
    try:
        run_epochs(pos, cfg.epochs, steps_per_epoch, train_step, end_epoch, save, incomplete,
                   max_seconds=max_seconds, on_step=bar.update)
    finally:
        bar.close()
    model.eval().requires_grad_(False)
    return model, history


_MONITOR_N = 2000
"""Test images whose accuracy is logged after every epoch when training with a test split."""


def _test_split(test) -> tuple[Tensor, Tensor] | None:
    return test() if callable(test) else test


def load_or_train_classifier(
    cfg: ClassifierConfig,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    data_fingerprint: str,
    publish: bool = False,
    progress: bool = True,
    *,
    test: tuple[Tensor, Tensor] | Callable[[], tuple[Tensor, Tensor]] | None = None,
    max_seconds: float | None = None,
) -> tuple[Classifier, dict]:
    """The classifier of ``(cfg, data)``: loaded from the artifacts/cache, else trained (resumably) and saved.

    The cache key covers ``cfg``, ``num_classes``, the image size and count, and ``data_fingerprint`` (e.g.
    :func:`fingerprint` of the training set, or a dataset config hash), so other data means another key.
    Training resumes from and checkpoints into ``<key>.resume.safetensors`` beside the artifact, which is
    deleted once the artifact is saved.

    Args:
        cfg: Training settings.
        images: ``[N, 3, S, S]`` ``torch.uint8`` training images (only their shape is used on a cache hit).
        labels: ``[N]`` ``torch.int64``.
        num_classes: Number of classes.
        data_fingerprint: Identifies the training data (recorded as the manifest's ``data`` and checked).
        publish: Save into the committed ``artifacts/`` instead of the scratch cache.
        progress: Show the training bar.
        test: ``(images, labels)`` of the test split, or a function returning them (called only when
            training): the trained classifier's top-1 accuracy on it is recorded as the manifest's
            ``test_accuracy`` (with ``test_n``, the number of test images), and the accuracy on its first
            2000 images after every epoch as the history's ``monitor_acc`` (to watch long runs).
        max_seconds: Time budget of this call's training.

    Returns:
        ``(model, manifest)``: the model (eval, frozen) and the artifact manifest plus a ``history`` entry
        (per-epoch lists as returned by :func:`train_classifier`).

    Raises:
        TrainingIncomplete: ``max_seconds`` ran out; the checkpoint is written: call again to resume.
    """
    _check_images(images)
    _check_labels(labels, images.shape[0], num_classes)
    if not isinstance(data_fingerprint, str) or not data_fingerprint:
        raise ValueError(f"data_fingerprint must be a non-empty str, got {data_fingerprint!r}")
    size = images.shape[-1]
    _check_arch_size(cfg.arch, size)
    config = {**cfg.to_dict(), "num_classes": num_classes, "image_size": size, "n_images": images.shape[0],
              "data": data_fingerprint}
    key = config_key(config, CACHE_VERSION)
    for pub in (True, False):
        path = artifact_path(STAGE, config, CACHE_VERSION, pub)
        if artifact_exists(path):
            log.info("found cached %s (%s), loading", STAGE, path.name)
            return _load_classifier(path, cfg, num_classes, size, data_fingerprint)

    final = artifact_path(STAGE, config, CACHE_VERSION, publish)
    if publish:
        check_may_compute(f"classifier {cfg.arch} ({key})", "make classifiers DATASET=<dataset>")
    resume = final.with_name(f"{key}.resume.safetensors")
    split = _test_split(test)
    monitor = None
    if split is not None:  # class-stratified: the CIFAR-10 test set is sorted by class
        from paperlib.data import stratified_subset

        rows = stratified_subset(split[1], n=min(_MONITOR_N, len(split[1])), seed=0)
        monitor = (split[0][rows], split[1][rows])
    try:
        model, history = train_classifier(cfg, images, labels, num_classes, progress=progress, checkpoint=resume,
                                          max_seconds=max_seconds, monitor=monitor)
    except TrainingIncomplete as exc:
        raise TrainingIncomplete(f"training incomplete, call again to resume ({exc})") from None
    manifest = {
        "stage": STAGE, "version": CACHE_VERSION, "key": key, "config": config, "data": data_fingerprint,
        "wall_time_s": round(math.fsum(history["seconds"]), 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paperlib": __version__, "torch": torch.__version__, "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if split is not None:
        manifest["test_accuracy"] = accuracy(predict(model, split[0]), split[1])
        manifest["test_n"] = int(split[1].shape[0])
        log.info("%s classifier %s: test accuracy %.4f", cfg.arch, key, manifest["test_accuracy"])
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"history.{k}": torch.tensor(v, dtype=torch.float64) for k, v in history.items()})
    save_artifact(final, tensors, manifest)
    delete_artifact(resume)
    return _load_classifier(final, cfg, num_classes, size, data_fingerprint)


def _load_classifier(path: Path, cfg: ClassifierConfig, num_classes: int, size: int, data_fingerprint: str
                     ) -> tuple[Classifier, dict]:
    tensors, manifest = load_artifact(path, expect={"data": data_fingerprint})
    key = path.name.split(".")[0]
    if manifest.get("key", key) != key:
        raise ProvenanceError(f"{path}: manifest key {manifest.get('key')!r}, expected {key!r}")
    model = make_classifier(cfg.arch, num_classes, size, mean=cfg.mean, std=cfg.std, net=cfg.net,
                            drop_path=cfg.drop_path)
    model.load_state_dict(strip_prefix(tensors, "model."))
    model.eval().requires_grad_(False)
    history = {k: v.tolist() for k, v in strip_prefix(tensors, "history.").items()}
    return model, {**manifest, "history": history}


def add_test_accuracy(path: str | Path, images: Tensor, labels: Tensor) -> float:
    """Record a saved classifier's test accuracy in its manifest, without retraining.

    The artifact is rewritten with the same tensors (checked afterwards) and its manifest plus
    ``test_accuracy`` and ``test_n``; its key and file name are unchanged.

    Args:
        path: A classifier artifact (``artifacts/classifier/<key>.safetensors``).
        images: ``[N, 3, S, S]`` ``torch.uint8`` test images of the data it was trained for.
        labels: ``[N]`` ``torch.int64``.

    Returns:
        The top-1 test accuracy.
    """
    path = Path(path)
    tensors, manifest = load_artifact(path)
    c = manifest["config"]
    cfg = ClassifierConfig(**{f.name: c[f.name] for f in fields(ClassifierConfig) if f.name in c})
    model, _ = _load_classifier(path, cfg, c["num_classes"], c["image_size"], manifest["data"])
    acc = accuracy(predict(model, images), labels)
    kept = {k: v for k, v in manifest.items() if k not in ("sha256", "file", "format", "tensors_sha256")}
    save_artifact(path, tensors, {**kept, "test_accuracy": acc, "test_n": int(labels.shape[0])})
    again, _ = load_artifact(path)
    if again.keys() != tensors.keys() or not all(torch.equal(again[k], tensors[k]) for k in tensors):
        raise RuntimeError(f"{path}: rewritten tensors differ from the original")  # pragma: no cover
    return acc


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


# ----------------------------------------------------------------------------------------------------------
# The paper's pretrained ImageNet classifiers (ImageNet20, profile "paper")
# ----------------------------------------------------------------------------------------------------------

PRETRAINED_IMAGENET: dict[str, str] = {
    "vit": "vit_large_patch14_clip_224.laion2b_ft_in12k_in1k",
    "swinv2": "swinv2_base_window12to16_192to256.ms_in22k_ft_in1k",
    "convnextv2": "convnextv2_base.fcmae_ft_in22k_in1k_384",
}
"""The paper's ensemble (App. H.1 [S]: ViT-Large pretrained on ImageNet-12k at 224 px, Swin-V2 on 22k at 256,
ConvNeXt-V2 on 22k at 384); the exact variants were lost [L], these timm models are the spec's suggestion [O]."""


class SubsetClassifier(nn.Module):
    """An ImageNet-1k classifier restricted to some of its classes, on the book's image convention.

    ``logits = net(normalise(resize(x)))[:, class_indices]``: float images ``[B, 3, H, W]`` in ``[0, 1]`` are
    resized (antialiased) to the network's input size and normalised with its statistics; the logits come back
    on the input's device (the network may live on a GPU).

    Args:
        net: A timm network with 1000 ImageNet outputs.
        class_indices: ImageNet ids of the book's labels ``0..C-1``.
        arch: Name of its family (shown in tables).
        input_size: Its input side.
        mean: Per-channel mean of its ``[0, 1]`` inputs.
        std: Per-channel standard deviation.
        interpolation: Resize mode (``"bicubic"``, ``"bilinear"``).
    """

    def __init__(self, net: nn.Module, class_indices: Sequence[int], arch: str, input_size: int,
                 mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic"):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must hold 3 values, std > 0; got mean={mean!r}, std={std!r}")
        self.net, self.arch, self.image_size = net, arch, int(input_size)
        self.interpolation = interpolation if interpolation in ("bicubic", "bilinear") else "bilinear"
        self.num_classes = len(class_indices)
        self.register_buffer("index", torch.tensor([int(c) for c in class_indices]), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, C]`` of float images ``[B, 3, H, W]`` in ``[0, 1]``, on ``x``'s device."""
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"x must be a float tensor of shape [B, 3, H, W] in [0, 1], got {x.dtype} "
                             f"{tuple(x.shape)}")
        out_device, s = x.device, self.image_size
        x = x.to(self.mean.device)
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode=self.interpolation, align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)[:, self.index].to(out_device)


def pretrained_classifiers(class_indices: Sequence[int], names: dict[str, str] | None = None,
                           device: str | torch.device = "cpu", pretrained: bool = True) -> dict[str, SubsetClassifier]:
    """timm's ImageNet classifiers (default :data:`PRETRAINED_IMAGENET`) restricted to ``class_indices``.

    Args:
        class_indices: ImageNet ids of the book's labels.
        names: ``{arch: timm model name}``.
        device: Where the networks run.
        pretrained: Load timm's pretrained weights (downloaded into the Hugging Face cache on first use);
            ``False`` (tests): random weights, nothing downloaded.

    Returns:
        ``{arch: SubsetClassifier}`` in eval mode, frozen.
    """
    import timm

    out = {}
    for arch, name in (names or PRETRAINED_IMAGENET).items():
        net = timm.create_model(name, pretrained=pretrained)
        cfg = net.pretrained_cfg
        out[arch] = SubsetClassifier(net, class_indices, arch, cfg["input_size"][-1], cfg["mean"], cfg["std"],
                                     cfg.get("interpolation", "bicubic")).eval().requires_grad_(False).to(device)
    return out


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
    progress: bool = True, *, recipe: str | None = None, max_seconds: float | None = None, record: bool = True,
    archs: Sequence[str] = CLASSIFIER_ARCHS,
) -> dict[str, Classifier]:
    """The three classifiers of a chapter's dataset (one per :data:`CLASSIFIER_ARCHS`), trained on
    :func:`classifier_data`. With ``epochs`` (chapter 2) they are trained or loaded and the setting recorded;
    with ``epochs=None`` the recorded setting is reused (later chapters).

    Args:
        cdm: A :class:`paperlib.train.BookCDM`.
        profile: ``"full"`` saves into ``artifacts/``.
        dataset: Dataset name (key of the recorded choice).
        epochs: Epochs for every family (int), per family (dict; missing ones from the recipe), ``{}`` for
            the recipe's, or ``None`` to reuse chapter 2's recorded choice.
        seed: Training seed (recorded with the epochs).
        progress: tqdm bars.
        recipe: A :data:`CLASSIFIER_RECIPES` key; ``None``: :data:`BOOK_CLASSIFIER_RECIPE` (or, with
            ``epochs=None``, the recorded one). Recorded with the epochs when it is not ``"v2"``.
        max_seconds: Training budget of the whole call (the families train one after another).
        record: Record the setting (with ``epochs``); the CLI does not record a recipe the book does not use.
        archs: The families to train or load (the CLI trains one per core with ``--arch``).

    Returns:
        ``{arch: classifier}`` in eval mode, for ``archs``.

    Raises:
        TrainingIncomplete: ``max_seconds`` ran out; call again to resume.
    """
    from paperlib.selection import load_choice, record_choice

    unknown = sorted(set(archs) - set(CLASSIFIER_ARCHS))
    if unknown or not archs:
        raise ValueError(f"archs must be a non-empty subset of {CLASSIFIER_ARCHS}, got {list(archs)}")
    if cdm.recipe.data.name == "imagenet20":  # the paper's pretrained ensemble, nothing to train
        from paperlib.imagenet import IMAGENET20_INDICES
        from paperlib.setup import book_device

        if epochs is not None and record:
            record_choice(profile, dataset, "classifiers", {"pretrained": PRETRAINED_IMAGENET}, "02_t_star")
        return pretrained_classifiers(IMAGENET20_INDICES, device=book_device())
    if epochs is None:
        spec = load_choice(profile, dataset, "classifiers")
        per_arch, seed = spec["epochs"], spec["seed"]
        recipe = spec.get("recipe", "v2") if recipe is None else recipe
    else:
        recipe = BOOK_CLASSIFIER_RECIPE.get(dataset, "v2") if recipe is None else recipe
        base = {a: recipe_config(recipe, dataset, a).epochs for a in CLASSIFIER_ARCHS}
        per_arch = {a: epochs for a in CLASSIFIER_ARCHS} if isinstance(epochs, int) else {**base, **epochs}
        if record:
            value = {"epochs": per_arch, "seed": seed, **({} if recipe == "v2" else {"recipe": recipe})}
            record_choice(profile, dataset, "classifiers", value, "02_t_star")
    data = classifier_data(cdm)
    images, labels = load_dataset(data, "train")
    fp = fingerprint(images, labels)
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    out = {}
    for arch in (a for a in CLASSIFIER_ARCHS if a in archs):
        cfg = recipe_config(recipe, dataset, arch, per_arch[arch], seed)
        budget = None if deadline is None else max(0.0, deadline - time.perf_counter())
        out[arch], _ = load_or_train_classifier(cfg, images, labels, len(cdm.classes), fp,
                                                publish=profile == "full", progress=progress,
                                                test=partial(load_dataset, data, "test"), max_seconds=budget)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m paperlib.classifiers``: train the book's three classifiers of a dataset ahead of chapter 2
    (which then loads them), e.g. in the background while the CDM trains; one after another, in resumable
    pieces (``--max-minutes``: stop with a checkpoint, call again to resume)."""
    import argparse
    from types import SimpleNamespace

    from paperlib.data import TRAINED_DATASETS
    from paperlib.train import cdm_recipe

    parser = argparse.ArgumentParser(prog="python -m paperlib.classifiers", description=main.__doc__)
    parser.add_argument("--dataset", choices=TRAINED_DATASETS, required=True)
    parser.add_argument("--profile", choices=["smoke", "full"], default="full")
    parser.add_argument("--recipe", choices=tuple(CLASSIFIER_RECIPES), default=None,
                        help="classifier recipe (default: the book's, BOOK_CLASSIFIER_RECIPE)")
    parser.add_argument("--epochs", type=int, default=None, help="for every family (default: the recipe's)")
    parser.add_argument("--arch", choices=CLASSIFIER_ARCHS, action="append", default=None,
                        help="train only this family (repeatable; default: all three, one after another)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop with a checkpoint after this long (call again to resume)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = cdm_recipe(args.dataset, args.profile)
    stand_in = SimpleNamespace(recipe=recipe, classes=recipe.data.classes)  # the data is all they need of a CDM
    book = BOOK_CLASSIFIER_RECIPE.get(args.dataset, "v2")
    chosen = args.recipe or book
    budget = None if args.max_minutes is None else 60 * args.max_minutes
    print(f"{args.dataset}: classifier recipe {chosen} (the book uses {book}), threads {torch.get_num_threads()}",
          flush=True)
    try:
        models = book_classifiers(stand_in, args.profile, args.dataset, {} if args.epochs is None else args.epochs,
                                  recipe=chosen, max_seconds=budget, record=chosen == book and not args.arch,
                                  archs=args.arch or CLASSIFIER_ARCHS)
    except TrainingIncomplete as exc:
        print(f"paused: {exc}")
        return
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the step finished and the checkpoint is written
        print("interrupted: checkpoint written; run the same command again to resume", flush=True)
        raise SystemExit(130) from None
    images, labels = load_dataset(classifier_data(stand_in), "test")
    scores = ensemble_accuracy(list(models.values()), images, labels)
    for arch, acc in zip(models, scores["per_model"]):
        print(f"{arch}: test accuracy {acc:.3f}")
    if len(models) == len(CLASSIFIER_ARCHS):
        print(f"mean of the three {scores['mean']:.3f}, softmax ensemble {scores['ensemble']:.3f}")


if __name__ == "__main__":
    main()
