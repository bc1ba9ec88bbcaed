"""Resumable DDPM training of class-conditional UNets (spec §2, Eq. 7; label dropout for CFG).

``train_cdm`` trains :class:`paperlib.models.ClassConditionalUNet` with the epsilon-loss
``E || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t, y') ||^2``, ``t ~ U{1..T}``, ``y' = ∅`` with
probability ``label_dropout``; Adam with linear warm-up, gradient clipping and an EMA of the weights.

Long runs are cut into pieces: a checkpoint (weights, EMA, optimizer state, loss history) is written
atomically every few minutes, on SIGTERM/Ctrl-C, and when a time budget runs out; calling again resumes
from it. Every minibatch is drawn from a generator seeded by ``(seed, step)``, so a run that is killed and
resumed sees exactly the batches of an uninterrupted one.

``python -m paperlib.train --dataset shapes --profile full --max-minutes 100`` runs (a piece of) the
training a chapter needs, in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from paperlib.cache import (
    PUBLISH_MAX_BYTES,
    ProvenanceError,
    artifact_exists,
    check_may_compute,
    config_key,
    delete_artifact,
    load_artifact,
    save_artifact,
)
from paperlib.checkpoint import flatten_optimizer, strip_prefix, unflatten_optimizer
from paperlib.data import TRAINED_DATASETS, DatasetConfig, fingerprint, load_dataset
from paperlib.diffusion import alpha_bar, linear_beta_schedule, q_sample
from paperlib.models import CDMConfig, ClassConditionalUNet, num_parameters
from paperlib.paths import ARTIFACTS_DIR, cache_dir
from paperlib.progress import tqdm

log = logging.getLogger(__name__)

STAGE = "cdm"
STAGE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation constants of a CDM (ours: the paper trains its CIFAR-10 CDM elsewhere, spec §8.8 [O]).

    Attributes:
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: Adam learning rate after warm-up.
        warmup_steps: Linear warm-up length.
        ema_decay: EMA decay of the weights (the EMA model is the one used everywhere).
        label_dropout: Probability of replacing the label by the null class (CFG, two-stage sampling).
        hflip: Random horizontal flips (CIFAR-10 yes; shapes no: some silhouettes are chiral).
        grad_clip: Max global gradient norm.
        T: Diffusion steps.
        beta_start: First beta of the linear schedule.
        beta_end: Last beta.
        seed: Seeds the initialisation and every minibatch.
    """

    steps: int = 20_000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 500
    ema_decay: float = 0.9995
    label_dropout: float = 0.1
    hflip: bool = False
    grad_clip: float = 1.0
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def alpha_bar(self) -> Tensor:
        """The ``[T + 1]`` schedule this model was trained with."""
        return alpha_bar(linear_beta_schedule(self.T, self.beta_start, self.beta_end))


@dataclass
class TrainResult:
    """What :func:`train_cdm` returns.

    Attributes:
        model: The EMA model (eval mode, frozen) if ``finished``, else the current EMA.
        losses: ``[steps_done]`` per-step training losses.
        step: Steps done so far.
        finished: Whether ``cfg.steps`` were reached.
        wall_time_s: Training seconds summed over all pieces.
    """

    model: ClassConditionalUNet
    losses: np.ndarray
    step: int
    finished: bool
    wall_time_s: float


