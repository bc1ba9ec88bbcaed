"""Robustness of a classifier: white-box attacks, the Square attack, common corruptions and the Backgrounds
Challenge (paper Tables 1, 2, 5 and 10; spec §9).

Every classifier here is a ``torch.nn.Module`` that takes images in ``[0, 1]``, ``[B, 3, H, W]``, with its
normalisation inside (:class:`Normalized` wraps one that does not), and returns logits.

- **White-box attacks** (torchattacks, spec §9.1; :data:`TABLE5_ATTACKS`): PGD, CW, APGD-DLR and APGD-CE at
  the paper's CIFAR-10 settings (L∞ ε = 2/255, 5 steps; CW κ = 0, c = 0.2, torchattacks' L2 CW with its
  default lr 0.01). PGD's step size is printed "0.5" without "/255": read literally (``alpha = 0.5``, every
  step lands on a corner of the ε-ball) it is the primary column; ``pgd_alpha_eps_over_4`` reads it as
  0.5/255 (= ε/4). The robust accuracy "under all four" (:data:`WORST_CASE`) counts a sample correct only if
  it survives each attack, run separately on every sample. :data:`EPS8_ATTACKS`: the same at ε = 8/255 (the
  usual benchmark budget; α = ε/4 for the second PGD; CW has no ε and is not repeated), on a subset.
- **Square** (black-box, Table 10 analogue; :data:`SQUARE_ATTACKS`): L∞, 1000 queries, ε = 2/255 (to match
  the white-box budget) and 8/255, on a subset.
- **Corruptions**: the 15 x 5 CIFAR-10-C corruptions of :mod:`paperlib.corruptions`.
- **Backgrounds Challenge** (Xiao et al. 2020, on shapes, exact composites from the masks):
  Original, Only-FG, Mixed-Same, Mixed-Rand, Mixed-Next (:func:`paperlib.data.backgrounds_challenge`), the
  BG-gap = Mixed-Same − Mixed-Rand, and the adversarial-background accuracy: a foreground counts as correct
  only if it is classified correctly on every background of a fixed bank (:func:`background_bank`).

Attacks run with the model in eval mode and its parameters frozen (both restored afterwards), in a forked
torch RNG seeded per batch (:func:`isolated_rng`): ``torchattacks.APGD`` and ``Square`` reset the global
seed, and PGD's random start draws from it, so an evaluation is deterministic under its seed and never
changes what runs after it.

:func:`evaluate` runs one evaluation of one student over a test split in resumable pieces and caches the
per-sample predictions (a few bytes per image) as a format-2 artifact with the student's key, the model's
fingerprint and the data's fingerprint; :func:`summarize` turns them into the table's accuracies. The CLI
``python -m paperlib.robustness --student KEY --eval attacks`` does the same in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchattacks
from torch import Tensor, nn

from paperlib.cache import load_or_compute, module_fingerprint
from paperlib.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from paperlib.data import DatasetConfig, ShapesData, backgrounds_challenge, fingerprint, load_dataset, load_shapes
from paperlib.data import stratified_subset as _stratified
from paperlib.progress import tqdm
from paperlib.validate import check_int, check_labels, check_tensor, describe

log = logging.getLogger(__name__)

__all__ = [
    "BG_SPLITS",
    "EPS8_ATTACKS",
    "EVALUATIONS",
    "EvaluationIncomplete",
    "Normalized",
    "SQUARE_ATTACKS",
    "TABLE5_ATTACKS",
    "WORST_CASE",
    "adversarial_background_fooled",
    "attack",
    "background_bank",
    "evaluate",
    "evaluation_config",
    "evaluation_mode",
    "isolated_rng",
    "load_model",
    "make_attack",
    "predict_labels",
    "summarize",
]

STAGE = "robustness"
PIECE_STAGE = "robustness_piece"
CACHE_VERSION = 1

# ----------------------------------------------------------------------------------------------------------
# Settings (spec §9.1-9.2)
# ----------------------------------------------------------------------------------------------------------

EPS = 2 / 255
"""The paper's CIFAR-10 L∞ budget (Table 5)."""


