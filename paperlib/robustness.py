"""Robustness of a classifier: white-box attacks, the Square attack, common corruptions and the Backgrounds
Challenge (paper Tables 1, 2, 5 and 10; spec §9).

Every classifier here is a ``torch.nn.Module`` that takes images in ``[0, 1]``, ``[B, 3, H, W]``, with its
normalisation inside (:class:`Normalized` wraps one that does not), and returns logits.

- **White-box attacks** (torchattacks, spec §9.1; :data:`TABLE5_ATTACKS`): PGD, CW, APGD-DLR and APGD-CE at
  the paper's CIFAR-10 settings (L∞ ε = 2/255, 5 steps; CW κ = 0, c = 0.2, torchattacks' L2 CW with its
  default lr 0.01). PGD's step size is printed "0.5" without "/255": read literally (``alpha = 0.5``, every
  step lands on a corner of the ε-ball) it is the primary column; ``pgd_alpha_eps_over_4`` reads it as
  0.5/255 (= ε/4). The robust accuracy "under all four" (:data:`WORST_CASE`) counts a sample correct only if
  it is classified correctly clean and survives each attack, run separately on every sample. CW is an L2
  attack without a bound (Table 5 gives none): its per-sample L∞ and L2 norms are stored and reported, and
  a second worst case takes the three L∞ attacks alone (:data:`WORST_CASE_LINF`); every bounded attack is
  checked to stay inside its ε-ball. :data:`EPS8_ATTACKS`: the same at ε = 8/255 (the
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
fingerprint and the data's fingerprint; :func:`summarize` turns them into the table's accuracies.

Chapter 7 (:func:`book_robustness` onwards): every evaluation of :data:`BOOK_EVALUATIONS` for every student of
:func:`paperlib.cadistill.book_students`, as a tidy frame; :func:`seed_table` (mean ± std over seeds of the
columns of :data:`TABLES`), :func:`book_table` (ours beside the paper's Tables 1, 2 and 10), and the verdict
of each claim of :data:`CLAIM_TESTS` by the book's significance rule (:func:`comparisons`: a gap counts only
beyond two standard errors of the difference over seeds). ``python -m paperlib.robustness --dataset cifar10``
(``make robustness``) runs the book's evaluations of the trained students in resumable background pieces;
``--student KEY --eval attacks`` evaluates any one saved classifier or student.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchattacks
from torch import Tensor, nn

from paperlib.cache import load_or_compute, module_fingerprint
from paperlib.corruptions import CIFAR10C_PARAMS, CODE_VERSION, CORRUPTIONS, SEVERITIES, corrupt
from paperlib.data import DatasetConfig, ShapesData, backgrounds_challenge, fingerprint, load_dataset, load_shapes
from paperlib.data import stratified_subset as _stratified
from paperlib.progress import tqdm
from paperlib.validate import check_int, check_labels, check_tensor, describe

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "BG_SPLITS",
    "BOOK_EVALUATIONS",
    "CLAIM_TESTS",
    "COLUMN_LABELS",
    "ClaimTest",
    "EPS8_ATTACKS",
    "EVALUATIONS",
    "EvaluationIncomplete",
    "Normalized",
    "ORDER",
    "OUTCOMES",
    "PAPER_ATTACKS",
    "PAPER_TABLE10_IMAGENET",
    "PAPER_TABLE1_CIFAR10",
    "PAPER_TABLE2_IMAGENET",
    "PAPER_TABLES",
    "PUBLIC_CONTEXT",
    "SQUARE_ATTACKS",
    "TABLE5_ATTACKS",
    "TABLES",
    "UNBOUNDED",
    "WORST_CASE",
    "WORST_CASE_LINF",
    "adversarial_background_fooled",
    "attack",
    "background_bank",
    "book_robustness",
    "book_table",
    "cell_text",
    "cell_texts",
    "claim_checks",
    "comparison_summary",
    "comparison_verdict",
    "comparisons",
    "corruption_parameters_hash",
    "display_table",
    "evaluate",
    "evaluation_config",
    "evaluation_hours",
    "evaluation_mode",
    "isolated_rng",
    "load_model",
    "make_attack",
    "ordering_pairs",
    "predict_labels",
    "seed_table",
    "severity_curves",
    "student_table",
    "summarize",
]

STAGE = "robustness"
PIECE_STAGE = "robustness_piece"
CACHE_VERSION = 2
"""2: CW perturbation norms stored, bounded attacks checked against ε, glass blur as the reference, Mixed-Rand
from other classes, the corruption table hashed into the key."""

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
"""The paper's four attacks: the worst case counts a sample correct only if it is classified correctly clean
and survives all of them (the AutoAttack convention)."""

WORST_CASE_LINF: tuple[str, ...] = ("pgd", "apgd_dlr", "apgd_ce")
"""The three of the four with an L∞ budget: CW (torchattacks' L2 CW, Table 5 gives it no bound) moves pixels
further than ε, so its worst case is not an ε-ball's; this one is."""

UNBOUNDED: tuple[str, ...] = ("cw",)
"""Attack kinds without an ε: their per-sample perturbation norms are stored (``linf.<name>``, ``l2.<name>``);
every other attack is checked to stay inside its ε-ball."""

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
                      chunk_size: int = 500, bank_size: int = 100, square_queries: int | None = None
                      ) -> dict[str, Any]:
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
        square_queries: Queries of the Square attacks (default: :data:`SQUARE_ATTACKS`' 1000; the smoke
            profile shrinks it).

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
    if square_queries is not None:
        if evaluation != "square":
            raise ValueError(f"square_queries is a setting of the square evaluation, not of {evaluation!r}")
        for spec in cfg["attacks"].values():
            spec["n_queries"] = check_int("square_queries", square_queries, 1)
    if evaluation == "corruptions":
        cfg["corruptions"] = list(CORRUPTIONS)
        cfg["severities"] = list(SEVERITIES)
        cfg["parameters"] = corruption_parameters_hash()
    if evaluation == "backgrounds":
        cfg["splits"] = list(BG_SPLITS)
        cfg["mixed_rand"] = "other_class"
        cfg["bank_size"] = check_int("bank_size", bank_size, 1)
    return cfg