def _batch_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _ddpm_batch(
    images: Tensor, labels: Tensor, cfg: TrainConfig, step: int, null_class: int, ab: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = _batch_generator(cfg.seed, step)
    idx = torch.randint(0, len(labels), (cfg.batch_size,), generator=g)
    x0 = images[idx].float() / 127.5 - 1.0
    if cfg.hflip:
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    y = labels[idx]
    y = torch.where(torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout, null_class, y)
    t = torch.randint(1, cfg.T + 1, (cfg.batch_size,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return q_sample(x0, t, eps, ab), t, y, eps






@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a killed run still writes its checkpoint."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _save_checkpoint(path: Path, model, ema, opt, losses: list[float], step: int, meta: dict) -> None:
    opt_tensors, groups = flatten_optimizer(opt)
    tensors = {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"ema.{k}": v for k, v in ema.module.state_dict().items()},
        "ema.n_averaged": ema.n_averaged.clone(),
        **opt_tensors,
        "losses": torch.tensor(losses, dtype=torch.float32),
    }
    save_artifact(path, tensors, {**meta, "step": step, "param_groups": groups}, max_bytes=PUBLISH_MAX_BYTES)


def _check_resumable(path: Path, meta: dict, cdm_cfg: CDMConfig, cfg: TrainConfig, data_fp: str) -> None:
    """Refuse a checkpoint made with another architecture, recipe (``steps`` aside) or data."""
    ours = {"cdm": cdm_cfg.to_dict(), "train": cfg.to_dict(), "data": data_fp}
    theirs = {"cdm": meta.get("cdm"), "train": meta.get("train"), "data": meta.get("data")}
    diffs = []
    for part in ("cdm", "train"):
        a, b = json.loads(json.dumps(theirs[part] or {})), json.loads(json.dumps(ours[part]))
        diffs += [f"{part}.{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}"
                  for k in sorted(set(a) | set(b)) if k != "steps" and a.get(k) != b.get(k)]
    if theirs["data"] != data_fp:
        diffs.append(f"data fingerprint: checkpoint {theirs['data']!r}, now {data_fp!r}")
    if diffs:
        raise ValueError(
            f"cannot resume {path}: it was made with other settings ({'; '.join(diffs)}). Train with the "
            f"checkpoint's settings and data, or delete {path.name} with its .json and shards "
            f"(paperlib.cache.delete_artifact) to start afresh."
        )




def train_cdm(
    cdm_cfg: CDMConfig,
    cfg: TrainConfig,
    images: Tensor,
    labels: Tensor,
    checkpoint: Path | None = None,
    *,
    checkpoint_every_s: float = 300.0,
    max_seconds: float | None = None,
    progress: bool = True,
    milestone_every: int | None = None,
    on_milestone: Callable[[int, nn.Module, list[float], float], None] | None = None,
) -> TrainResult:
    """Train (or resume training) a class-conditional UNet with the DDPM epsilon-loss.

    Args:
        cdm_cfg: Architecture.
        cfg: Optimisation constants.
        images: ``[N, C, H, W]`` uint8 training images.
        labels: ``[N]`` int64 labels in ``0..num_classes - 1``.
        checkpoint: Resume file (safetensors + JSON); read if present, written every
            ``checkpoint_every_s`` seconds, on interruption and at the end. ``None``: no checkpoints.
        checkpoint_every_s: Seconds between checkpoints.
        max_seconds: Stop (with a checkpoint) after this many seconds of this call; ``None``: run to the end.
        progress: tqdm bar with the running loss and images per second.
        milestone_every: Call ``on_milestone`` every this many steps.
        on_milestone: ``on_milestone(step, ema_model, losses, wall_time_s)``, e.g. to keep the EMA
            weights at 10k, 20k, ... steps (the learning rate is constant after warm-up, so the EMA at
            step ``s`` is the model a run of ``s`` steps ends with).

    Returns:
        A :class:`TrainResult`.
    """
    c, s = cdm_cfg.in_channels, cdm_cfg.sample_size
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1:] != (c, s, s):
        raise ValueError(f"images must be uint8 [N, {c}, {s}, {s}], got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= cdm_cfg.num_classes:
        raise ValueError(f"labels must be [N={len(images)}] in 0..{cdm_cfg.num_classes - 1}")
    if cfg.steps < 1 or cfg.batch_size < 1 or not 0 <= cfg.label_dropout < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 1, 0 <= label_dropout < 1; got {cfg}")

    with torch.random.fork_rng(devices=[]):  # nn.Module init draws from the global generator
        torch.manual_seed(cfg.seed)
        model = ClassConditionalUNet(cdm_cfg)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, losses, wall = 0, [], 0.0
    data_fp = fingerprint(images, labels)
    if checkpoint is not None and checkpoint.exists():
        tensors, meta = load_artifact(checkpoint)
        _check_resumable(checkpoint, meta, cdm_cfg, cfg, data_fp)
        model.load_state_dict(strip_prefix(tensors, "model."))
        ema_sd = strip_prefix(tensors, "ema.")
        ema.n_averaged.copy_(ema_sd.pop("n_averaged"))
        ema.module.load_state_dict(ema_sd)
        opt.load_state_dict(unflatten_optimizer(tensors, meta["param_groups"]))
        step, losses, wall = int(meta["step"]), tensors["losses"].tolist(), float(meta["wall_time_s"])
        log.info("resuming %s at step %d/%d", checkpoint.name, step, cfg.steps)
    ab = cfg.alpha_bar().float()
    meta = {"cdm": cdm_cfg.to_dict(), "train": cfg.to_dict(), "data": data_fp,
            "parameters": num_parameters(model)}

    def save() -> None:
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, ema, opt, losses, step, {**meta, "wall_time_s": round(wall, 1)})

    call_start = start = last_save = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="CDM training", disable=not progress, mininterval=2.0)
    try:
        with _sigterm_as_interrupt():
            while step < cfg.steps:
                x_t, t, y, eps = _ddpm_batch(images, labels, cfg, step, model.null_class, ab)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
                loss = (model(x_t, t, y) - eps).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                ema.update_parameters(model)
                losses.append(loss.item())
                step += 1
                bar.update(1)
                now = time.perf_counter()
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-200:]):.4f}")
                if on_milestone is not None and milestone_every and step % milestone_every == 0:
                    on_milestone(step, ema.module, losses, wall + now - start)
                if now - last_save >= checkpoint_every_s:
                    wall += now - start
                    start = last_save = now
                    save()
                if max_seconds is not None and now - call_start >= max_seconds:
                    break
    except KeyboardInterrupt:
        wall += time.perf_counter() - start
        save()
        bar.close()
        raise
    wall += time.perf_counter() - start
    bar.close()
    save()
    trained = ema.module.eval().requires_grad_(False)
    return TrainResult(trained, np.asarray(losses, dtype=np.float32), step, step >= cfg.steps, wall)


