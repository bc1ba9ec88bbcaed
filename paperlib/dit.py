"""The paper's CDM: a latent class-conditional DiT (Peebles & Xie 2023) behind the book's CDM interface.

:class:`LatentDiT` pairs diffusers' ``DiTTransformer2DModel`` with the ``AutoencoderKL`` it was trained in
(the SD VAE). The diffusion runs on VAE latents ``z = s E(x)``, ``s = 0.18215`` (the VAE config's
``scaling_factor``; spec §1), of shape ``4 x 32 x 32`` for DiT-XL/2 at 256 px, so CLARID's projection acts on the
flattened latent (``n = 4096``, spec §3.2) and its Jacobian (``m = 256 tokens x 1152 = 294,912`` rows, §3.5)
is only ever used matrix-free (:func:`paperlib.clarid.extraneous_directions`, Krylov or subspace).

What the DiT differs in, and how it is handled here:

- **learned sigma**: the transformer outputs ``2 C`` channels (``eps`` and the variance interpolation); ``eps``
  is the first ``C`` (spec §1, as diffusers' ``DiTPipeline``);
- **time**: the DiT was trained on indices ``0..T-1`` with ``alphas_cumprod[i]``, which is the book's
  ``alpha_bar[i + 1]`` (:mod:`paperlib.diffusion`: ``alpha_bar[0] = 1`` is clean data), so book time ``t`` is
  DiT index ``t - 1``; ``t = 0`` (the clean sample, where DDIM inversion starts) uses index 0;
- **labels**: the book's labels are ``0..C-1`` of a class subset (ImageNet20: ImageNet ids ``classes``) and
  ``C``, the null class, which maps to the transformer's own null id ``num_embeds_ada_norm`` (1000 for the
  ImageNet DiT; read from the config, never hard-coded);
- **CFG**: :func:`paperlib.diffusion.guided_eps` guides all ``C`` latent channels (spec §12 #22; the DiT repo's
  ``forward_with_cfg`` guides only the first 3, we do not copy that quirk);
- **features**: ``f_{l,t}`` is the output of transformer block ``l`` (layer ``"block.{l}"``), ``[B, N, D]``
  tokens; the paper's Jacobian layer is the last block (``l = 27`` for DiT-XL/2, App. E); Canonical Features
  average it over the tokens (§3.7, ``[B, D]``);
- **devices**: inputs are moved to the model's device; outputs stay there (callers move results to the CPU).

Weights come from ``from_pretrained`` (a hub id such as :data:`DIT_XL_2_256`, or a local folder with
``transformer/`` and ``vae/``): the tests save tiny random models with ``save_pretrained`` and load them back
through the same path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel
from torch import Tensor, nn

from paperlib.diffusion import DATA_RANGE_TOL, alpha_bar, linear_beta_schedule
from paperlib.models import _per_sample
from paperlib.train import BookCDM
from paperlib.validate import check_int, check_labels, check_tensor

DIT_XL_2_256 = "facebook/DiT-XL-2-256"
"""Hub id of the paper's CDM: DiT-XL/2 trained on ImageNet at 256 px, with the SD VAE (``ft-ema``)."""

LATENT_SCALE = 0.18215
"""The SD VAE's latent scaling factor (spec §1); used only when a VAE config does not give one."""

NUM_TIMESTEPS = 1000
"""``T`` of the DiT's linear schedule (beta 1e-4 to 0.02, as ADM/DDPM)."""

_BLOCK = "block.{}"


def _dit_null_id(transformer: DiTTransformer2DModel) -> int:
    """The transformer's own unconditional label: ``num_embeds_ada_norm``, if its label table has that row."""
    null = check_int("num_embeds_ada_norm", transformer.config.num_embeds_ada_norm, 1)
    rows = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
    if rows != null + 1:
        raise ValueError(f"the DiT's label table has {rows} rows for {null} classes: no null (CFG) embedding")
    return null