def corruption_parameters_hash() -> str:
    """A hash of the corruption table and code (:data:`paperlib.corruptions.CIFAR10C_PARAMS`,
    :data:`paperlib.corruptions.CODE_VERSION`): part of a corruption evaluation's cache key."""
    text = repr((CODE_VERSION, sorted((k, repr(v)) for k, v in CIFAR10C_PARAMS.items())))
    return f"hendrycks2019-cifar10c-{zlib.crc32(text.encode()):08x}"


def _label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int64


def _attack_piece(model: nn.Module, cfg: dict, x: Tensor, y: Tensor, start: int, dtype: torch.dtype,
                  bar: tqdm) -> dict[str, Tensor]:
    bs = cfg["batch_size"]
    out = {"pred.clean": predict_labels(model, x, bs).to(dtype)}
    for name, spec in cfg["attacks"].items():
        preds, linf, l2 = [], [], []
        for i in range(0, len(x), bs):
            adv = attack(model, x[i:i + bs], y[i:i + bs], spec, _derive_seed(cfg["seed"], name, start + i))
            delta = (adv - x[i:i + bs]).flatten(1)
            linf.append(delta.abs().amax(1))
            l2.append(delta.norm(dim=1))
            preds.append(predict_labels(model, adv, bs))
        out[f"pred.{name}"] = torch.cat(preds).to(dtype)
        linf_all = torch.cat(linf)
        if spec["kind"] in UNBOUNDED:
            out[f"linf.{name}"] = linf_all.float()
            out[f"l2.{name}"] = torch.cat(l2).float()
        elif linf_all.numel() and linf_all.max().item() > spec["eps"] + 1e-6:
            raise RuntimeError(f"{name} left its ε-ball: max |δ|∞ = {linf_all.max().item() * 255:.3f}/255 > "
                               f"{spec['eps'] * 255:.3f}/255")
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
    how: str = "",
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
        how: The command that computes a published result, named by :class:`paperlib.cache.PendingRun` when
            it is missing in a read-only run (``make book``).
        **config: Passed to :func:`evaluation_config` when ``evaluation`` is a name (``n``, ``seed``, ...).

    Returns:
        ``(tensors, manifest)``: ``index`` (positions in the test split), ``labels``, ``pred.<column>`` per
        column (``uint8`` labels), ``pieces.wall_time_s`` (seconds each piece took when it was computed, so
        a resumed evaluation still adds up its whole cost), and for corruptions ``pred.corruptions``
        ``[15, 5, n]``, for the backgrounds challenge ``adv_bg.n_fooled`` ``[n]`` and ``adv_bg.bank``
        (background indices into the evaluated set).

    Raises:
        EvaluationIncomplete: ``max_minutes`` ran out; call again to resume.
        paperlib.cache.PendingRun: ``publish`` in a read-only run and the result is not in ``artifacts/``.
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
            splits = backgrounds_challenge(shapes, _derive_seed(cfg["seed"], "splits"),
                                           rand_from_other_class=cfg.get("mixed_rand") == "other_class")
            bank = background_bank(shapes, min(cfg["bank_size"], len(shapes)), _derive_seed(cfg["seed"], "bank"))
        pieces, seconds = [], []
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

                tensors, piece_manifest = load_or_compute(PIECE_STAGE, {**key_config, "piece": p}, piece,
                                                          CACHE_VERSION, verbose=False, provenance=provenance,
                                                          hint=hint)
                pieces.append(tensors)
                seconds.append(float(piece_manifest.get("wall_time_s", math.nan)))
                bar.n = (p + 1) * _tasks(cfg)
                bar.refresh()
        out = {k: torch.cat([t[k] for t in pieces], dim=-1) for k in pieces[0]}
        if bank is not None:
            out["adv_bg.bank"] = bank
        out["pieces.wall_time_s"] = torch.tensor(seconds, dtype=torch.float64)
        return {"index": index, "labels": labels, **out}

    with torch.random.fork_rng():
        return load_or_compute(STAGE, key_config, compute, CACHE_VERSION, publish=publish, provenance=provenance,
                               hint=hint, how=how)