# ----------------------------------------------------------------------------------------------------------
# The CDMs of the book: recipes per (dataset, profile), load-or-train with resumable pieces
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CDMRecipe:
    """Everything that determines a trained CDM: data, architecture and optimisation."""

    data: DatasetConfig
    cdm: CDMConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "cdm": self.cdm.to_dict(), "train": self.train.to_dict()}

    @property
    def key(self) -> str:
        """Key of the finished model (config including ``train.steps``)."""
        return config_key(self.to_dict(), STAGE_VERSION)

    @property
    def run_key(self) -> str:
        """Key of the training run (config without ``train.steps``): its resume checkpoint serves any
        length, so a run can be extended and its milestones are the models of shorter recipes."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k != "steps"}
        return config_key(d, STAGE_VERSION)

    def with_steps(self, steps: int) -> CDMRecipe:
        """The same recipe trained for ``steps`` steps."""
        return replace(self, train=replace(self.train, steps=int(steps)))


BOOK_STEPS: dict[str, int] = {"shapes": 20_000, "cifar10": 20_000}
"""Training steps of the CDM each chapter uses (full profile)."""

MILESTONE_EVERY = 10_000
"""Full-profile runs keep the EMA model every this many steps (the scaling study of chapter 5)."""

STEP_CAP: dict[str, int] = {"shapes": 120_000, "cifar10": 100_000}
"""The most steps a book CDM trains (ours: the CPU budget). Below it, a CDM trains on in pieces while its last
piece still raised the accuracy of its conditional samples by more than two paired standard errors
(:func:`paperlib.selection.training_decision`, chapter 2)."""


PROFILES = ("smoke", "full", "paper")
"""The book's profiles; ``"paper"`` (a GPU machine) uses the full profile's CDMs for shapes and CIFAR-10 and
the pretrained DiT-XL/2 for ImageNet20 (:func:`paperlib.dit.book_dit_recipe`)."""


def cdm_recipe(dataset: str, profile: str, steps: int | None = None) -> CDMRecipe:
    """The book's CDM for ``dataset`` in ``profile`` (``"smoke"``: a tiny model trained in seconds).

    Full profile [O]: a 1.1M-parameter UNet (channels 32/64/64, self-attention at the lowest resolution),
    batch 64; shapes at 16x16, CIFAR-10 at 32x32 with flips; ``steps`` defaults to :data:`BOOK_STEPS`. The
    paper profile trains nothing new: it uses the full profile's recipes (ImageNet20's CDM is pretrained).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if dataset == "imagenet20":
        raise ValueError("ImageNet20's CDM is the pretrained DiT-XL/2, not trained here: see "
                         "paperlib.dit.book_dit_recipe")
    if dataset == "shapes":
        data = DatasetConfig("shapes", size=16)
        train = TrainConfig(steps=BOOK_STEPS[dataset], lr=3e-4)
    elif dataset == "cifar10":
        data = DatasetConfig("cifar10", size=32, n_train=50_000, n_test=10_000)
        train = TrainConfig(steps=BOOK_STEPS[dataset], lr=3e-4, hflip=True)
    else:
        raise ValueError(f"dataset must be one of {TRAINED_DATASETS}, got {dataset!r}")
    cdm = CDMConfig(sample_size=data.size, num_classes=len(data.classes), attention_levels=(2,))
    if profile == "smoke":
        cdm = CDMConfig(sample_size=data.size, num_classes=len(data.classes), block_out_channels=(16, 32, 32),
                        attention_levels=(2,), attention_head_dim=16)
        train = TrainConfig(steps=120, batch_size=32, lr=1e-3, warmup_steps=10, ema_decay=0.9, hflip=train.hflip)
        data = DatasetConfig(dataset, size=data.size, n_train=600, n_test=200)
    recipe = CDMRecipe(data, cdm, train)
    return recipe if steps is None else recipe.with_steps(steps)