class LatentDiT(nn.Module):
    """A latent CDM ``eps_theta(z_t, t, c)``: a DiT transformer on the latents of a KL autoencoder.

    Args:
        transformer: diffusers ``DiTTransformer2DModel`` (``out_channels`` = ``in_channels``, or twice that for a
            learned-sigma head).
        vae: The ``AutoencoderKL`` whose latents the transformer was trained on.
        classes: Transformer class ids of the book's labels ``0..len(classes) - 1`` (e.g. the ImageNet20 ids);
            ``None``: the transformer's own ids ``0..num_embeds_ada_norm - 1``.
        num_timesteps: ``T`` of the schedule the DiT was trained with.
        vae_batch_size: Images per VAE pass in :meth:`encode` / :meth:`decode` (memory knob).
        jacobian_chunk_size: Tangents per autodiff pass in CLARID's Jacobian products (memory knob; the VJP
            through DiT-XL/2 keeps roughly half a gigabyte of activations per tangent, estimated).

    Raises:
        ValueError: If the transformer and the VAE do not fit together, the head is neither ``C`` nor ``2 C``
            channels, the label table has no null row, or a class id is out of range.
    """

    data_range = None
    """Clean samples are VAE latents: unbounded, never clamped (``clip_x0`` does not apply)."""

    pixel_range: tuple[float, float] = (-1.0, 1.0)
    """Range of the images :meth:`encode` takes (``paperlib.data.to_model_range``)."""

    def __init__(self, transformer: DiTTransformer2DModel, vae: AutoencoderKL, classes: Sequence[int] | None = None,
                 num_timesteps: int = NUM_TIMESTEPS, vae_batch_size: int = 16, jacobian_chunk_size: int | None = 8):
        super().__init__()
        self.transformer, self.vae = transformer, vae
        cfg = transformer.config
        self.channels = int(cfg.in_channels)
        if cfg.in_channels != vae.config.latent_channels:
            raise ValueError(f"the transformer takes {cfg.in_channels} channels, the VAE makes "
                             f"{vae.config.latent_channels}")
        out = transformer.out_channels
        if out not in (self.channels, 2 * self.channels):
            raise ValueError(f"the transformer outputs {out} channels; expected {self.channels} (eps) or "
                             f"{2 * self.channels} (eps and a learned sigma)")
        self.learned_sigma = out == 2 * self.channels
        self.dit_null_class = _dit_null_id(transformer)
        ids = list(range(self.dit_null_class)) if classes is None else [int(c) for c in classes]
        if not ids or len(set(ids)) != len(ids) or not all(0 <= c < self.dit_null_class for c in ids):
            raise ValueError(f"classes must be distinct transformer class ids in 0..{self.dit_null_class - 1}, "
                             f"got {classes!r}"[:300])
        self.register_buffer("label_map", torch.tensor([*ids, self.dit_null_class]), persistent=False)
        self.scale = float(getattr(vae.config, "scaling_factor", None) or LATENT_SCALE)
        self.num_timesteps = check_int("num_timesteps", num_timesteps, 1)
        self.vae_batch_size = check_int("vae_batch_size", vae_batch_size, 1)
        self.jacobian_chunk_size = None if jacobian_chunk_size is None else check_int(
            "jacobian_chunk_size", jacobian_chunk_size, 1)
        self.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        source: str = DIT_XL_2_256,
        classes: Sequence[int] | None = None,
        *,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: object,
    ) -> LatentDiT:
        """Load ``transformer/`` and ``vae/`` of a hub id or a local folder (diffusers' ``from_pretrained``).

        A ``scheduler/`` config beside them, if present, must describe the linear schedule assumed here.

        Args:
            source: Hub id (default :data:`DIT_XL_2_256`, downloaded into the Hugging Face cache on first use)
                or a folder holding ``transformer/`` and ``vae/`` (e.g. written by ``save_pretrained``).
            classes: See :class:`LatentDiT`.
            device: Where the model runs.
            revision: Hub revision (commit, branch or tag).
            local_files_only: Never touch the network.
            **kwargs: Passed to :class:`LatentDiT` (``vae_batch_size``, ``jacobian_chunk_size``).

        Raises:
            ValueError: If the scheduler config describes another schedule, or on :class:`LatentDiT`'s checks.
        """
        from diffusers.utils import is_accelerate_available

        opts = {"revision": revision, "local_files_only": local_files_only}
        low_mem = {"low_cpu_mem_usage": is_accelerate_available()}  # diffusers' default needs accelerate
        transformer = DiTTransformer2DModel.from_pretrained(source, subfolder="transformer", **opts, **low_mem)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **opts, **low_mem)
        T = _check_scheduler(source, opts)
        return cls(transformer, vae, classes, num_timesteps=T, **kwargs).to(device)

    # --- the CDM interface (paperlib.models.CDM) ---------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Real classes of the book's labels (``0..num_classes - 1``)."""
        return len(self.label_map) - 1

    @property
    def null_class(self) -> int:
        """The book's unconditional label (mapped to the transformer's ``num_embeds_ada_norm``)."""
        return self.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent (DiT-XL/2 at 256 px: ``(4, 32, 32)``)."""
        s = int(self.transformer.config.sample_size)
        return (self.channels, s, s)

    @property
    def image_size(self) -> int:
        """Pixel side of the images: the latent side times the VAE's downsampling ``2^(levels - 1)``."""
        return self.latent_shape[-1] * 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def jacobian_layer(self) -> str:
        """The paper's Jacobian layer for DiT: the output of the last block (App. E; 27 for DiT-XL/2)."""
        return _BLOCK.format(len(self.transformer.transformer_blocks) - 1)

    def layer_names(self) -> list[str]:
        """``block.0 .. block.{L-1}``: the outputs of the transformer blocks, in forward order."""
        return [_BLOCK.format(i) for i in range(len(self.transformer.transformer_blocks))]

    def _check(self, x: Tensor, t: Tensor | int, y: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs on the model's device; ``(x, DiT time index, DiT label)``."""
        check_tensor("x_t", x, dtype="floating")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.latent_shape:
            raise ValueError(f"x_t must be [B, {', '.join(map(str, self.latent_shape))}], got {tuple(x.shape)}")
        check_tensor("x_t", x, nonempty=True, finite=True)
        x = x.to(self.label_map.device)
        t, y = _per_sample("t", t, x), _per_sample("y", y, x)
        if int(t.min()) < 0 or int(t.max()) > self.num_timesteps:
            raise ValueError(f"t must be in 0..T = 0..{self.num_timesteps}, got values in "
                             f"{int(t.min())}..{int(t.max())}")
        y = check_labels("y", y, num_classes=self.num_classes, allow_null=True)
        return x, (t - 1).clamp(min=0), self.label_map[y]

    def forward(self, x_t: Tensor, t: Tensor | int, y: Tensor | int) -> Tensor:
        """Noise prediction ``eps_theta(x_t, t, y)``: the first ``C`` output channels (learned-sigma head).

        Args:
            x_t: ``[B, C, h, w]`` noisy latents.
            t: ``[B]`` (or scalar) integer book times in ``0..T``.
            y: ``[B]`` (or scalar) book labels in ``0..num_classes`` (``num_classes`` = null).

        Returns:
            ``[B, C, h, w]`` predicted noise, on the model's device.

        Raises:
            ValueError: If ``x_t`` is not a non-empty finite floating ``[B, C, h, w]`` tensor, or ``t`` / ``y``
                are not integers of shape ``[B]`` in their ranges.
        """
        x, t, y = self._check(x_t, t, y)
        out = self.transformer(x, timestep=t, class_labels=y).sample
        return out[:, : self.channels]

    def _blocks(self, x: Tensor, t: Tensor, y: Tensor, last: int):
        """Yield the outputs of blocks ``0..last`` (the transformer's own forward, truncated)."""
        h = self.transformer.pos_embed(x)
        for block in self.transformer.transformer_blocks[: last + 1]:
            h = block(h, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, timestep=t,
                      cross_attention_kwargs=None, class_labels=y)
            yield h

    def _block_index(self, layer: str) -> int:
        names = self.layer_names()
        if layer not in names:
            raise ValueError(f"layer must be one of block.0..block.{len(names) - 1}, got {layer!r}")
        return names.index(layer)

    def features(self, x_t: Tensor, t: Tensor | int, y: Tensor | int, layer: str | None = None) -> Tensor:
        """``f_{l,t}(x_t, c)``: the output of block ``layer`` (Eq. 1), by a truncated forward.

        Args:
            x_t: ``[B, C, h, w]`` noisy latents.
            t: ``[B]`` or scalar integer times.
            y: ``[B]`` or scalar labels.
            layer: ``"block.{l}"``; default :attr:`jacobian_layer` (the last block).

        Returns:
            ``[B, N, D]`` tokens (DiT-XL/2: ``N = 256``, ``D = 1152``).

        Raises:
            ValueError: If ``layer`` is unknown, or on the input checks of :meth:`forward`.
        """
        last = self._block_index(self.jacobian_layer if layer is None else layer)
        x, t, y = self._check(x_t, t, y)
        *_, h = self._blocks(x, t, y, last)
        return h

    def pooled_features(self, x_t: Tensor, t: Tensor | int, y: Tensor | int, layer: str | None = None) -> Tensor:
        """:meth:`features` averaged over the tokens, ``[B, D]`` (the Canonical Feature form, §3.7)."""
        return self.features(x_t, t, y, layer).mean(dim=1)

    def pooled_features_many(self, x_t: Tensor, t: Tensor | int, y: Tensor | int,
                             layers: Sequence[str]) -> dict[str, Tensor]:
        """:meth:`pooled_features` of several layers from one forward pass (the layer x time sweep, App. G.1)."""
        index = {layer: self._block_index(layer) for layer in layers}
        x, t, y = self._check(x_t, t, y)
        wanted = {i: layer for layer, i in index.items()}
        out = {}
        for i, h in enumerate(self._blocks(x, t, y, max(index.values()))):
            if i in wanted:
                out[wanted[i]] = h.mean(dim=1)
        return {layer: out[layer] for layer in layers}

    def _check_images(self, images: Tensor) -> Tensor:
        s = self.image_size
        check_tensor("images", images, dtype="floating", nonempty=True, finite=True)
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must be [B, 3, {s}, {s}] (this VAE's size), got {tuple(images.shape)}")
        check_tensor("images", images, value_range=self.pixel_range, tol=DATA_RANGE_TOL,
                     range_note="map uint8 images with paperlib.data.to_model_range")
        return images.to(self.label_map.device)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Clean latents ``z_0 = s * mean(E(x))`` of images in ``[-1, 1]`` (the posterior mean: deterministic [O];
        DiT's training drew samples of the posterior).

        Args:
            images: ``[B, 3, S, S]`` floats in ``[-1, 1]``, ``S`` = :attr:`image_size`.

        Returns:
            ``[B, C, h, w]`` latents on the model's device.
        """
        x = self._check_images(images)
        parts = [self.vae.encode(x[i : i + self.vae_batch_size]).latent_dist.mean
                 for i in range(0, len(x), self.vae_batch_size)]
        return torch.cat(parts) * self.scale

    @torch.no_grad()
    def decode(self, x0: Tensor) -> Tensor:
        """Images ``D(z_0 / s)`` of clean latents, nominally in ``[-1, 1]`` (not clipped).

        Args:
            x0: ``[B, C, h, w]`` latents.

        Returns:
            ``[B, 3, S, S]`` images on the model's device.
        """
        check_tensor("x0", x0, dtype="floating", nonempty=True, finite=True)
        if x0.ndim != 4 or tuple(x0.shape[1:]) != self.latent_shape:
            raise ValueError(f"x0 must be [B, {', '.join(map(str, self.latent_shape))}], got {tuple(x0.shape)}")
        z = x0.to(self.label_map.device) / self.scale
        return torch.cat([self.vae.decode(z[i : i + self.vae_batch_size]).sample
                          for i in range(0, len(z), self.vae_batch_size)])


def _check_scheduler(source: str, opts: dict) -> int:
    """``T`` from a ``scheduler/`` config beside the weights (if any), checked against the linear schedule."""
    from diffusers import DDIMScheduler

    try:
        cfg = DDIMScheduler.load_config(source, subfolder="scheduler", **opts)
    except (OSError, ValueError):  # no scheduler config: the DiT's published schedule is assumed
        return NUM_TIMESTEPS
    expected = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    got = {k: cfg.get(k, v) for k, v in expected.items()}
    linear = got["beta_schedule"] == "linear"
    if not (linear and all(math.isclose(got[k], expected[k]) for k in ("beta_start", "beta_end"))):
        raise ValueError(f"the scheduler config of {source} describes {got}; paperlib assumes the DiT's {expected}")
    return int(cfg.get("num_train_timesteps", NUM_TIMESTEPS))


# --------------------------------------------------------------------------------------------------------------
# The book's ImageNet20 CDM
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedTraining:
    """What the chapters show of how a pretrained CDM was trained, and the noise schedule it was trained with.

    DiT-XL/2 (Peebles & Xie 2023, §4): AdamW at a constant 1e-4, batch 256, 7M steps, horizontal flips, EMA
    0.9999, label dropout 0.1; the linear schedule of ADM over ``T = 1000``.
    """

    steps: int = 7_000_000
    batch_size: int = 256
    T: int = NUM_TIMESTEPS
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def alpha_bar(self) -> Tensor:
        """The ``[T + 1]`` schedule (:func:`paperlib.diffusion.alpha_bar`)."""
        return alpha_bar(linear_beta_schedule(self.T, self.beta_start, self.beta_end))


@dataclass(frozen=True)
class DiTRecipe:
    """The pretrained CDM of a chapter's dataset: where its weights come from, its data, its training.

    Attributes:
        data: The chapter's images (``paperlib.data.DatasetConfig``, ImageNet20 at 256 px).
        source: Hub id or local folder of the weights (:meth:`LatentDiT.from_pretrained`).
        classes: Transformer class ids of the dataset's labels.
        train: The published training constants and schedule.
        revision: Hub revision.
    """

    data: object
    source: str
    classes: tuple[int, ...]
    train: PublishedTraining = PublishedTraining()
    revision: str | None = None

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "source": self.source, "classes": list(self.classes),
                "train": asdict(self.train), "revision": self.revision}


def dit_source() -> str:
    """Where the book's DiT comes from: ``$PAPERLIB_DIT`` (a hub id or a local folder) or :data:`DIT_XL_2_256`."""
    import os

    return os.environ.get("PAPERLIB_DIT", DIT_XL_2_256)


def book_dit_recipe(profile: str, source: str | None = None, data=None) -> DiTRecipe:
    """The ImageNet20 CDM of ``profile`` (``"paper"``): DiT-XL/2 256 on :data:`paperlib.imagenet.IMAGENET20_N`
    training images (class-stratified, seed 0) and the 1000 validation images.

    Args:
        profile: ``"paper"``.
        source: Weights (default :func:`dit_source`).
        data: Another ``DatasetConfig`` of ImageNet20 (tests: tiny images).

    Raises:
        ValueError: For a profile other than ``"paper"`` (the CPU profiles have no ImageNet chapter).
    """
    from paperlib.data import DatasetConfig
    from paperlib.imagenet import IMAGENET20_INDICES, IMAGENET20_N

    if profile != "paper":
        raise ValueError(f"the ImageNet20 DiT belongs to profile 'paper' (a GPU machine), got profile {profile!r}")
    if data is None:
        data = DatasetConfig("imagenet20", size=256, n_train=IMAGENET20_N, n_test=IMAGENET20_N)
    elif data.name != "imagenet20":
        raise ValueError(f"data must be an ImageNet20 config, got name={data.name!r}")
    return DiTRecipe(data, source or dit_source(), IMAGENET20_INDICES)


class BookDiT(BookCDM):
    """A :class:`paperlib.train.BookCDM` whose model was trained elsewhere (no loss history here)."""

    def losses(self) -> np.ndarray:
        """Empty: the DiT was trained by its authors, the book has no record of its losses."""
        return np.zeros(0, dtype=np.float32)


def load_book_dit(profile: str, device: str | torch.device = "cpu", source: str | None = None, data=None):
    """The chapters' ImageNet20 CDM (a :class:`paperlib.train.BookCDM`): the DiT on ``device`` and its images.

    The manifest's ``key`` hashes the recipe and the weights (so cached results follow the weights), ``data``
    fingerprints the images; ``final_loss`` and ``wall_time_s`` are NaN (trained elsewhere).
    """
    from paperlib.cache import config_key, module_fingerprint
    from paperlib.data import fingerprint, load_dataset

    recipe = book_dit_recipe(profile, source, data)
    images, labels = load_dataset(recipe.data, "train")  # before the weights: a missing ImageNet fails fast
    model = LatentDiT.from_pretrained(recipe.source, recipe.classes, device=device, revision=recipe.revision)
    if model.image_size != recipe.data.size:
        raise ValueError(f"the DiT of {recipe.source} makes {model.image_size}-px images, the data is "
                         f"{recipe.data.size} px")
    weights = {"transformer": module_fingerprint(model.transformer), "vae": module_fingerprint(model.vae)}
    manifest = {"key": config_key({**recipe.to_dict(), "weights": weights}), "config": recipe.to_dict(),
                "weights": weights, "parameters": sum(p.numel() for p in model.transformer.parameters()),
                "steps": recipe.train.steps, "final_loss": math.nan, "wall_time_s": math.nan,
                "data": fingerprint(images, labels)}
    return BookDiT(model, recipe, manifest, images, labels)
