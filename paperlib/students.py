"""The students ``g_φ`` of CaDistill and its baselines: CIFAR-style ResNets built from timm's blocks.

The paper trains a ResNet-18 for 200 epochs on CIFAR-10 (spec §8.8; 0.5–1 h per model on an A100). On our
2-core CPU one 50k-image ResNet-18 epoch takes about 27 min, so 4 methods × 3 seeds × 200 epochs would take
months. We use the CIFAR ResNets of He et al. (2016, §4.2) instead [O]: depth ``6n + 2``, a 3×3 stem conv, three
stages of ``n`` BasicBlocks at widths 16-32-64 (strides 1, 2, 2, with 1×1 projection shortcuts where the shape
changes), global average pooling and a linear classifier. **ResNet-20** (``n = 3``, 0.27M parameters) reaches
about 91–92% on CIFAR-10 in the literature, and one epoch costs about 2.5 CPU-minutes here. The stages and blocks
come from timm (:func:`timm.models.resnet.make_blocks`, ``BasicBlock``; the last BN of every residual branch is
zero-initialised, timm's ``zero_init_last``). Only the stem and the head are written here.

The same net serves both datasets: at 32×32 (CIFAR-10) its stages work at 32, 16 and 8 px; at 16×16 (shapes)
at 16, 8 and 4 px. The smoke profile uses a ResNet-8 (``n = 1``) at widths 8-16-32.

The student feature ``h`` of Eqs. 3–5 is the penultimate, globally average-pooled feature (64-d for ResNet-20),
with no projection head (spec §8.1 and §12 #8: the paper stresses "without introducing additional parameters").

Conventions (as :mod:`paperlib.classifiers`): a :class:`Student` takes float images in ``[0, 1]``
``[B, 3, S, S]`` and normalises them itself, so attacks working in ``[0, 1]`` (torchattacks) use it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from timm.models.resnet import BasicBlock, make_blocks
from torch import Tensor, nn

from paperlib.setup import channels_last

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CifarResNet", "Student", "StudentConfig", "make_student"]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel mean of the CIFAR-10 training images in ``[0, 1]`` (the usual constants)."""

CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
"""Per-channel standard deviation of the CIFAR-10 training images in ``[0, 1]``."""


@dataclass(frozen=True)
class StudentConfig:
    """A CIFAR ResNet of depth ``6 * blocks + 2`` (all [O], see the module docstring).

    Attributes:
        blocks: BasicBlocks per stage ``n`` (3: ResNet-20; 1: ResNet-8).
        widths: Channels of the three stages (He et al.: 16, 32, 64).
        mean: Per-channel mean of the ``[0, 1]`` inputs, subtracted in :meth:`Student.forward`.
        std: Per-channel standard deviation of the inputs.
    """

    blocks: int = 3
    widths: tuple[int, int, int] = (16, 32, 64)
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    def __post_init__(self) -> None:
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1:
            raise ValueError(f"blocks must be an int >= 1, got {self.blocks!r}")
        if len(self.widths) != 3 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"widths must be three ints >= 1, got {self.widths!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must hold 3 values, std > 0; got {self.mean!r}, {self.std!r}")

    @property
    def depth(self) -> int:
        """Weighted layers: ``6 n + 2`` (20 for ResNet-20)."""
        return 6 * self.blocks + 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet from timm's blocks: 3×3 stem, three stages, global average pool, linear head.

    Args:
        num_classes: Classes of the linear head.
        blocks: BasicBlocks per stage.
        widths: Stage widths.
    """

    def __init__(self, num_classes: int, blocks: int = 3, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        # make_blocks gives stage i stride 2 for i > 0 and a 1x1 conv + BN projection where the shape changes.
        stages, _ = make_blocks((BasicBlock,) * 3, tuple(widths), (blocks,) * 3, widths[0], output_stride=32)
        self.stages = nn.Sequential(*(m for _, m in stages))
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # as timm's ResNet.init_weights
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, 3, S, S]`` normalised images -> ``[B, widths[-1]]`` pooled penultimate features ``h``."""
        return self.stages(self.act1(self.bn1(self.conv1(x)))).mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class Student(nn.Module):
    """A student network behind a per-channel normalisation (inputs: float images in ``[0, 1]``).

    Args:
        net: A :class:`CifarResNet`.
        cfg: Its configuration (kept for the artifact).
        num_classes: Classes.
        image_size: Image side ``S`` it is trained at.
    """

    def __init__(self, net: CifarResNet, cfg: StudentConfig, num_classes: int, image_size: int):
        super().__init__()
        self.net, self.cfg, self.num_classes, self.image_size = net, cfg, num_classes, image_size
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1))

    def _check(self, x: Tensor) -> None:
        s = self.image_size
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s) or not x.is_floating_point():
            desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a float tensor of shape [B, 3, {s}, {s}] in [0, 1], got {desc}")

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [B, C], h [B, d])``: the classifier output and the pooled penultimate feature it reads.

        Args:
            x: ``[B, 3, S, S]`` float images in ``[0, 1]``.
        """
        self._check(x)
        h = self.net.forward_features((x - self.mean) / self.std)
        return self.net.fc(h), h

    def features(self, x: Tensor) -> Tensor:
        """``h = g_φ(x)`` ``[B, d]`` (spec §8.1), e.g. for the students' feature-quality probes."""
        return self.logits_and_features(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, num_classes]`` logits of ``[B, 3, S, S]`` float images in ``[0, 1]``."""
        return self.logits_and_features(x)[0]


def make_student(cfg: StudentConfig, num_classes: int, image_size: int, seed: int = 0) -> Student:
    """A freshly initialised :class:`Student` (the global RNG is left untouched).

    Args:
        cfg: Depth and widths.
        num_classes: Classes, ``>= 2``.
        image_size: Image side (16 or 32 here; any side divisible by 4 works).
        seed: Seed of the initialisation.

    Returns:
        The student in train mode.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be an int >= 4 divisible by 4, got {image_size!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CifarResNet(num_classes, cfg.blocks, cfg.widths)
    return channels_last(Student(net, cfg, num_classes, image_size))