def _paths(recipe: CDMRecipe, publish: bool) -> tuple[Path, Path]:
    root = (ARTIFACTS_DIR if publish else cache_dir()) / STAGE
    return root / f"{recipe.key}.safetensors", root / f"{recipe.run_key}.resume.safetensors"


def _save_final(recipe: CDMRecipe, path: Path, model: nn.Module, losses: np.ndarray, wall: float,
                data_fp: str) -> None:
    manifest = {
        "stage": STAGE, "version": STAGE_VERSION, "key": recipe.key, "config": recipe.to_dict(),
        "steps": recipe.train.steps, "data": data_fp, "parameters": num_parameters(model),
        "wall_time_s": round(wall, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__, "final_loss": float(np.mean(losses[-500:])),
    }
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()},
               "losses": torch.from_numpy(np.asarray(losses[: recipe.train.steps], np.float32))}
    save_artifact(path, tensors, manifest)


class TrainingIncomplete(RuntimeError):
    """Raised by :func:`load_or_train_cdm` when a time budget stopped training before the end."""


def load_cdm(
    path: Path, recipe: CDMRecipe | None = None, data_fingerprint: str | None = None
) -> tuple[ClassConditionalUNet, dict]:
    """Load a finished CDM artifact (EMA weights) and its manifest, checked.

    Args:
        path: The ``.safetensors`` file.
        recipe: If given, the manifest's key, config and steps must be this recipe's.
        data_fingerprint: If given, must equal the manifest's ``data`` (the fingerprint of the data the
            model was trained on, :func:`paperlib.data.fingerprint`).

    Raises:
        ProvenanceError: The manifest contradicts ``recipe`` or ``data_fingerprint``.
    """
    expect: dict = {}
    if recipe is not None:
        expect = {"key": recipe.key, "steps": recipe.train.steps,
                  "config": json.loads(json.dumps(recipe.to_dict()))}
    if data_fingerprint is not None:
        expect["data"] = data_fingerprint
    hint = (f"The CDM in {path.name} was trained on other data than the data loaded here. Point "
            f"$PAPERLIB_DATA at the data it was trained on (for CIFAR-10 the full archive, 50,000 training "
            f"images, checked against SHA256SUMS), or delete {path.name} and its .json to train a new one.")
    tensors, manifest = load_artifact(path, expect=expect, hint=hint)
    model = ClassConditionalUNet(CDMConfig.from_dict(manifest["config"]["cdm"]))
    model.load_state_dict(strip_prefix(tensors, "model."))
    return model.eval().requires_grad_(False), manifest