def _white_box(eps: float, pgd_alpha: float, cw: bool) -> dict[str, dict[str, Any]]:
    apgd = {"kind": "apgd", "norm": "Linf", "eps": eps, "steps": 5, "n_restarts": 1, "eot_iter": 1, "rho": 0.75}
    out = {
        "pgd": {"kind": "pgd", "eps": eps, "alpha": pgd_alpha, "steps": 5, "random_start": True},
        "pgd_alpha_eps_over_4": {"kind": "pgd", "eps": eps, "alpha": eps / 4, "steps": 5, "random_start": True},
    }
    if cw:
        out["cw"] = {"kind": "cw", "c": 0.2, "kappa": 0.0, "steps": 5, "lr": 0.01}
    out["apgd_dlr"] = {**apgd, "loss": "dlr"}
    out["apgd_ce"] = {**apgd, "loss": "ce"}
    return out


TABLE5_ATTACKS: dict[str, dict[str, Any]] = _white_box(EPS, 0.5, cw=True)
"""Table 5 (CIFAR-10): PGD (α = 0.5 literally, and α = 0.5/255), CW (κ = 0, c = 0.2, lr 0.01 [O]), APGD-DLR,
APGD-CE (ρ = 0.75, 1 restart, EOT 1); ε = 2/255, 5 steps."""

EPS8_ATTACKS: dict[str, dict[str, Any]] = _white_box(8 / 255, 0.5, cw=False)
"""The Table 5 attacks at ε = 8/255 [O] (second PGD at α = ε/4 = 2/255; CW has no ε budget)."""

SQUARE_ATTACKS: dict[str, dict[str, Any]] = {
    "square": {"kind": "square", "norm": "Linf", "eps": EPS, "n_queries": 1000, "n_restarts": 1, "p_init": 0.8,
               "loss": "margin"},
    "square_eps8": {"kind": "square", "norm": "Linf", "eps": 8 / 255, "n_queries": 1000, "n_restarts": 1,
                    "p_init": 0.8, "loss": "margin"},
}
"""Table 10 analogue: Square, L∞, 1000 queries; ε = 2/255 (the white-box budget) [O], and 8/255."""

WORST_CASE: tuple[str, ...] = ("pgd", "cw", "apgd_dlr", "apgd_ce")
"""The paper's four attacks: the worst case counts a sample correct only if it survives all of them."""

BG_SPLITS: tuple[str, ...] = ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next")
"""Backgrounds Challenge splits (Xiao et al. 2020)."""

EVALUATIONS: tuple[str, ...] = ("attacks", "attacks_eps8", "square", "corruptions", "backgrounds")
"""What :func:`evaluate` can run."""

DEFAULT_N: dict[str, int | None] = {"attacks": None, "attacks_eps8": 1000, "square": 500, "corruptions": None,
                                    "backgrounds": None}
"""Test images per evaluation by default (a class-stratified subset; ``None``: the whole test split)."""

_ATTACK_SETS = {"attacks": TABLE5_ATTACKS, "attacks_eps8": EPS8_ATTACKS, "square": SQUARE_ATTACKS}
_KINDS = ("pgd", "cw", "apgd", "square")


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a classifier of ``[0, 1]`` images from one of normalised inputs.

    Args:
        model: Maps normalised ``[B, 3, H, W]`` images to logits.
        mean: Per-channel mean (3 values, in ``[0, 1]`` units).
        std: Per-channel standard deviation (3 values > 0).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must hold 3 values, std > 0; got mean={mean!r}, std={std!r}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``[B, 3, H, W]`` images in ``[0, 1]``."""
        return self.model((x - self.mean) / self.std)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with frozen parameters (no ``.grad`` is written); both restored on exit."""
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run the block on a forked torch RNG seeded with ``seed``; the caller's RNG state is restored on exit.

    ``torchattacks.APGD`` and ``Square`` call ``torch.random.manual_seed``, PGD's random start draws from the
    global generator: inside this block neither is seen outside.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _derive_seed(seed: int, *parts: Any) -> int:
    """A 32-bit seed from ``seed`` and labels (names hashed with CRC-32), stable across runs and machines."""
    words = [seed] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Argmax labels of float images ``[N, 3, H, W]`` in ``[0, 1]`` (the model as it is; no mode change)."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


# ----------------------------------------------------------------------------------------------------------
# Attacks
# ----------------------------------------------------------------------------------------------------------


