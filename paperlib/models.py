"""Class-conditional pixel-space diffusion models (CDMs) built on diffusers' ``UNet2DModel`` (spec §3.4, §8.8),
and the interface every CDM of the book offers (:class:`CDM`: this UNet, and the latent DiT of
:mod:`paperlib.dit`).

A :class:`ClassConditionalUNet` wraps a ``UNet2DModel`` with ``num_class_embeds = num_classes + 1``: label
``num_classes`` is the null class ``∅`` of classifier-free guidance, learned through label dropout. It is an
``eps_model`` in the sense of :mod:`paperlib.diffusion` (``model(x_t, t, y) -> eps``) and exposes the internal
activations ``f_{l,t}(x_t, c)`` the paper differentiates (after the mid block for UNets, App. E) through a
truncated forward pass (:meth:`ClassConditionalUNet.features`).

Layer names: ``"conv_in"``, ``"down.{i}"`` (output of down block ``i``), ``"mid"``, ``"up.{i}"`` (output
of up block ``i``); :meth:`ClassConditionalUNet.layer_names` lists them in forward order.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from paperlib.setup import channels_last
from paperlib.validate import check_labels, check_tensor

NUM_TIMESTEPS = 1000
"""``T`` of the schedule the book's CDMs are trained with (``TrainConfig.T``); the default time range of
:class:`ClassConditionalUNet`. A module constant, not a :class:`CDMConfig` field: ``CDMConfig.to_dict()`` is
hashed into the cache keys of committed artifacts."""

LAYER_SYNTAX = ("conv_in", "down.{i}", "mid", "up.{i}", "block.{i}")
"""Forms of a feature layer name (UNets: the first four; DiTs: ``block.{i}``, the output of transformer block
``i``); which indices ``i`` exist depends on the model (:meth:`CDM.layer_names`)."""
_LAYER_RE = re.compile(r"conv_in|mid|(down|up|block)\.(0|[1-9][0-9]*)")


def check_layer_syntax(name: str, layer: object) -> str:
    """Check that ``layer`` has the form of a feature layer name (:data:`LAYER_SYNTAX`), model-independently.

    Raises:
        ValueError: If it does not; the message names ``name``.
    """
    if not isinstance(layer, str) or _LAYER_RE.fullmatch(layer) is None:
        raise ValueError(f"{name} must be a layer name of the form {' | '.join(LAYER_SYNTAX)} (i = 0, 1, ...), "
                         f"got {layer!r}")
    return layer


@runtime_checkable
class CDM(Protocol):
    """What the chapters need of a class-conditional diffusion model, pixel-space or latent.

    The diffusion runs on ``x`` of shape ``[B, *latent_shape]``: images in ``[-1, 1]`` for a pixel model
    (:class:`ClassConditionalUNet`, ``encode``/``decode`` are the identity), VAE latents for a latent one
    (:class:`paperlib.dit.LatentDiT`, spec §1: ``z = 0.18215 E(image)``). Labels are ``0..num_classes - 1``
    and ``null_class`` (``= num_classes``), the unconditional branch of classifier-free guidance.

    Attributes:
        data_range: Range of the clean ``x_0`` (:func:`paperlib.diffusion.ddim_invert` checks it); ``None``
            for unbounded latents, where clamping the predicted ``x_0`` (``clip_x0``) is meaningless.
        jacobian_layer: The layer ``l`` whose Jacobian the paper decomposes for this architecture (App. E:
            after the mid block for UNets, the last block for DiT).
        jacobian_chunk_size: Tangents per autodiff pass in CLARID's Jacobian products (``None``: all at once).
    """

    data_range: tuple[float, float] | None
    jacobian_layer: str
    jacobian_chunk_size: int | None

    def __call__(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor: ...  # eps_theta(x_t, t, y), [B, *latent_shape]

    @property
    def num_classes(self) -> int: ...

    @property
    def null_class(self) -> int: ...

    @property
    def latent_shape(self) -> tuple[int, int, int]: ...

    def layer_names(self) -> list[str]: ...

    def features(self, x_t: Tensor, t: Tensor, y: Tensor, layer: str) -> Tensor: ...

    def pooled_features(self, x_t: Tensor, t: Tensor, y: Tensor, layer: str) -> Tensor: ...

    def encode(self, images: Tensor) -> Tensor: ...  # [B, 3, H, W] in [-1, 1] -> clean x_0 [B, *latent_shape]

    def decode(self, x0: Tensor) -> Tensor: ...  # clean x_0 -> [B, 3, H, W] images, nominally in [-1, 1]


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def clips_x0(model: CDM, clip_x0: bool) -> bool:
    """Whether to clamp the predicted clean sample when decoding with ``model``: only if asked and the model's
    clean samples are bounded (pixels; never VAE latents)."""
    return bool(clip_x0) and model.data_range is not None


@dataclass(frozen=True)
class CDMConfig:
    """Architecture of a class-conditional UNet (all values ours, chosen for a 2-core CPU; spec §8.8 [O]).

    Attributes:
        sample_size: Image side ``H = W``.
        in_channels: Image channels.
        num_classes: Real classes; label ``num_classes`` is the null class.
        block_out_channels: Channels per resolution level (one down and one up block each).
        layers_per_block: ResNet blocks per down block (up blocks get one more, as in diffusers).
        attention_levels: Levels (indices into ``block_out_channels``) whose blocks have self-attention.
        norm_num_groups: GroupNorm groups.
        attention_head_dim: Channels per attention head.
    """

    sample_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (1,)
    norm_num_groups: int = 8
    attention_head_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CDMConfig:
        d = dict(d)
        for key in ("block_out_channels", "attention_levels"):
            d[key] = tuple(d[key])
        return cls(**d)


def _per_sample(name: str, v: Tensor | int, x: Tensor) -> Tensor:
    """``v`` as an int64 ``[B]`` tensor on ``x``'s device (a scalar or a ``[1]`` tensor is broadcast)."""
    v = torch.as_tensor(v, device=x.device)
    check_tensor(name, v, dtype="integer")
    if v.shape in ((), (1,)):
        v = v.reshape(()).expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape [B] = [{x.shape[0]}] (or be a scalar), got {tuple(v.shape)}")
    return v.long()