def load_or_train_cdm(
    recipe: CDMRecipe,
    publish: bool = False,
    max_seconds: float | None = None,
    progress: bool = True,
    milestone_every: int | None = None,
    keep_resume: bool = False,
) -> tuple[ClassConditionalUNet, dict]:
    """The trained CDM of ``recipe``: loaded if finished, else trained (resuming any checkpoint) and saved.

    Looks in the committed ``artifacts/cdm/`` first, then in the scratch cache. A finished model is
    saved as EMA weights + loss history with a manifest (config, steps, data fingerprint, wall time,
    sha256); its resume checkpoint is then deleted.

    Args:
        recipe: Data, architecture and optimisation.
        publish: Train into ``artifacts/`` (the published book) rather than the cache.
        max_seconds: Time budget of this call; when it runs out a checkpoint is written and
            :class:`TrainingIncomplete` raised (call again to resume).
        progress: tqdm bar.
        milestone_every: Also save the EMA model every this many steps, as the finished model of
            ``recipe.with_steps(step)``.
        keep_resume: Keep the resume checkpoint after the end, so that the run can be extended.

    Returns:
        ``(model, manifest)``: the EMA model (eval, frozen) and its manifest.
    """
    for pub in (True, False):
        final, _ = _paths(recipe, pub)
        if artifact_exists(final):
            log.info("found cached CDM (%s/%s), loading", final.parent.name, final.name)
            return load_cdm(final, recipe)
    final, resume = _paths(recipe, publish)
    if publish:
        check_may_compute(f"the {recipe.data.name} CDM of {recipe.train.steps} steps ({recipe.key})",
                          f"make train DATASET={recipe.data.name} STEPS={recipe.train.steps}")
    images, labels = load_dataset(recipe.data, "train")
    data_fp = fingerprint(images, labels)

    def keep(step: int, model: nn.Module, losses: list[float], wall: float) -> None:
        path, _ = _paths(recipe.with_steps(step), publish)
        if step < recipe.train.steps and not path.exists():
            _save_final(recipe.with_steps(step), path, model, np.asarray(losses, np.float32), wall, data_fp)

    result = train_cdm(recipe.cdm, recipe.train, images, labels, resume, max_seconds=max_seconds,
                       progress=progress, milestone_every=milestone_every, on_milestone=keep)
    if not result.finished:
        raise TrainingIncomplete(f"stopped at step {result.step}/{recipe.train.steps}; checkpoint {resume}")
    _save_final(recipe, final, result.model, result.losses, result.wall_time_s, data_fp)
    if not keep_resume:
        delete_artifact(resume)
    return load_cdm(final, recipe, data_fp)


@dataclass
class BookCDM:
    """A chapter's CDM with what every image chapter needs beside it."""

    model: ClassConditionalUNet
    recipe: CDMRecipe
    manifest: dict
    images: Tensor
    labels: Tensor

    @property
    def alpha_bar(self) -> Tensor:
        return self.recipe.train.alpha_bar()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.recipe.data.classes

    def losses(self) -> np.ndarray:
        """Per-step training losses of the model, from its artifact."""
        for pub in (True, False):
            final, _ = _paths(self.recipe, pub)
            if artifact_exists(final):
                return load_artifact(final)[0]["losses"].numpy()
        raise FileNotFoundError(f"no finished CDM artifact for key {self.recipe.key}")


def load_book_cdm(dataset: str, profile: str, progress: bool = True, device: str | torch.device | None = None
                  ) -> BookCDM:
    """The book's CDM of ``dataset`` in ``profile`` (trained if needed, see :func:`load_or_train_cdm`) and
    its training set; ImageNet20's is the pretrained DiT-XL/2 (:func:`paperlib.dit.load_book_dit`).

    Args:
        device: Where the model runs; ``None``: the chapter's device (:func:`paperlib.setup.book_device`,
            set by its setup cell; the CPU when no setup ran).
    """
    from paperlib.setup import book_device

    device = book_device() if device is None else torch.device(device)
    if dataset == "imagenet20":
        from paperlib.dit import load_book_dit

        return load_book_dit(profile, device)
    recipe = cdm_recipe(dataset, profile)
    model, manifest = load_or_train_cdm(recipe, publish=profile == "full", progress=progress)
    model = model.to(device)
    images, labels = load_dataset(recipe.data, "train")
    fp = fingerprint(images, labels)
    if manifest.get("data") != fp:
        raise ProvenanceError(
            f"the {dataset} CDM {manifest['key']} was trained on data with fingerprint {manifest.get('data')}, "
            f"but the data loaded here has fingerprint {fp} ({len(labels)} training images). Point "
            f"$PAPERLIB_DATA at the data it was trained on (for CIFAR-10 the archive of 50,000 training "
            f"images checked against SHA256SUMS), or delete artifacts/cdm/{manifest['key']}.* to retrain."
        )
    return BookCDM(model, recipe, manifest, images, labels)


def checkpoint_key(dataset: str, steps: int, profile: str = "full") -> str:
    """The manifest key of the book's ``dataset`` run after ``steps`` steps, as :func:`load_cdm_at` gives it:
    the finished-model key at a milestone (every :data:`MILESTONE_EVERY` steps, and the book's length), else
    ``<run_key>@<steps>`` (a resume checkpoint's EMA)."""
    recipe = cdm_recipe(dataset, profile, steps)
    if steps % MILESTONE_EVERY == 0 or steps == BOOK_STEPS.get(dataset):
        return recipe.key
    return f"{recipe.run_key}@{steps}"