def _check_spec(spec: Mapping[str, Any]) -> None:
    if not isinstance(spec, Mapping) or spec.get("kind") not in _KINDS:
        raise ValueError(f"an attack spec must be a dict with 'kind' in {_KINDS}, got {describe(spec)}")


def make_attack(model: nn.Module, spec: Mapping[str, Any], seed: int = 0) -> torchattacks.attack.Attack:
    """The torchattacks object of ``spec`` (one of the dicts of :data:`TABLE5_ATTACKS` and friends).

    Args:
        model: Classifier of ``[0, 1]`` images.
        spec: ``{"kind": "pgd" | "cw" | "apgd" | "square", ...}`` with the attack's torchattacks arguments.
        seed: Seed of APGD's and Square's own ``manual_seed`` (PGD and CW draw from the global stream).

    Returns:
        The attack; call it as ``attack(images, labels)``.
    """
    _check_spec(spec)
    kw = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "pgd":
        return torchattacks.PGD(model, **kw)
    if kind == "cw":
        return torchattacks.CW(model, **kw)
    if kind == "apgd":
        return torchattacks.APGD(model, seed=seed, verbose=False, **kw)
    return torchattacks.Square(model, seed=seed, verbose=False, **kw)


def attack(model: nn.Module, images: Tensor, labels: Tensor, spec: Mapping[str, Any], seed: int = 0) -> Tensor:
    """Adversarial images of one batch, deterministic under ``seed``, leaving the caller's RNG and model alone.

    Args:
        model: Classifier of ``[0, 1]`` images (put in eval mode and frozen for the attack, then restored).
        images: ``[B, 3, H, W]`` float in ``[0, 1]``.
        labels: ``[B]`` true labels.
        spec: Attack settings (see :func:`make_attack`).
        seed: Seeds the forked torch RNG and APGD's/Square's own seed.

    Returns:
        ``[B, 3, H, W]`` adversarial images in ``[0, 1]`` (the input where the attack gave up).
    """
    check_tensor("images", images, ndim=4, dtype="floating", nonempty=True, finite=True, value_range=(0.0, 1.0),
                 range_note="pixel space, normalisation inside the model")
    labels = check_labels("labels", labels, n=images.shape[0], device=images.device)
    seed = check_int("seed", seed, 0)
    with evaluation_mode(model), isolated_rng(seed):
        return make_attack(model, spec, seed)(images, labels).detach()


# ----------------------------------------------------------------------------------------------------------
# Backgrounds Challenge
# ----------------------------------------------------------------------------------------------------------


def background_bank(data: ShapesData, size: int, seed: int = 0) -> Tensor:
    """A fixed set of backgrounds for the adversarial-background worst case: indices into ``data``.

    The backgrounds of ``size`` images of ``data``, stratified by background family (as equal a number of each
    as there are), drawn with ``seed``.

    Returns:
        ``[size]`` int64 sorted indices (use ``data.backgrounds[indices]``).
    """
    if not isinstance(data, ShapesData) or len(data) == 0:
        raise ValueError(f"data must be a non-empty ShapesData, got {describe(data)}")
    size = check_int("size", size, 1, len(data))
    return _stratified(data.factors["bg_family"], n=size, seed=seed)