def make_unet(cfg: CDMConfig) -> UNet2DModel:
    """The diffusers ``UNet2DModel`` of ``cfg`` (random init; seed torch before calling for determinism)."""
    levels = len(cfg.block_out_channels)
    if levels < 1 or any(not 0 <= i < levels for i in cfg.attention_levels):
        raise ValueError(f"attention_levels must index 0..{levels - 1}, got {cfg.attention_levels}")
    if cfg.sample_size % (2 ** (levels - 1)):
        raise ValueError(f"sample_size={cfg.sample_size} must be divisible by 2^(levels-1) = {2 ** (levels - 1)}")
    if any(c % cfg.norm_num_groups for c in cfg.block_out_channels):
        raise ValueError(f"block_out_channels {cfg.block_out_channels} must be multiples of norm_num_groups")
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i in cfg.attention_levels else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
        num_class_embeds=cfg.num_classes + 1,
    )


class ClassConditionalUNet(nn.Module):
    """A CDM ``eps_theta(x_t, t, c)`` with a null class and truncated forward passes for features.

    Args:
        cfg: Architecture.
        num_timesteps: ``T``: the model accepts times ``0..T`` (not saved in the state dict or the config).
    """

    data_range: tuple[float, float] = (-1.0, 1.0)
    """Range of clean images (``paperlib.data.to_model_range``); :func:`paperlib.diffusion.ddim_invert` checks it."""

    jacobian_layer: str = "mid"
    """The paper's Jacobian layer for UNets: the features after the mid block (h-space, App. E [S])."""

    jacobian_chunk_size: int | None = None
    """All tangents of a Jacobian product in one autodiff pass (the book's UNets are small)."""

    def __init__(self, cfg: CDMConfig, num_timesteps: int = NUM_TIMESTEPS):
        super().__init__()
        self.cfg = cfg
        self.num_timesteps = int(num_timesteps)
        with torch.random.fork_rng(devices=[]):  # draws from the caller's state, leaves it as it was
            self.unet = channels_last(make_unet(cfg))

    @property
    def null_class(self) -> int:
        """Label of the unconditional branch ``∅``."""
        return self.cfg.num_classes

    @property
    def num_classes(self) -> int:
        """Real classes (labels ``0..num_classes - 1``)."""
        return self.cfg.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one sample of the diffusion: the image itself (pixel space)."""
        return (self.cfg.in_channels, self.cfg.sample_size, self.cfg.sample_size)

    def encode(self, images: Tensor) -> Tensor:
        """Clean ``x_0`` of images in ``[-1, 1]``: the images themselves (pixel space)."""
        return images

    def decode(self, x0: Tensor) -> Tensor:
        """Images of clean samples ``x_0``: the samples themselves (pixel space)."""
        return x0

    def layer_names(self) -> list[str]:
        """Feature layers in forward order."""
        n_down, n_up = len(self.unet.down_blocks), len(self.unet.up_blocks)
        return ["conv_in", *[f"down.{i}" for i in range(n_down)], "mid", *[f"up.{i}" for i in range(n_up)]]

    def _check(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        c, s = self.cfg.in_channels, self.cfg.sample_size
        check_tensor("x_t", x, dtype="floating")
        if x.ndim != 4 or x.shape[1:] != (c, s, s):
            raise ValueError(f"x_t must be [B, {c}, {s}, {s}], got {tuple(x.shape)}")
        check_tensor("x_t", x, nonempty=True, finite=True)  # one cheap pass, next to a UNet forward
        t, y = _per_sample("t", t, x), _per_sample("y", y, x)
        T = self.num_timesteps
        if int(t.min()) < 0 or int(t.max()) > T:
            raise ValueError(f"t must be in 0..T = 0..{T}, got values in {int(t.min())}..{int(t.max())}")
        return t, check_labels("y", y, num_classes=self.cfg.num_classes, allow_null=True)

    def _embedding(self, t: Tensor, y: Tensor, dtype: torch.dtype) -> Tensor:
        u = self.unet
        emb = u.time_embedding(u.time_proj(t).to(dtype))
        return emb + u.class_embedding(y).to(dtype)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Noise prediction ``eps_theta(x_t, t, y)``.

        Args:
            x_t: ``[B, C, H, W]`` noisy images in the model range.
            t: ``[B]`` (or scalar) integer times in ``0..T`` (``T = num_timesteps``).
            y: ``[B]`` (or scalar) integer labels in ``0..num_classes`` (``num_classes`` = null).

        Returns:
            ``[B, C, H, W]`` predicted noise.

        Raises:
            ValueError: If ``x_t`` is not a non-empty finite floating ``[B, C, H, W]`` tensor, or ``t`` / ``y``
                are not integers of shape ``[B]`` in their ranges.
        """
        t, y = self._check(x_t, t, y)
        return self.unet(x_t, t, class_labels=y).sample

    def features(self, x_t: Tensor, t: Tensor, y: Tensor, layer: str = "mid") -> Tensor:
        """The internal activation ``f_{l,t}(x_t, c)`` after block ``layer`` (Eq. 1), by a truncated forward.

        Stops right after ``layer``: the blocks above it are not evaluated, so a Jacobian through this
        function costs only the layers it depends on.

        Args:
            x_t: ``[B, C, H, W]`` noisy images.
            t: ``[B]`` or scalar integer times.
            y: ``[B]`` or scalar labels.
            layer: One of :meth:`layer_names` (default ``"mid"``: h-space, as the paper for UNets).

        Returns:
            ``[B, C_l, H_l, W_l]`` activation.

        Raises:
            ValueError: If ``layer`` is unknown, or on the input checks of :meth:`forward`.
        """
        names = self.layer_names()
        if layer not in names:
            raise ValueError(f"layer must be one of {names}, got {layer!r}")
        t, y = self._check(x_t, t, y)
        u = self.unet
        emb = self._embedding(t, y, x_t.dtype)
        h = u.conv_in(x_t)
        if layer == "conv_in":
            return h
        skips: tuple[Tensor, ...] = (h,)
        for i, block in enumerate(u.down_blocks):
            h, res = block(hidden_states=h, temb=emb)
            skips += res
            if layer == f"down.{i}":
                return h
        h = u.mid_block(h, emb)
        if layer == "mid":
            return h
        for i, block in enumerate(u.up_blocks):
            n = len(block.resnets)
            h = block(h, skips[-n:], emb)
            skips = skips[:-n]
            if layer == f"up.{i}":
                return h
        raise AssertionError("unreachable")

    def pooled_features(self, x_t: Tensor, t: Tensor, y: Tensor, layer: str = "mid") -> Tensor:
        """Spatially average-pooled :meth:`features`, ``[B, C_l]`` (the 1-D Canonical Feature form, §3.7)."""
        return self.features(x_t, t, y, layer).mean(dim=(-2, -1))


def num_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