def checkpoint_exists(dataset: str, steps: int, profile: str = "full") -> bool:
    """Whether :func:`load_cdm_at` finds the finished or milestone weights of the book's ``dataset`` run after
    ``steps`` steps (published or in the scratch cache), without loading anything."""
    recipe = cdm_recipe(dataset, profile, steps)
    return any(artifact_exists(_paths(recipe, pub)[0]) for pub in (True, False))


def load_cdm_at(dataset: str, steps: int, profile: str = "full", checkpoint: str | Path | None = None) -> BookCDM:
    """The book's CDM run of ``dataset`` after ``steps`` steps, for the scaling study (issue 13, item 6):
    :func:`load_run_at` of ``cdm_recipe(dataset, profile, steps)``."""
    return load_run_at(cdm_recipe(dataset, profile, steps), checkpoint)


def load_run_at(recipe: CDMRecipe, checkpoint: str | Path | None = None) -> BookCDM:
    """A CDM run after ``recipe.train.steps`` steps, never trained here.

    Reads the run's milestone (or final) artifact of ``recipe``; or, with ``checkpoint``, the EMA weights of
    a resume checkpoint of the same run (e.g. one restored from the git history), whose step must be
    ``recipe.train.steps``.

    Returns:
        A :class:`BookCDM` whose manifest ``key`` identifies the weights (``<run_key>@<step>`` for a resume
        checkpoint).

    Raises:
        FileNotFoundError: No artifact of that length exists (name the training command).
        ProvenanceError: The checkpoint belongs to another run or step, or to other data.
    """
    steps, dataset = recipe.train.steps, recipe.data.name
    finals = [p for p in (_paths(recipe, pub)[0] for pub in (True, False)) if artifact_exists(p)]
    if checkpoint is None and not finals:
        raise FileNotFoundError(f"no {dataset} CDM of {steps} steps (key {recipe.key}); train it with "
                                f"`make train DATASET={dataset} STEPS={steps}` (milestones every {MILESTONE_EVERY})")
    images, labels = load_dataset(recipe.data, "train")
    fp = fingerprint(images, labels)
    if checkpoint is None:
        model, manifest = load_cdm(finals[0], recipe, fp)
        return BookCDM(model, recipe, manifest, images, labels)
    path = Path(checkpoint)
    tensors, meta = load_artifact(path)
    _check_resumable(path, meta, recipe.cdm, recipe.train, fp)
    if int(meta["step"]) != steps:
        raise ProvenanceError(f"{path.name} is at step {meta['step']}, not {steps}")
    model = ClassConditionalUNet(recipe.cdm)
    ema_sd = strip_prefix(tensors, "ema.")
    ema_sd.pop("n_averaged")
    model.load_state_dict(ema_sd)
    manifest = {"key": f"{recipe.run_key}@{steps}", "steps": steps, "data": fp, "parameters": num_parameters(model),
                "config": recipe.to_dict(), "source": path.name, "wall_time_s": meta["wall_time_s"]}
    return BookCDM(model.eval().requires_grad_(False), recipe, manifest, images, labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paperlib.train", description="Train (a piece of) a CDM.")
    parser.add_argument("--dataset", choices=TRAINED_DATASETS, required=True)
    parser.add_argument("--profile", choices=["smoke", "full"], default="full")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--scratch", action="store_true", help="train into the cache, not artifacts/")
    parser.add_argument("--steps", type=int, default=None, help="train this long (default: the book's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = cdm_recipe(args.dataset, args.profile, steps=args.steps)
    print(json.dumps({"key": recipe.key, "run_key": recipe.run_key, **recipe.to_dict()}, indent=1))
    budget = None if args.max_minutes is None else 60 * args.max_minutes
    every = MILESTONE_EVERY if args.profile == "full" else None
    try:
        _, manifest = load_or_train_cdm(recipe, publish=not args.scratch, max_seconds=budget,
                                        milestone_every=every, keep_resume=True)
        print(f"done: {manifest['key']} ({manifest['steps']} steps, {manifest['wall_time_s']} s)")
    except TrainingIncomplete as exc:
        print(f"paused: {exc}")


if __name__ == "__main__":
    main()