@torch.no_grad()
def adversarial_background_fooled(model: nn.Module, images: Tensor, masks: Tensor, labels: Tensor,
                                  backgrounds: Tensor, batch_size: int = 256) -> Tensor:
    """For each image, how many of the ``backgrounds`` make the model misclassify its foreground.

    Each foreground is pasted, exactly by its mask, on every background of the fixed set (Xiao et al.'s
    adversarial backgrounds); a foreground is robust when its count is 0.

    Args:
        model: Classifier of ``[0, 1]`` images.
        images: ``[N, 3, H, W]`` uint8 (their foreground pixels are used).
        masks: ``[N, H, W]`` bool foreground masks.
        labels: ``[N]`` labels.
        backgrounds: ``[K, 3, H, W]`` uint8, e.g. ``data.backgrounds[background_bank(data, K)]``.
        batch_size: Composites per forward pass.

    Returns:
        ``[N]`` int64 counts in ``0..K``.
    """
    check_tensor("images", images, ndim=4, dtype=torch.uint8)
    check_tensor("backgrounds", backgrounds, ndim=4, dtype=torch.uint8, nonempty=True)
    if masks.shape != (images.shape[0], *images.shape[2:]) or backgrounds.shape[1:] != images.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)}, masks {tuple(masks.shape)} and backgrounds "
                         f"{tuple(backgrounds.shape)} must agree as [N, 3, H, W], [N, H, W], [K, 3, H, W]")
    labels = check_labels("labels", labels, n=images.shape[0])
    k = len(backgrounds)
    fooled = torch.zeros(len(images), dtype=torch.int64)
    per = max(1, batch_size // k)  # foregrounds per forward batch
    with evaluation_mode(model):
        for i in range(0, len(images), per):
            img, m, y = images[i:i + per], masks[i:i + per], labels[i:i + per]
            comp = torch.where(m[:, None, None], img[:, None], backgrounds[None])  # [b, K, 3, H, W]
            pred = predict_labels(model, comp.flatten(0, 1).float() / 255, batch_size).view(len(img), k)
            fooled[i:i + per] = (pred != y[:, None]).sum(1)
    return fooled


# ----------------------------------------------------------------------------------------------------------
# Evaluation over a test split, in cached pieces
# ----------------------------------------------------------------------------------------------------------


class EvaluationIncomplete(RuntimeError):
    """The time budget ran out; the finished pieces are cached: call again to resume."""


def evaluation_config(evaluation: str, *, n: int | None | str = "default", seed: int = 0, batch_size: int = 100,
                      chunk_size: int = 500, bank_size: int = 100) -> dict[str, Any]:
    """The full, JSON-able settings of one evaluation (part of the cache key).

    Args:
        evaluation: One of :data:`EVALUATIONS`.
        n: Test images (a class-stratified subset drawn with ``seed``); ``None``: all; ``"default"``:
            :data:`DEFAULT_N`.
        seed: Seeds the subset, the attacks' starts, the corruptions and the background composites.
        batch_size: Images per attack batch (torchattacks' CW stops on the batch's summed loss, so the batch is
            part of the result).
        chunk_size: Images per cached piece (a multiple of ``batch_size``).
        bank_size: Backgrounds in the adversarial-background bank.

    Returns:
        ``{"evaluation", "n", "seed", "batch_size", "chunk_size", ...}`` with the attack specs, corruption list
        or splits.
    """
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {describe(evaluation)}")
    if n == "default":
        n = DEFAULT_N[evaluation]
    if n is not None:
        n = check_int("n", n, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    if chunk_size % batch_size:
        raise ValueError(f"chunk_size must be a multiple of batch_size, got {chunk_size} and {batch_size}")
    cfg: dict[str, Any] = {"evaluation": evaluation, "n": n, "seed": check_int("seed", seed, 0),
                           "batch_size": batch_size, "chunk_size": chunk_size}
    if evaluation in _ATTACK_SETS:
        cfg["attacks"] = {k: dict(v) for k, v in _ATTACK_SETS[evaluation].items()}
    if evaluation == "corruptions":
        cfg["corruptions"] = list(CORRUPTIONS)
        cfg["severities"] = list(SEVERITIES)
        cfg["parameters"] = "hendrycks2019-cifar10c"
    if evaluation == "backgrounds":
        cfg["splits"] = list(BG_SPLITS)
        cfg["bank_size"] = check_int("bank_size", bank_size, 1)
    return cfg


def _label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int64


def _attack_piece(model: nn.Module, cfg: dict, x: Tensor, y: Tensor, start: int, dtype: torch.dtype,
                  bar: tqdm) -> dict[str, Tensor]:
    bs = cfg["batch_size"]
    out = {"pred.clean": predict_labels(model, x, bs).to(dtype)}
    for name, spec in cfg["attacks"].items():
        preds = []
        for i in range(0, len(x), bs):
            adv = attack(model, x[i:i + bs], y[i:i + bs], spec, _derive_seed(cfg["seed"], name, start + i))
            preds.append(predict_labels(model, adv, bs))
        out[f"pred.{name}"] = torch.cat(preds).to(dtype)
        bar.update(1)
    return out


def _corruption_piece(model: nn.Module, cfg: dict, images: Tensor, start: int, dtype: torch.dtype,
                      bar: tqdm) -> dict[str, Tensor]:
    bs = cfg["batch_size"]
    pred = torch.empty(len(cfg["corruptions"]), len(cfg["severities"]), len(images), dtype=dtype)
    for a, name in enumerate(cfg["corruptions"]):
        for b, sev in enumerate(cfg["severities"]):
            xc = corrupt(images, name, sev, cfg["seed"], first_index=start).float() / 255
            pred[a, b] = predict_labels(model, xc, bs).to(dtype)
            bar.update(1)
    return {"pred.clean": predict_labels(model, images.float() / 255, bs).to(dtype), "pred.corruptions": pred}


def _backgrounds_piece(model: nn.Module, cfg: dict, splits: dict[str, ShapesData], bank: Tensor, rows: slice,
                       dtype: torch.dtype, bar: tqdm) -> dict[str, Tensor]:
    bs = cfg["batch_size"]
    out = {}
    for name in cfg["splits"]:
        out[f"pred.{name}"] = predict_labels(model, splits[name].images[rows].float() / 255, bs).to(dtype)
        bar.update(1)
    orig = splits["original"]
    fooled = adversarial_background_fooled(model, orig.images[rows], orig.masks[rows], orig.labels[rows],
                                           orig.backgrounds[bank], bs)
    out["adv_bg.n_fooled"] = fooled.to(torch.int16)
    bar.update(1)
    return out


def _tasks(cfg: dict) -> int:
    if "attacks" in cfg:
        return len(cfg["attacks"])
    if cfg["evaluation"] == "corruptions":
        return len(cfg["corruptions"]) * len(cfg["severities"])
    return len(cfg["splits"]) + 1


def _test_data(data: DatasetConfig, cfg: dict) -> tuple[Tensor, Tensor, Tensor, ShapesData | None]:
    """The evaluated test images: ``(positions in the split, images, labels, ShapesData or None)``."""
    shapes = None
    if cfg["evaluation"] == "backgrounds":
        if data.name != "shapes":
            raise ValueError(f"the backgrounds challenge needs the shapes dataset (masks), got {data.name!r}")
        shapes = load_shapes(data)[1]
        images, labels = shapes.images, shapes.labels
    else:
        images, labels = load_dataset(data, "test")
    n = cfg["n"]
    if n is not None and n > len(labels):
        raise ValueError(f"n = {n} exceeds the {len(labels)} test images of {data.name}")
    index = torch.arange(len(labels)) if n is None or n == len(labels) else _stratified(labels, n=n, seed=cfg["seed"])
    if shapes is not None:
        shapes = shapes.subset(index)
    return index, images[index], labels[index], shapes


def evaluate(
    model: nn.Module,
    student: str,
    data: DatasetConfig,
    evaluation: str | Mapping[str, Any],
    *,
    publish: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    **config: Any,
) -> tuple[dict[str, Tensor], dict]:
    """Run (or load) one evaluation of one student on the test split of ``data``.

    The work is split in pieces of ``chunk_size`` images, each cached as soon as it is done (scratch cache), so
    a killed or time-limited run resumes where it stopped. The assembled result is an artifact of stage
    ``robustness`` keyed by the evaluation's settings, the dataset config and ``student``; its manifest also
    records (and every load checks) the model's fingerprint, the evaluated data's fingerprint and the
    torchattacks version.

    Args:
        model: Classifier of ``[0, 1]`` images (mode and ``requires_grad`` restored afterwards).
        student: The student's artifact key (names it in the cache; see :func:`load_model`).
        data: Dataset config; its test split is evaluated (shapes for ``"backgrounds"``).
        evaluation: One of :data:`EVALUATIONS`, or a full config from :func:`evaluation_config`.
        publish: Save the final result into the committed ``artifacts/robustness/``.
        max_minutes: Stop (raising :class:`EvaluationIncomplete`) before a piece that starts later than this.
        progress: Show a tqdm bar.
        **config: Passed to :func:`evaluation_config` when ``evaluation`` is a name (``n``, ``seed``, ...).

    Returns:
        ``(tensors, manifest)``: ``index`` (positions in the test split), ``labels``, ``pred.<column>`` per
        column (``uint8`` labels), and for corruptions ``pred.corruptions`` ``[15, 5, n]``, for the backgrounds
        challenge ``adv_bg.n_fooled`` ``[n]`` and ``adv_bg.bank`` (background indices into the evaluated set).

    Raises:
        EvaluationIncomplete: ``max_minutes`` ran out; call again to resume.
    """
    if not isinstance(student, str) or not student:
        raise ValueError(f"student must be a non-empty key, got {describe(student)}")
    if not isinstance(data, DatasetConfig):
        raise ValueError(f"data must be a DatasetConfig, got {describe(data)}")
    if isinstance(evaluation, Mapping) and config:
        raise ValueError("pass either a full evaluation config or keyword settings, not both")
    cfg = dict(evaluation) if isinstance(evaluation, Mapping) else evaluation_config(evaluation, **config)
    index, images, labels, shapes = _test_data(data, cfg)
    key_config = {**cfg, "data": data.to_dict(), "student": student}
    provenance = {"model_sha": module_fingerprint(model), "data_sha": fingerprint(images, labels),
                  "torchattacks": torchattacks.__version__}
    hint = (f"The student {student!r} (or its data) is not the one these results were computed for: delete the "
            f"robustness artifacts of this student to recompute them.")
    num_classes = len(data.classes)
    dtype = _label_dtype(num_classes)

    def compute() -> dict[str, Tensor]:
        deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        chunk = cfg["chunk_size"]
        n_pieces = math.ceil(len(labels) / chunk)
        splits = bank = None
        if cfg["evaluation"] == "backgrounds":
            splits = backgrounds_challenge(shapes, _derive_seed(cfg["seed"], "splits"))
            bank = background_bank(shapes, min(cfg["bank_size"], len(shapes)), _derive_seed(cfg["seed"], "bank"))
        pieces = []
        with evaluation_mode(model), tqdm(total=n_pieces * _tasks(cfg), disable=not progress, unit="task",
                                          desc=f"{cfg['evaluation']} {student}") as bar:
            for p in range(n_pieces):
                if deadline is not None and time.monotonic() > deadline:
                    raise EvaluationIncomplete(f"{cfg['evaluation']} of {student}: {p} of {n_pieces} pieces done "
                                               f"in {max_minutes} min; call again to resume")
                rows = slice(p * chunk, min(len(labels), (p + 1) * chunk))

                def piece(rows: slice = rows) -> dict[str, Tensor]:
                    x8, y = images[rows], labels[rows]
                    if cfg["evaluation"] == "corruptions":
                        return _corruption_piece(model, cfg, x8, rows.start, dtype, bar)
                    if cfg["evaluation"] == "backgrounds":
                        return _backgrounds_piece(model, cfg, splits, bank, rows, dtype, bar)
                    return _attack_piece(model, cfg, x8.float() / 255, y, rows.start, dtype, bar)

                tensors, _ = load_or_compute(PIECE_STAGE, {**key_config, "piece": p}, piece, CACHE_VERSION,
                                             verbose=False, provenance=provenance, hint=hint)
                pieces.append(tensors)
                bar.n = (p + 1) * _tasks(cfg)
                bar.refresh()
        out = {k: torch.cat([t[k] for t in pieces], dim=-1) for k in pieces[0]}
        if bank is not None:
            out["adv_bg.bank"] = bank
        return {"index": index, "labels": labels, **out}

    with torch.random.fork_rng():
        return load_or_compute(STAGE, key_config, compute, CACHE_VERSION, publish=publish, provenance=provenance,
                               hint=hint)


def summarize(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> dict[str, float]:
    """Accuracies (fractions) of an :func:`evaluate` result.

    - attacks: ``clean``, one entry per attack, ``worst`` (correct under all of :data:`WORST_CASE` present)
      and ``worst_all`` (under every attack of the set);
    - corruptions: ``clean``, ``mean`` (over 15 x 5, the CIFAR-10-C score), ``<name>`` (mean over severities)
      and ``<name>/<severity>``;
    - backgrounds: one entry per split, ``bg_gap`` = ``mixed_same − mixed_rand`` and ``adversarial_bg``
      (correct on every background of the bank).
    """
    cfg = manifest["config"]
    y = tensors["labels"].long()

    def acc(pred: Tensor) -> float:
        return (pred.long() == y).double().mean().item()

    if "attacks" in cfg:
        out = {"clean": acc(tensors["pred.clean"])}
        ok = {name: tensors[f"pred.{name}"].long() == y for name in cfg["attacks"]}
        out.update({name: v.double().mean().item() for name, v in ok.items()})
        four = [ok[a] for a in WORST_CASE if a in ok]
        if four:
            out["worst"] = torch.stack(four).all(0).double().mean().item()
        out["worst_all"] = torch.stack(list(ok.values())).all(0).double().mean().item()
        return out
    if cfg["evaluation"] == "corruptions":
        ok = (tensors["pred.corruptions"].long() == y).double().mean(-1)  # [15, 5]
        out = {"clean": acc(tensors["pred.clean"]), "mean": ok.mean().item()}
        for a, name in enumerate(cfg["corruptions"]):
            out[name] = ok[a].mean().item()
            out.update({f"{name}/{s}": ok[a, b].item() for b, s in enumerate(cfg["severities"])})
        return out
    out = {name: acc(tensors[f"pred.{name}"]) for name in cfg["splits"]}
    out["bg_gap"] = out["mixed_same"] - out["mixed_rand"]
    out["adversarial_bg"] = (tensors["adv_bg.n_fooled"] == 0).double().mean().item()
    return out


# ----------------------------------------------------------------------------------------------------------
# Loading a student, and the CLI
# ----------------------------------------------------------------------------------------------------------


def load_model(key: str) -> tuple[nn.Module, dict]:
    """The classifier saved under artifact ``key`` (committed artifacts first, then the scratch cache).

    Today it loads chapter 2's classifiers (stage ``classifier``); the students of the distillation chapter
    plug in here, by their stage, when their artifact format is fixed.

    Returns:
        ``(model in eval mode, manifest)``.
    """
    from paperlib.cache import artifact_exists, load_artifact
    from paperlib.paths import ARTIFACTS_DIR, cache_dir

    found = [p for root in (ARTIFACTS_DIR, cache_dir()) for p in sorted(Path(root).glob(f"*/{key}.safetensors"))]
    found = [p for p in found if artifact_exists(p)]
    if not found:
        raise FileNotFoundError(f"no artifact with key {key!r} in {ARTIFACTS_DIR} or {cache_dir()}")
    path = found[0]
    manifest = load_artifact(path, verify=False)[1]
    stage = manifest.get("stage")
    if stage == "classifier":
        from dataclasses import fields

        from paperlib.classifiers import ClassifierConfig, _load_classifier

        conf = manifest["config"]
        names = {f.name for f in fields(ClassifierConfig)}
        cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in conf.items() if k in names})
        return _load_classifier(path, cfg, conf["num_classes"], conf["image_size"], manifest["data"])
    raise ValueError(f"{path}: no loader for artifacts of stage {stage!r} yet (add one to load_model)")


def main(argv: list[str] | None = None) -> None:
    from paperlib.train import cdm_recipe

    ap = argparse.ArgumentParser(prog="python -m paperlib.robustness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="artifact key of the model to evaluate")
    ap.add_argument("--eval", required=True, choices=EVALUATIONS, dest="evaluation")
    ap.add_argument("--dataset", default="cifar10", choices=("shapes", "cifar10"))
    ap.add_argument("--profile", default="full", choices=("smoke", "full"), help="dataset config of the profile")
    ap.add_argument("--n", type=int, default=None, help=f"test images (default per evaluation: {DEFAULT_N})")
    ap.add_argument("--all", action="store_true", help="the whole test split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--publish", action="store_true", help="save into the committed artifacts/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.student)
    data = cdm_recipe(args.dataset, args.profile).data
    n = None if args.all else (args.n if args.n is not None else "default")
    try:
        tensors, manifest = evaluate(model, args.student, data, args.evaluation, n=n, seed=args.seed,
                                     batch_size=args.batch_size, chunk_size=args.chunk_size, publish=args.publish,
                                     max_minutes=args.max_minutes)
    except EvaluationIncomplete as exc:
        print(f"not done: {exc}")
        return
    print(json.dumps({"student": args.student, "evaluation": args.evaluation, "n": len(tensors["labels"]),
                      "wall_time_s": manifest.get("wall_time_s"), **summarize(tensors, manifest)}, indent=2))
    print("done")


if __name__ == "__main__":
    main()