def summarize(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> dict[str, float]:
    """Accuracies (fractions) of an :func:`evaluate` result.

    - attacks: ``clean``, one entry per attack, ``worst`` (correct clean and under all of :data:`WORST_CASE`
      present), ``worst_linf`` (the same over :data:`WORST_CASE_LINF`), ``worst_all`` (under every attack of
      the set) and, per unbounded attack, the median and maximum of its perturbations' L∞ and L2 norms in
      pixel units of ``[0, 1]`` (``<name>_linf_median``, ``<name>_linf_max``, ``<name>_l2_median``; not
      fractions);
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
        clean = tensors["pred.clean"].long() == y
        ok = {name: tensors[f"pred.{name}"].long() == y for name in cfg["attacks"]}
        out.update({name: v.double().mean().item() for name, v in ok.items()})

        def survives(names: Sequence[str]) -> float:
            return torch.stack([clean, *(ok[a] for a in names)]).all(0).double().mean().item()

        if any(a in ok for a in WORST_CASE):
            out["worst"] = survives([a for a in WORST_CASE if a in ok])
        if any(a in ok for a in WORST_CASE_LINF):
            out["worst_linf"] = survives([a for a in WORST_CASE_LINF if a in ok])
        out["worst_all"] = survives(list(ok))
        for name in cfg["attacks"]:
            if f"linf.{name}" in tensors:
                linf, l2 = tensors[f"linf.{name}"].double(), tensors[f"l2.{name}"].double()
                out.update({f"{name}_linf_median": linf.median().item(), f"{name}_linf_max": linf.max().item(),
                            f"{name}_l2_median": l2.median().item()})
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
# The book's students, evaluated, and what chapter 7 reports
# ----------------------------------------------------------------------------------------------------------

BOOK_EVALUATIONS: dict[str, tuple[str, ...]] = {
    "cifar10": ("attacks", "attacks_eps8", "square", "corruptions"),
    "shapes": ("attacks", "attacks_eps8", "square", "corruptions", "backgrounds"),
}
"""What chapter 7 runs on every student of a dataset (the backgrounds challenge needs the shapes' masks)."""


def book_robustness(
    dataset: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    profile: str = "full",
    evaluations: Sequence[str] | None = None,
    *,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    students: Mapping[tuple[str, int], tuple[nn.Module, dict]] | None = None,
    progress: bool = True,
    max_minutes: float | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Every evaluation of every book student of ``dataset``, run (resumably) or loaded, and summarised.

    The students are :func:`paperlib.cadistill.book_students`'; each evaluation is :func:`evaluate` on the test
    split of the dataset's CDM data config (:func:`paperlib.train.cdm_recipe`), keyed by the student's artifact
    key and published into ``artifacts/robustness/`` in the full profile. In a read-only run (``make book``) a
    missing student or evaluation raises :class:`paperlib.cache.PendingRun`, naming the command that makes it
    (``make students``, ``make robustness``).

    Args:
        dataset: Dataset name.
        methods: :data:`paperlib.cadistill.METHODS` names.
        seeds: Training seeds.
        profile: ``"full"`` or ``"smoke"``.
        evaluations: :data:`EVALUATIONS` names (default: :data:`BOOK_EVALUATIONS` of ``dataset``).
        settings: Per evaluation, keyword settings of :func:`evaluation_config` (``n``, ``batch_size``, ...);
            absent ones are the book's defaults (the smoke profile shrinks ``n``); settings of evaluations
            not run are ignored (one dict serves both datasets).
        students: ``{(method, seed): (model, manifest)}`` already loaded (default: :func:`book_students`).
        progress: tqdm bars.
        max_minutes: Budget of the whole call; :class:`EvaluationIncomplete` when it runs out (the finished
            pieces are kept: call again to resume).
        **overrides: Student recipe fields, passed to :func:`book_students`.

    Returns:
        A tidy frame, one row per ``(student, evaluation, metric)``: ``dataset``, ``method``, ``seed``,
        ``student`` (artifact key), ``evaluation``, ``metric``, ``value`` (a fraction, from :func:`summarize`),
        ``n`` (images evaluated) and ``wall_time_s`` (the evaluation's compute time over all its pieces). The
        row ``evaluation="training"``, ``metric="test_accuracy"`` is the student's clean accuracy on the whole
        test split (from its manifest).
    """
    import pandas as pd

    from paperlib.cadistill import book_students
    from paperlib.train import cdm_recipe

    evaluations = tuple(BOOK_EVALUATIONS.get(dataset, ()) if evaluations is None else evaluations)
    if not evaluations or any(e not in EVALUATIONS for e in evaluations):
        raise ValueError(f"evaluations must be a non-empty list drawn from {EVALUATIONS}, got {evaluations!r}")
    settings = dict(settings or {})
    if set(settings) - set(EVALUATIONS):
        raise ValueError(f"settings must be keyed by evaluations {EVALUATIONS}, got {sorted(settings)}")
    if students is None:
        students = book_students(dataset, methods, seeds, profile, progress=progress, **overrides)
    missing = [(m, s) for m in methods for s in seeds if (m, s) not in students]
    if missing:
        raise ValueError(f"no student for {missing} among the {len(students)} given")
    data = cdm_recipe(dataset, profile).data
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    rows = []
    for method in methods:
        for seed in seeds:
            model, manifest = students[(method, seed)]
            base = {"dataset": dataset, "method": method, "seed": seed, "student": manifest["key"]}
            rows.append({**base, "evaluation": "training", "metric": "test_accuracy",
                         "value": manifest["test_accuracy"], "n": manifest.get("test_n"),
                         "wall_time_s": manifest.get("wall_time_s")})
            for ev in evaluations:
                left = None if deadline is None else (deadline - time.monotonic()) / 60
                how = f"make robustness DATASET={dataset} METHOD={method} SEEDS={seed} EVALS={ev}"
                tensors, man = evaluate(model, manifest["key"], data, ev, publish=profile == "full",
                                        max_minutes=left, progress=progress, how=how, **settings.get(ev, {}))
                wall = (tensors["pieces.wall_time_s"].sum().item() if "pieces.wall_time_s" in tensors
                        else man.get("wall_time_s"))
                rows += [{**base, "evaluation": ev, "metric": metric, "value": value, "n": len(tensors["labels"]),
                          "wall_time_s": wall} for metric, value in summarize(tensors, man).items()]
    return pd.DataFrame(rows)


def evaluation_hours(summaries: pd.DataFrame) -> pd.DataFrame:
    """What the evaluations cost: per dataset and evaluation, the students, images per student and the
    single-process compute hours summed over students (``wall_time_s`` of :func:`book_robustness`)."""
    import pandas as pd

    runs = summaries[summaries.evaluation != "training"].drop_duplicates(["dataset", "student", "evaluation"])
    if runs.empty:
        return pd.DataFrame(columns=["students", "images", "hours"])
    g = runs.groupby(["dataset", "evaluation"], sort=False)
    return pd.DataFrame({"students": g["student"].nunique(), "images": g["n"].max(),
                         "hours": g["wall_time_s"].sum() / 3600})


COLUMN_LABELS: dict[str, str] = {
    "test_accuracy": "Clean (test set)", "clean": "Clean", "pgd": "PGD", "pgd_alpha_eps_over_4": "PGD (α = ε/4)",
    "cw": "CW (L2, unbounded)", "apgd_dlr": "APGD-DLR", "apgd_ce": "APGD-CE", "worst": "worst of 4",
    "worst_linf": "worst of 3 (L∞)", "corruption": "Corruption",
    "corruption_clean": "Clean (same images)",
    "original": "Original", "only_fg": "Only-FG", "mixed_same": "Mixed-Same", "mixed_rand": "Mixed-Rand",
    "mixed_next": "Mixed-Next", "bg_gap": "BG-gap", "adversarial_bg": "adversarial bg",
    "square": "Square (ε = 2/255)", "square_eps8": "Square (ε = 8/255)",
}
"""Column headers of chapter 7's tables, by column id."""

TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "table1": {"clean": ("attacks", "clean"), "pgd": ("attacks", "pgd"),
               "pgd_alpha_eps_over_4": ("attacks", "pgd_alpha_eps_over_4"), "cw": ("attacks", "cw"),
               "apgd_dlr": ("attacks", "apgd_dlr"), "apgd_ce": ("attacks", "apgd_ce"), "worst": ("attacks", "worst"),
               "worst_linf": ("attacks", "worst_linf"), "corruption_clean": ("corruptions", "clean"),
               "corruption": ("corruptions", "mean")},
    "eps8": {"clean": ("attacks_eps8", "clean"), "pgd": ("attacks_eps8", "pgd"),
             "pgd_alpha_eps_over_4": ("attacks_eps8", "pgd_alpha_eps_over_4"),
             "apgd_dlr": ("attacks_eps8", "apgd_dlr"), "apgd_ce": ("attacks_eps8", "apgd_ce"),
             "worst_linf": ("attacks_eps8", "worst_linf")},
    "table2": {name: ("backgrounds", name) for name in (*BG_SPLITS, "bg_gap", "adversarial_bg")},
    "square": {"clean": ("square", "clean"), "square": ("square", "square"), "square_eps8": ("square", "square_eps8")},
    "per_student": {"test_accuracy": ("training", "test_accuracy"), "worst": ("attacks", "worst"),
                    "corruption": ("corruptions", "mean")},
}
"""Chapter 7's tables: ``table id -> column id -> (evaluation, metric of summarize)``. ``table1``: the paper's
Table 1 (CIFAR-10 columns) plus PGD at α = ε/4, the per-sample worst case of the four attacks and that of
the three with an L∞ budget; ``eps8``: the
white-box attacks at ε = 8/255 (worst case of the three with an ε); ``table2``: the Backgrounds Challenge
(Table 2); ``square``: the black-box attack (Table 10); ``per_student``: the scatter of robustness against
clean accuracy."""

_TABLE1 = {"vanilla": (92.4, 33.4, 20.9, 34.2, 32.0, 76.1), "dmdistill": (92.9, 41.3, 32.8, 38.7, 36.0, 76.7),
           "cfgdistill": (92.9, 43.7, 37.3, 40.9, 39.0, 76.6), "cadistill": (93.1, 47.9, 43.1, 44.1, 43.3, 77.7)}
PAPER_TABLE1_CIFAR10: dict[str, dict[str, float]] = {
    m: {"clean": c, "pgd": p, "cw": w, "apgd_dlr": d, "apgd_ce": e, "corruption": r, "corruption_clean": c}
    for m, (c, p, w, d, e, r) in _TABLE1.items()}
"""The paper's Table 1, CIFAR-10 (ResNet-18, one run each; %; corruption = CIFAR-10-C), spec §10; its one test
accuracy is the clean column of both our parts (``clean`` and ``corruption_clean``)."""

_TABLE2 = {"vanilla": (96.0, 88.0, 81.1, 87.6), "dmdistill": (96.3, 88.0, 80.6, 84.5),
           "cfgdistill": (96.3, 89.0, 82.6, 87.8), "cadistill": (96.3, 89.0, 83.6, 88.5)}
PAPER_TABLE2_IMAGENET: dict[str, dict[str, float]] = {
    m: {"original": o, "mixed_same": s, "mixed_rand": r, "only_fg": f, "bg_gap": round(s - r, 1)}
    for m, (o, s, r, f) in _TABLE2.items()}
"""The paper's Table 2, Backgrounds Challenge on ImageNet-9 (ResNet-50; %): Original, BG-Same (Mixed-Same),
BG-Rand (Mixed-Rand), Only-FG; the BG-gap (Mixed-Same − Mixed-Rand, points) is computed from them."""

PAPER_TABLE10_IMAGENET: dict[str, dict[str, float]] = {
    "vanilla": {"clean": 75.9, "square": 23.5}, "dmdistill": {"clean": 75.7, "square": 22.9},
    "cfgdistill": {"clean": 75.7, "square": 23.3}, "cadistill": {"clean": 75.9, "square": 25.6}}
"""The paper's Table 10, Square on ImageNet (ResNet-50, 2000 images, 1000 queries, ε lost; %)."""

PUBLIC_CONTEXT: dict[str, dict[str, float]] = {
    "in9_resnet50": {"original": 95.6, "mixed_same": 86.2, "mixed_rand": 78.9, "bg_gap": 7.3},
    "cifar10c_wrn28_10": {"corruption": 73.0},
}
"""Quoted context from public sources (%), not measured here: a standard ResNet-50 on ImageNet-9 (Xiao et al.
2021, "Noise or Signal"), and a standard WRN-28-10 averaged over CIFAR-10-C ("about 73%", RobustBench's
corruption leaderboard)."""


def _method_order(methods) -> list[str]:
    from paperlib.cadistill import METHODS

    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def student_table(summaries: pd.DataFrame, columns: str | Mapping[str, tuple[str, str]]) -> pd.DataFrame:
    """One row per student, one column per column id, in percent (points for the BG-gap).

    Args:
        summaries: :func:`book_robustness` rows of one dataset.
        columns: A key of :data:`TABLES`, or ``column id -> (evaluation, metric)``; a column whose evaluation
            was not run is left out.

    Returns:
        DataFrame indexed by ``(method, seed)`` (methods in :data:`paperlib.cadistill.METHODS` order).
    """
    import pandas as pd

    cols = TABLES[columns] if isinstance(columns, str) else columns
    if summaries["dataset"].nunique() > 1:
        raise ValueError(f"summaries hold several datasets {sorted(summaries['dataset'].unique())}; pass one")
    out = {}
    for cid, (ev, metric) in cols.items():
        sel = summaries[(summaries.evaluation == ev) & (summaries.metric == metric)]
        if len(sel):
            out[cid] = 100 * sel.set_index(["method", "seed"])["value"].astype(float)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    order = {m: i for i, m in enumerate(_method_order(frame.index.get_level_values("method")))}
    return frame.loc[sorted(frame.index, key=lambda ms: (order[ms[0]], ms[1]))]


def seed_table(summaries: pd.DataFrame, columns: str | Mapping[str, tuple[str, str]]) -> pd.DataFrame:
    """Mean, sample standard deviation and number of seeds per method of every column of
    :func:`student_table` (in percent).

    Returns:
        DataFrame indexed by method, columns ``(column id, "mean" | "std" | "seeds")`` (``std`` NaN for one seed).
    """
    import pandas as pd

    per = student_table(summaries, columns)
    if per.empty:
        return pd.DataFrame()
    g = per.groupby(level="method", sort=False)
    stats = {"mean": g.mean(), "std": g.std(ddof=1), "seeds": g.count()}
    table = pd.concat({(c, s): stats[s][c] for c in per.columns for s in stats}, axis=1)
    table.index.name = "method"
    return table


def cell_text(table: pd.DataFrame, method: str, column: str, digits: int = 1) -> str:
    """``"47.9 ± 1.2"`` (mean ± sample std over seeds) of one cell of :func:`seed_table`; ``"47.9 (1 seed)"``
    without a spread; ``"—"`` where nothing was measured."""
    mean, std = table.loc[method, (column, "mean")], table.loc[method, (column, "std")]
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} (1 seed)" if not np.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def cell_texts(table: pd.DataFrame, digits: int = 1) -> dict[tuple[str, str], str]:
    """:func:`cell_text` of every ``(method, column id)`` of a :func:`seed_table` (to glue into prose)."""
    ids = dict.fromkeys(table.columns.get_level_values(0)) if len(table.columns) else {}
    return {(m, c): cell_text(table, m, c, digits) for m in table.index for c in ids}


def display_table(table: pd.DataFrame, paper: Mapping[str, Mapping[str, float]] | None = None,
                  paper_label: str = "paper") -> pd.DataFrame:
    """:func:`seed_table` as the book shows it: per method a row ``"<method> (<seeds>)"`` (mean ± std over
    seeds, %; the seed count is the fewest over its columns) and, if the paper reports that method, a row
    ``paper_label`` with its numbers under ours ("—" where it has none). One column per measure and one index
    level keep a table of eight measures within the page.

    Args:
        table: :func:`seed_table`.
        paper: ``method -> column id -> %`` (e.g. :data:`PAPER_TABLE1_CIFAR10`).
        paper_label: Row label of the paper's numbers (the caption says which table, model and dataset).

    Returns:
        DataFrame of strings indexed by row label (``method (seeds)``), columns the :data:`COLUMN_LABELS` of
        the measures.
    """
    import pandas as pd

    paper = paper or {}
    ids = list(dict.fromkeys(table.columns.get_level_values(0)))
    rows, index = [], []
    for m in table.index:
        seeds = int(table.loc[m, [(c, "seeds") for c in ids]].min())
        rows.append([cell_text(table, m, c).replace(" ± ", "\u202f±\u202f") for c in ids])
        index.append(f"{m} ({seeds})")
        if m in paper:
            rows.append([f"{paper[m][c]:.1f}" if c in paper[m] else "—" for c in ids])
            index.append(paper_label)
    return pd.DataFrame(rows, index=pd.Index(index, name="method (seeds)"),
                        columns=[COLUMN_LABELS.get(c, c) for c in ids])


PAPER_TABLES: dict[str, tuple[str, Mapping[str, Mapping[str, float]], str]] = {
    "table1": ("cifar10", PAPER_TABLE1_CIFAR10, "paper"),  # CIFAR-10, ResNet-18
    "table2": ("shapes", PAPER_TABLE2_IMAGENET, "paper (ImageNet-9)"),  # ImageNet-9, ResNet-50
    "square": ("cifar10", PAPER_TABLE10_IMAGENET, "paper (ImageNet, ε lost)"),  # ImageNet, ResNet-50
}
"""Which of our datasets each paper table is shown beside: ``table id -> (dataset, numbers, row label)``; the
row label says where the paper's numbers differ from the column header's setting (Table 10 is ImageNet, at
an ε our copy of the paper lost, under our ε = 2/255 header), and the caption says which table and model."""

TABLE1_PARTS: dict[str, tuple[str, ...]] = {
    "attacks": ("clean", "pgd", "pgd_alpha_eps_over_4", "cw", "apgd_dlr", "apgd_ce", "worst", "worst_linf"),
    "corruptions": ("corruption_clean", "corruption"),
}
"""Table 1 as the book shows it, in two tables that fit the page: ``part -> column ids``."""


def book_table(tables: Mapping[str, Mapping[str, pd.DataFrame]], table: str,
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One of chapter 7's tables over the datasets: :func:`display_table` rows ``(dataset, "method (seeds)")``,
    the paper's numbers (row "paper") under ours on the dataset :data:`PAPER_TABLES` names (and on no other).

    Args:
        tables: ``dataset -> table id -> seed_table``.
        table: A key of :data:`TABLES`.
        columns: Show only these column ids of the table (e.g. a :data:`TABLE1_PARTS` entry); default all.
    """
    import pandas as pd

    ds_paper, paper, label = PAPER_TABLES.get(table, ("", None, "paper"))
    if columns is not None:
        unknown = sorted(set(columns) - set(TABLES[table]))
        if unknown:
            raise ValueError(f"{table} has no columns {unknown}; it has {list(TABLES[table])}")

    def part(t: pd.DataFrame) -> pd.DataFrame:
        if columns is None:
            return t
        return t[[c for c in t.columns if c[0] in columns]]

    parts = {ds: display_table(part(per[table]), paper if ds == ds_paper else None, label)
             for ds, per in tables.items() if table in per and not per[table].empty}
    if not parts:
        return pd.DataFrame({"not run": []})
    widest_first = sorted(parts.values(), key=lambda d: -len(d.columns))
    order = list(dict.fromkeys(c for d in widest_first for c in d.columns))
    return pd.concat(parts, names=["dataset"])[order].fillna("—")


# Claims and their verdicts ---------------------------------------------------------------------------------

ORDER: tuple[str, ...] = ("cadistill", "cfgdistill", "dmdistill", "vanilla")
"""The paper's ranking under attack (Table 1): CaDistill > CFGDistill > DMDistill > Vanilla."""

PAPER_ATTACKS: tuple[str, ...] = ("pgd", "cw", "apgd_dlr", "apgd_ce")
"""The four attack columns of the paper's Table 1."""

OUTCOMES: tuple[str, ...] = ("as claimed", "within noise", "reversed", "one seed")
"""What one comparison of two methods can show (see :func:`comparisons`)."""

_COMPARISON_COLUMNS = ("column", "comparison", "gap", "two_se", "outcome")


def ordering_pairs(order: Sequence[str] = ORDER) -> tuple[tuple[str, str], ...]:
    """The adjacent pairs of a ranking: ``(a, b), (b, c), ...`` (each claimed better than the next)."""
    if len(order) < 2:
        raise ValueError(f"a ranking needs at least two methods, got {order!r}")
    return tuple(zip(order[:-1], order[1:]))


def comparisons(table: pd.DataFrame, pairs: Sequence[tuple[str, str]], columns: Sequence[str],
                higher_is_better: bool = True) -> pd.DataFrame:
    """Each claimed ``a`` better than ``b`` in each column, decided by the book's significance rule.

    The rule: the gap ``mean_a − mean_b`` (sign flipped when lower is better, e.g. the BG-gap) counts only
    beyond two standard errors of the difference over seeds, ``2 sqrt(s_a²/n_a + s_b²/n_b)``
    (:func:`paperlib.metrics.two_standard_errors`, sample standard deviations ``s`` of ``n`` seeds):
    ``"as claimed"`` above it, ``"reversed"`` below minus it, ``"within noise"`` between; ``"one seed"`` when a
    method has fewer than two seeds (no error bar).

    Args:
        table: :func:`seed_table`.
        pairs: ``(a, b)`` method pairs, ``a`` claimed better.
        columns: Column ids of ``table``.
        higher_is_better: ``False`` for columns where smaller is better.

    Returns:
        One row per ``(column, pair)``: ``column``, ``comparison`` (``"cadistill > vanilla"``), ``gap`` (points,
        positive in the claimed direction), ``two_se`` and ``outcome`` (one of :data:`OUTCOMES`).

    Raises:
        ValueError: for a column or method not in ``table``.
    """
    import pandas as pd

    from paperlib.metrics import two_standard_errors

    rows = []
    for col in columns:
        if (col, "mean") not in table.columns:
            raise ValueError(f"no column {col!r} in the table (has {sorted(set(table.columns.get_level_values(0)))})")
        for a, b in pairs:
            if a not in table.index or b not in table.index:
                raise ValueError(f"methods {a!r} and {b!r} must both be in the table (has {list(table.index)})")
            ra, rb = table.loc[a, col], table.loc[b, col]
            gap = (1 if higher_is_better else -1) * (ra["mean"] - rb["mean"])
            if ra["seeds"] < 2 or rb["seeds"] < 2:
                noise, outcome = math.nan, "one seed"
            else:
                noise = two_standard_errors(ra["std"] / ra["seeds"] ** 0.5, rb["std"] / rb["seeds"] ** 0.5)
                outcome = "as claimed" if gap > noise else "reversed" if gap < -noise else "within noise"
            rows.append({"column": col, "comparison": f"{a} {'>' if higher_is_better else '<'} {b}", "gap": gap,
                         "two_se": noise, "outcome": outcome})
    return pd.DataFrame(rows, columns=list(_COMPARISON_COLUMNS))


def comparison_verdict(comps: pd.DataFrame) -> str:
    """The verdict of a claim from its :func:`comparisons`: ``"holds"`` if every comparison comes out as
    claimed, ``"does not"`` if none does, ``"partly"`` in between (:func:`paperlib.claims.share_verdict`);
    ``"cannot tell"`` if any lacks an error bar, ``"not yet run"`` with none."""
    from paperlib.claims import share_verdict

    if len(comps) == 0:
        return "not yet run"
    if (comps["outcome"] == "one seed").any():
        return "cannot tell"
    return share_verdict(int((comps["outcome"] == "as claimed").sum()), len(comps))


def comparison_summary(comps: pd.DataFrame) -> str:
    """``"3 of 4 comparisons as claimed beyond two standard errors (1 within noise)"``."""
    n = len(comps)
    if n == 0:
        return "not run"
    if (comps["outcome"] == "one seed").any():
        return f"{n} comparison{'s' * (n > 1)} without error bars (fewer than two seeds)"
    k = int((comps["outcome"] == "as claimed").sum())
    rest = [f"{c} {o}" for o in ("within noise", "reversed") if (c := int((comps["outcome"] == o).sum()))]
    return (f"{k} of {n} comparison{'s' * (n > 1)} as claimed beyond two standard errors"
            + (f" ({', '.join(rest)})" if rest else ""))


@dataclass(frozen=True)
class ClaimTest:
    """How chapter 7 decides one claim of :data:`paperlib.claims.CLAIMS` with :func:`comparisons`.

    Attributes:
        dataset: Whose tables.
        table: A key of :data:`TABLES`.
        columns: Column ids compared.
        pairs: ``(a, b)``: ``a`` claimed better than ``b``.
        higher_is_better: ``False`` for the BG-gap.
    """

    dataset: str
    table: str
    columns: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    higher_is_better: bool = True


_OVER_BASELINES = (("cadistill", "vanilla"), ("cadistill", "dmdistill"), ("cadistill", "cfgdistill"))
_CORRUPTION_RANKING = (("cadistill", "cfgdistill"), ("cadistill", "dmdistill"), ("cfgdistill", "vanilla"),
                       ("dmdistill", "vanilla"))
"""The paper's corruption column ranks CaDistill first and Vanilla last, CFGDistill and DMDistill between
(76.6 and 76.7 %): not the attack ranking's CFGDistill > DMDistill."""
CLAIM_TESTS: dict[str, ClaimTest] = {
    "cadistill_robust_cifar10": ClaimTest("cifar10", "table1", PAPER_ATTACKS, _OVER_BASELINES),
    "cadistill_ordering_attacks_cifar10": ClaimTest("cifar10", "table1", PAPER_ATTACKS, ordering_pairs()),
    "cadistill_tenth_cifar10": ClaimTest("cifar10", "table1", PAPER_ATTACKS, (("cadistill", "dmdistill"),)),
    "cadistill_corruption_cifar10": ClaimTest("cifar10", "table1", ("corruption",), (("cadistill", "vanilla"),)),
    "cadistill_ordering_corruption_cifar10": ClaimTest("cifar10", "table1", ("corruption",), _CORRUPTION_RANKING),
    "cadistill_bg_gap_shapes": ClaimTest("shapes", "table2", ("bg_gap",), (("cadistill", "vanilla"),), False),
    "cadistill_square_cifar10": ClaimTest("cifar10", "square", ("square",), (("cadistill", "vanilla"),)),
}
"""Chapter 7's claims (ids of :data:`paperlib.claims.CLAIMS`) and the comparisons that decide them."""


def claim_checks(tables: Mapping[str, Mapping[str, pd.DataFrame]],
                 tests: Mapping[str, ClaimTest] | None = None) -> tuple[dict[str, str], pd.DataFrame]:
    """The verdict of every claim of ``tests`` and every comparison behind them.

    Args:
        tables: ``dataset -> table id -> seed_table``.
        tests: ``claim id -> ClaimTest`` (default :data:`CLAIM_TESTS`).

    Returns:
        ``(verdicts, checked)``: ``claim id -> verdict`` (:func:`comparison_verdict`; ``"not yet run"`` where
        the dataset, a column or a method is missing) and the :func:`comparisons` of all claims with columns
        ``claim`` and ``dataset`` added.
    """
    import pandas as pd

    tests = CLAIM_TESTS if tests is None else tests
    verdicts, frames = {}, []
    for cid, t in tests.items():
        table = tables.get(t.dataset, {}).get(t.table)
        if (table is None or table.empty or any((c, "mean") not in table.columns for c in t.columns)
                or any(m not in table.index for pair in t.pairs for m in pair)):
            verdicts[cid] = "not yet run"
            continue
        comps = comparisons(table, t.pairs, t.columns, t.higher_is_better)
        verdicts[cid] = comparison_verdict(comps)
        frames.append(comps.assign(claim=cid, dataset=t.dataset))
    columns = ["claim", "dataset", *_COMPARISON_COLUMNS]
    checked = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    return verdicts, checked


def severity_curves(summaries: pd.DataFrame) -> dict[str, np.ndarray]:
    """Accuracy under corruption by severity: ``method -> [seeds, 1 + severities]`` fractions, column 0 the
    clean accuracy of the evaluated images, column ``s`` the mean over the corruptions at severity ``s``."""
    sel = summaries[summaries.evaluation == "corruptions"]
    out = {}
    for method in _method_order(sel["method"].unique()):
        runs = []
        for _, d in sel[sel.method == method].groupby("seed"):
            v = d.set_index("metric")["value"]
            per = [v[[m for m in v.index if m.endswith(f"/{s}")]].mean() for s in SEVERITIES]
            runs.append([v["clean"], *per])
        out[method] = np.asarray(runs, dtype=float)
    return out


# ----------------------------------------------------------------------------------------------------------
# Loading a student, and the CLI
# ----------------------------------------------------------------------------------------------------------


def load_model(key: str) -> tuple[nn.Module, dict]:
    """The classifier saved under artifact ``key`` (committed artifacts first, then the scratch cache).

    Chapter 2's classifiers (stage ``classifier``) and chapter 6's students (stage ``student``,
    :func:`paperlib.cadistill.load_student`, which checks the artifact's key and tensors).

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
    if stage == "student":
        from paperlib.cadistill import load_student

        return load_student(path)
    raise ValueError(f"{path}: no loader for artifacts of stage {stage!r} yet (add one to load_model)")


def main(argv: list[str] | None = None) -> None:
    """``python -m paperlib.robustness``: evaluate the book's trained students of one dataset (``make
    robustness``: every evaluation of :data:`BOOK_EVALUATIONS`, published, in resumable pieces), or with
    ``--student KEY`` any one saved classifier or student."""
    from paperlib.cadistill import METHODS
    from paperlib.train import cdm_recipe

    ap = argparse.ArgumentParser(prog="python -m paperlib.robustness", description=main.__doc__)
    ap.add_argument("--student", default=None, help="artifact key of one model (default: the book's students)")
    ap.add_argument("--eval", nargs="+", choices=EVALUATIONS, dest="evaluations", default=None,
                    help="evaluations (book mode default: BOOK_EVALUATIONS of the dataset; one with --student)")
    ap.add_argument("--dataset", default="cifar10", choices=("shapes", "cifar10"))
    ap.add_argument("--profile", default="full", choices=("smoke", "full"), help="dataset config of the profile")
    ap.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS), help="book mode: methods")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="book mode: training seeds")
    ap.add_argument("--n", type=int, default=None, help=f"--student: test images (default per evaluation: {DEFAULT_N})")
    ap.add_argument("--all", action="store_true", help="--student: the whole test split")
    ap.add_argument("--seed", type=int, default=0, help="--student: evaluation seed")
    ap.add_argument("--batch-size", type=int, default=100, help="--student: images per attack batch")
    ap.add_argument("--chunk-size", type=int, default=500, help="--student: images per cached piece")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop before a piece after this long")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--publish", action="store_true", help="--student: save into the committed artifacts/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.student is None:
        _book_main(args)
        return
    if not args.evaluations or len(args.evaluations) != 1:
        ap.error("--student takes exactly one --eval")
    evaluation = args.evaluations[0]
    model, _ = load_model(args.student)
    data = cdm_recipe(args.dataset, args.profile).data
    n = None if args.all else (args.n if args.n is not None else "default")
    try:
        tensors, manifest = evaluate(model, args.student, data, evaluation, n=n, seed=args.seed,
                                     batch_size=args.batch_size, chunk_size=args.chunk_size, publish=args.publish,
                                     max_minutes=args.max_minutes)
    except EvaluationIncomplete as exc:
        print(f"not done: {exc}")
        return
    print(json.dumps({"student": args.student, "evaluation": evaluation, "n": len(tensors["labels"]),
                      "wall_time_s": manifest.get("wall_time_s"), **summarize(tensors, manifest)}, indent=2))
    print("done")


@contextlib.contextmanager
def _read_only() -> Iterator[None]:
    """Published results are read, never computed, inside the block (:data:`paperlib.cache.READ_ONLY_ENV`)."""
    import os

    from paperlib.cache import READ_ONLY_ENV

    old = os.environ.get(READ_ONLY_ENV)
    os.environ[READ_ONLY_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(READ_ONLY_ENV, None)
        else:
            os.environ[READ_ONLY_ENV] = old


def _book_main(args: argparse.Namespace) -> None:
    """The book's evaluations of trained students (never trains one: ``make students`` does)."""
    from paperlib.cache import ComputeIncomplete, PendingRun
    from paperlib.cadistill import book_students

    print(f"{args.dataset}: robustness of the {args.method} students, seeds {args.seeds}, evaluations "
          f"{args.evaluations or BOOK_EVALUATIONS[args.dataset]}, threads {torch.get_num_threads()}", flush=True)
    try:
        with _read_only():
            students = book_students(args.dataset, args.method, args.seeds, args.profile, progress=False)
    except (PendingRun, ComputeIncomplete) as exc:
        print(f"not trained yet: {exc}")
        return
    try:
        frame = book_robustness(args.dataset, args.method, args.seeds, args.profile, args.evaluations,
                                students=students, max_minutes=args.max_minutes)
    except EvaluationIncomplete as exc:
        print(f"paused: {exc}")
        return
    except KeyboardInterrupt:
        print("interrupted: the finished pieces are cached; run the same command again to resume", flush=True)
        raise SystemExit(130) from None
    for tid in ("table1", "square", "table2"):
        table = seed_table(frame, tid)
        if not table.empty:
            print(display_table(table).to_string())
    print(evaluation_hours(frame).round(2).to_string())
    print("done")


if __name__ == "__main__":
    main()
