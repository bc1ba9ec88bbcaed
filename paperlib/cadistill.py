"""CaDistill and its baselines: students trained on the whole training set, taught by a frozen CDM through a
pre-computed :class:`~paperlib.teaching.TeachingBank` (paper §4, Eqs. 3–6 and 12; spec §8).

Methods (:data:`METHODS`; the losses are :mod:`paperlib.distill`'s, the teacher data :mod:`paperlib.teaching`'s):

- ``"vanilla"``: cross-entropy only (spec §8.7);
- ``"dmdistill"``: CE + ``λ_CKA (1 − CKA(H, F_raw))``, ``F_raw`` the raw CDM features of the batch's own
  training images, **one to one** (a ``"raw"`` bank, looked up by dataset index, so shuffling cannot misalign
  them);
- ``"cfgdistill"``: the CaDistill framework (all four terms of Eq. 6) with the CFG outputs of the same
  inverted latents and their features in place of the Canonical Samples (a ``"cfg"`` bank);
- ``"cadistill"``: Eq. 6 with the Canonical Samples and Canonical Features (a ``"clarid"`` bank).

Pairing (:class:`Pairing`): at every step each training image ``x_i`` of class ``y_i`` draws a **fresh**
entry uniformly at random, with replacement, from the bank's entries of class ``y_i`` (spec §8.1), from a
generator seeded by ``(seed, epoch, step)``. Two controls a reviewer asked for: ``pairing="matched"``, where a
training image that has an entry (its own CLARep: it is in the 10% subset) is paired with it and the others
draw at random; and ``condition="null"``, the null-class (image-only) Canonical Features in the CKA term
instead of the class-conditioned ones.

One step (CFGDistill, CaDistill): the training images and their drawn bank images go through the same
augmentation (random crop with reflection padding, horizontal flip; spec §8.8, §12 #14) and one forward pass
of the student on the ``2B`` images [O: one pass, so batch norm sees both]; ``h``, ``h̃`` are the pooled
penultimate features, CE is on the training images only (spec §8.1).

Training recipe ([O] deviations from the paper's, spec §8.8, for a 2-core CPU). The paper: ResNet-18,
200 epochs, SGD (momentum 0.9), batch 128, lr 0.1, weight decay 5e-4, lr ×0.1 at epochs 100 and 150. Ours
(:func:`student_recipe`): a **ResNet-20** (:mod:`paperlib.students`) for **30 epochs** with the same optimiser,
batch, peak lr and weight decay, a 1-epoch linear warm-up and a cosine decay to 0 (a short schedule needs a
smooth decay), on both datasets (shapes at 16×16, crop padding 2).

Cost, measured at 1 thread on the 2-core machine (``bench/cadistill_results.json``: median paired ratios of
interleaved runs; pilot: one full CIFAR-10 epoch of 390 steps per method, load 6–8 from other jobs):

- a CFGDistill or CaDistill step pushes ``2B`` images through the student, so it costs about **2×** a Vanilla
  step (bench: CaDistill 1.96×, range 1.76–2.03; CFGDistill 2.04×); a DMDistill step about 1× (0.91×,
  0.89–1.10; its CKA term on ``B × B`` Gram matrices is negligible). The issue's target of ≤ 1.3× is not
  reachable without giving the bank images fewer than one per training image (not the paper's method);
- pilot, CPU seconds per step: Vanilla 0.87, CaDistill 1.78 (wall 1.69 and 3.72 under that load); one
  Vanilla epoch on an idle core takes about 2.5 min (0.38 s/step); after that one epoch (all of it warm-up)
  Vanilla and CaDistill both read 39.1% of the 2000 monitor test images (training accuracy 30.4% and 31.1%).

Single-core hours of the book's students (idle-core speed; about 2× under the load of the pilot):

==========================================  ====================================================  =======
what                                         count                                                  hours
==========================================  ====================================================  =======
CIFAR-10 main table, 30 epochs               3 seeds × (1 + 1 + 2 + 2) Vanilla-runs of 1.25 h       22.5
shapes main table (10k images, 16 px)        the same at 1/20 of the cost                           1.1
shapes λ sweep (9 settings beyond default)   9 × 3 seeds × 2 × 3.75 min                             3.4
shapes controls (matched, null)              2 × 3 seeds × 2 × 3.75 min                             0.8
DMDistill banks (CDM features)               50k + 10k images × ~0.2 s                              3.4
total                                                                                               31
==========================================  ====================================================  =======

Students are built in NHWC memory format (:func:`paperlib.setup.channels_last`), which cuts the CPU time
of a ResNet-20 step to about 0.67× of the NCHW figures above (``bench/channels_last_results.json``).
A ResNet-18 × 200 epochs would take about 90 h per Vanilla run here. ResNet-20 reaches about 91% on CIFAR-10
with such schedules (He et al. 2016: 91.25%, 64k iterations of batch 128); the book's Vanilla must reach ≥ 88% (train
Vanilla seed 0 first and check its ``test_accuracy``; if it falls short, raise ``epochs``).

Training (:func:`train_student`) is resumable: a checkpoint ``<key>.resume.safetensors`` every
``checkpoint_every`` steps, after every epoch, on SIGTERM/Ctrl-C (deferred to the end of the step) and when a
time budget runs out; batch order, augmentation and pairing draws are seeded per ``(seed, epoch, step)``, so a
resumed run equals an uninterrupted one. Every epoch logs the mean of each loss term, the training accuracy, the
learning rate, the seconds and the accuracy on a class-stratified monitor subset of the test set; the final
artifact (:func:`load_or_train_student`) records the full ``test_accuracy``.

``python -m paperlib.cadistill --dataset cifar10 --method cadistill --seed 0 1 2 --max-minutes 150 --threads 1``
trains students in resumable pieces (``make students``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from paperlib import __version__
from paperlib.cache import (
    PUBLISH_MAX_BYTES,
    ComputeIncomplete,
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
from paperlib.classifiers import accuracy, predict, random_crop_flip
from paperlib.data import DATASETS, fingerprint, load_dataset, stratified_subset
from paperlib.distill import DistillWeights, cadistill_loss
from paperlib.progress import tqdm
from paperlib.students import Student, StudentConfig, make_student
from paperlib.teaching import TeachingBank
from paperlib.train import TrainingIncomplete as _TrainingIncomplete
from paperlib.validate import check_int, check_labels, check_tensor, describe

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "BANK_OF_METHOD",
    "BOOK_SWEEP",
    "CONDITIONS",
    "METHODS",
    "PAIRINGS",
    "PAPER_TABLE1_CLEAN",
    "Pairing",
    "StudentRecipe",
    "TrainingIncomplete",
    "accuracy_table",
    "clean_verdict",
    "book_student",
    "book_students",
    "distill_terms",
    "history_array",
    "lambda_sweep",
    "load_or_train_student",
    "load_student",
    "loss_terms_on_batch",
    "lr_at",
    "student_recipe",
    "train_student",
]

METHODS: tuple[str, ...] = ("vanilla", "dmdistill", "cfgdistill", "cadistill")
"""The four students of the paper's Table 1 we train."""

BANK_OF_METHOD: dict[str, str | None] = {"vanilla": None, "dmdistill": "raw", "cfgdistill": "cfg",
                                         "cadistill": "clarid"}
"""The :data:`paperlib.teaching.BANK_KINDS` each method is taught from."""

PAIRINGS: tuple[str, ...] = ("random", "matched")
"""``"random"``: a fresh same-class entry per sample and step (the paper); ``"matched"``: the control."""

CONDITIONS: tuple[str, ...] = ("class", "null")
"""Teacher features in the CKA term: class-conditioned (the paper) or null-class (the control)."""

STAGE = "student"
STAGE_VERSION = 1

MONITOR_N = 2000
"""Class-stratified test images whose accuracy is logged after every epoch (the full test set at the end)."""


def _o(default, note: str):
    return field(default=default, metadata={"tag": "O", "note": note})


@dataclass(frozen=True)
class StudentRecipe:
    """Everything that determines a trained student, apart from its data and teaching bank.

    Attributes:
        dataset: A :data:`paperlib.data.DATASETS` name.
        method: One of :data:`METHODS`.
        seed: Seeds the initialisation, the batch order, the augmentation and the pairing draws.
        student: The network.
        epochs: Passes over the training set.
        batch_size: Training images per step (as many bank images beside them).
        lr: Peak learning rate (spec §8.8: 0.1).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay of SGD on every parameter (5e-4).
        warmup_epochs: Linear warm-up before the cosine decay.
        crop_padding: Reflection padding of the random crops (4 at 32 px, 2 at 16 px).
        hflip: Random horizontal flips.
        weights: λ's and τ of Eq. 6 (used terms only: DMDistill uses λ_CKA alone).
        pairing: One of :data:`PAIRINGS` (CFGDistill, CaDistill).
        condition: One of :data:`CONDITIONS` (CFGDistill, CaDistill).
        checkpoint_every: Steps between resume checkpoints (not part of the key).
    """

    dataset: str = "cifar10"
    method: str = "cadistill"
    seed: int = 0
    student: StudentConfig = StudentConfig()
    epochs: int = _o(30, "paper: 200 (ResNet-18); see the module docstring")
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = _o(1.0, "linear warm-up, then cosine to 0 (paper: step decay at 100, 150)")
    crop_padding: int = 4
    hflip: bool = True
    weights: DistillWeights = DistillWeights()
    pairing: str = "random"
    condition: str = "class"
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.pairing not in PAIRINGS or self.condition not in CONDITIONS:
            raise ValueError(f"pairing must be one of {PAIRINGS} and condition one of {CONDITIONS}, got "
                             f"{self.pairing!r}, {self.condition!r}")
        if (self.pairing, self.condition) != ("random", "class") and self.method not in ("cfgdistill", "cadistill"):
            raise ValueError(f"pairing={self.pairing!r} and condition={self.condition!r} are controls of CFGDistill "
                             f"and CaDistill; {self.method} uses no bank images")
        for name in ("seed", "crop_padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1 or self.warmup_epochs < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, momentum in [0, 1), warmup_epochs >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.momentum}, {self.warmup_epochs}")

    @property
    def bank_kind(self) -> str | None:
        """The kind of bank the method needs (``None``: Vanilla)."""
        return BANK_OF_METHOD[self.method]

    def used_weights(self) -> dict:
        """The λ's and τ that enter the loss of the method (the others would not change the student)."""
        w = self.weights.to_dict()
        if self.method == "vanilla":
            return {}
        if self.method == "dmdistill":
            return {"cka": w["cka"]}
        return w

    def to_dict(self) -> dict:
        """The key's fields: everything but ``checkpoint_every``, and only the terms the method uses."""
        d = asdict(self)
        d.pop("checkpoint_every")
        d["student"] = self.student.to_dict()
        d["weights"] = self.used_weights()
        if self.method not in ("cfgdistill", "cadistill"):
            d.pop("pairing")
            d.pop("condition")
        return d


def student_recipe(dataset: str, method: str, profile: str = "full", seed: int = 0, **overrides) -> StudentRecipe:
    """The book's recipe of a student (module docstring); ``"smoke"``: a ResNet-8 at widths 8-16-32 for 2
    epochs of batch 32 (seconds on the smoke data).

    Args:
        dataset: Dataset name.
        method: One of :data:`METHODS`.
        profile: ``"full"`` or ``"smoke"``.
        seed: Training seed.
        **overrides: :class:`StudentRecipe` fields (e.g. ``weights``, ``pairing``, ``condition``, ``epochs``).
    """
    if profile not in ("full", "smoke"):
        raise ValueError(f"profile must be 'full' or 'smoke', got {profile!r}")
    if dataset == "cifar10":
        student, padding = StudentConfig(), 4
    elif dataset == "shapes":
        student, padding = StudentConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), 2
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    base = {"dataset": dataset, "method": method, "seed": seed, "student": student, "crop_padding": padding}
    if profile == "smoke":
        base.update(student=replace(student, blocks=1, widths=(8, 16, 32)), epochs=2, batch_size=32,
                    warmup_epochs=0.5, checkpoint_every=20)
    return StudentRecipe(**{**base, **overrides})


class TrainingIncomplete(_TrainingIncomplete):
    """A time budget stopped student training; a checkpoint was written and calling again resumes from it."""


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up to ``peak`` over ``warmup`` steps, then a cosine
    decay to 0 at ``total``.

    ``peak (step + 1) / warmup`` for ``step < warmup``, else ``peak (1 + cos(π (step − warmup) /
    (total − warmup))) / 2``.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ----------------------------------------------------------------------------------------------------------
# Pairing training images with bank entries
# ----------------------------------------------------------------------------------------------------------


class Pairing:
    """Which bank entry each training image of a minibatch is taught with.

    ``"random"``: a fresh draw, uniform over the bank's entries of the image's class, with replacement
    (spec §8.1, §12 #15); ``"matched"``: the entry whose seed image is this training image when it has one,
    else a random draw; ``"one_to_one"``: the entry of this very image (DMDistill's ``"raw"`` bank; every
    training image must have one).

    Args:
        bank: The teaching bank.
        train_labels: ``[N]`` int64 labels of the training set the bank's ``indices`` index (checked against
            the bank's labels).
        mode: ``"random"``, ``"matched"`` or ``"one_to_one"``.
        num_classes: Classes of the training set.

    Raises:
        ValueError: The bank's labels disagree with the training labels at its indices, a class of the
            training set has no entry (random draws), or an image has no entry (``"one_to_one"``).
    """

    MODES = ("random", "matched", "one_to_one")

    def __init__(self, bank: TeachingBank, train_labels: Tensor, mode: str, num_classes: int):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        n = len(train_labels)
        self.mode, self.table = mode, bank.row_table(n)
        if not torch.equal(train_labels[bank.indices], bank.labels):
            bad = int((train_labels[bank.indices] != bank.labels).sum())
            raise ValueError(f"{bad} of the bank's {len(bank)} entries have another label than the training image "
                             f"they index: the bank was made for other data or its indices are misaligned")
        self.labels = bank.labels
        if mode == "one_to_one":
            missing = int((self.table < 0).sum())
            if missing:
                raise ValueError(f"one-to-one pairing needs an entry for every training image; {missing} of {n} "
                                 f"have none")
            return
        counts = torch.bincount(bank.labels, minlength=num_classes)
        absent = sorted(set(torch.unique(train_labels).tolist()) - set(torch.nonzero(counts)[:, 0].tolist()))
        if absent:
            raise ValueError(f"the bank has no entry of classes {absent}, which the training set holds: a same-class "
                             f"draw is impossible (use a bank that covers every class)")
        self.order = torch.argsort(bank.labels, stable=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def draw(self, train_indices: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Bank rows for a minibatch.

        Args:
            train_indices: ``[B]`` int64 training-set rows of the minibatch.
            labels: ``[B]`` their labels.
            generator: Draws the random entries (``B`` uniform numbers, in every mode but one-to-one).

        Returns:
            ``[B]`` int64 bank rows, each of the same class as its training image.
        """
        if self.mode == "one_to_one":
            return self.table[train_indices]
        u = torch.rand(len(labels), generator=generator, dtype=torch.float64)
        count = self.counts[labels]
        k = torch.minimum((u * count).long(), count - 1)
        rows = self.order[self.starts[labels] + k]
        if self.mode == "matched":
            own = self.table[train_indices]
            rows = torch.where(own >= 0, own, rows)
        return rows


def _pairing_mode(recipe: StudentRecipe) -> str:
    return "one_to_one" if recipe.method == "dmdistill" else recipe.pairing


def distill_terms(
    model: Student,
    recipe: StudentRecipe,
    x: Tensor,
    y: Tensor,
    train_indices: Tensor,
    generator: torch.Generator,
    bank: TeachingBank | None = None,
    pairing: Pairing | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """One step's loss terms (Eq. 6 for the recipe's method) on a minibatch, before the optimiser step.

    Draws the bank rows (:class:`Pairing`), augments the training images and the bank images alike with
    ``generator``, runs the student on the training images, then on the bank images (:func:`bank_pass`: their
    own batch statistics, running statistics untouched), and calls :func:`paperlib.distill.cadistill_loss`.

    Args:
        model: The student (train mode).
        recipe: Method and settings.
        x: ``[B, 3, S, S]`` uint8 training images.
        y: ``[B]`` their labels.
        train_indices: ``[B]`` their training-set rows (pairing looks entries up by them).
        generator: The step's generator (pairing draws first, then augmentation).
        bank: The method's bank (``None`` for Vanilla).
        pairing: Its :class:`Pairing` (``None`` for Vanilla).

    Returns:
        ``(terms, logits)``: :func:`~paperlib.distill.cadistill_loss`'s dict and the ``[B, C]`` logits of the
        training images.
    """
    b = len(y)
    f = x_bank = None
    if recipe.method != "vanilla":
        if bank is None or pairing is None:
            raise ValueError(f"method {recipe.method!r} needs its teaching bank and pairing")
        rows = pairing.draw(train_indices, y, generator)
        feats = bank.features_null if recipe.condition == "null" else bank.features
        if feats is None:
            raise ValueError("condition='null' needs a bank with features_null")
        f = feats[rows]
        if bank.images is not None:
            x_bank = bank.images[rows]
    inputs = x if x_bank is None else torch.cat([x, x_bank])
    inputs = random_crop_flip(inputs, generator, recipe.crop_padding, recipe.hflip).float() / 255
    logits, h = model.logits_and_features(inputs[:b])
    h_canon = None
    if x_bank is not None:
        with bank_pass(model):
            h_canon = model.features(inputs[b:])
    terms = cadistill_loss(logits, y, h, h_canon, f, recipe.weights)
    return terms, logits


@contextlib.contextmanager
def bank_pass(model: nn.Module) -> Iterator[nn.Module]:
    """The Canonical Samples' (or CFG outputs') pass through the student [O]: batch norm normalises them by
    their own batch statistics but leaves the running statistics alone, so the statistics used at test time
    are the training images' for every method, and the CE term never sees the bank images' statistics (a
    joint pass would shift both for CaDistill alone, whose Canonical Samples differ from training images in
    mean and contrast)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in bns:
            m.track_running_stats = True


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------

TERMS: tuple[str, ...] = ("loss", "ce", "align", "sep", "cka")
"""The loss terms logged per epoch (means over its steps, unweighted)."""


def _fresh_sums() -> dict[str, Tensor]:
    return {"sums": torch.zeros(len(TERMS), dtype=torch.float64), "correct": torch.zeros((), dtype=torch.long)}


def _check_bank(recipe: StudentRecipe, bank: TeachingBank | None, data_fp: str | None) -> None:
    kind = recipe.bank_kind
    if kind is None:
        if bank is not None:
            raise ValueError("vanilla training takes no teaching bank")
        return
    if bank is None or bank.kind != kind:
        raise ValueError(f"method {recipe.method!r} needs a {kind!r} bank, got "
                         f"{None if bank is None else repr(bank.kind)}")
    if bank.dataset != recipe.dataset:
        raise ValueError(f"the bank is of dataset {bank.dataset!r}, the recipe of {recipe.dataset!r}")
    if data_fp is not None and bank.data != data_fp:
        raise ProvenanceError(f"the {kind} bank indexes training data with fingerprint {bank.data}, but the "
                              f"student trains on data with fingerprint {data_fp}")


def train_student(
    recipe: StudentRecipe,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    bank: TeachingBank | None = None,
    monitor: tuple[Tensor, Tensor] | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    max_seconds: float | None = None,
) -> tuple[Student, dict[str, list[float]]]:
    """Train (or resume training) a student with its method's loss (:func:`distill_terms`).

    Every epoch visits ``N // batch_size`` minibatches of a fresh permutation (the last partial batch is
    dropped); SGD with momentum, the lr of :func:`lr_at` set before every step. With a ``checkpoint`` the state
    (weights, momentum, history, position in the epoch, running sums) is written every
    ``recipe.checkpoint_every`` steps, after every epoch, on SIGTERM/Ctrl-C (then ``KeyboardInterrupt`` is
    re-raised) and when ``max_seconds`` runs out, and read back when the file exists.

    Args:
        recipe: Method and settings.
        images: ``[N, 3, S, S]`` uint8 training images.
        labels: ``[N]`` int64 labels in ``[0, num_classes)``.
        num_classes: Classes.
        bank: The method's teaching bank (``None`` for Vanilla), indexing these images.
        monitor: ``(images, labels)`` whose accuracy is measured after every epoch (eval mode).
        progress: tqdm bar with the running terms.
        checkpoint: Resume file (``.safetensors``); ``None``: no checkpoints.
        max_seconds: Stop after the step that exceeds this many seconds of this call, with a checkpoint.

    Returns:
        ``(model, history)``: the student in eval mode with frozen parameters, and per-epoch lists
        ``loss``, ``ce``, ``align``, ``sep``, ``cka`` (means of the unweighted terms), ``train_acc``, ``lr``
        (at the epoch's end), ``seconds`` and, with ``monitor``, ``monitor_acc``.

    Raises:
        TrainingIncomplete: ``max_seconds`` ran out (the checkpoint is written; call again to resume).
        ProvenanceError: The checkpoint was made with another recipe or data.
    """
    check_tensor("images", images, ndim=4, dtype=torch.uint8, nonempty=True)
    if images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must have shape [N, 3, S, S], got {describe(images)}")
    check_int("num_classes", num_classes, 2)
    labels = check_labels("labels", labels, len(images), num_classes)
    n, size = images.shape[0], images.shape[-1]
    if max_seconds is not None and checkpoint is None:
        raise ValueError("max_seconds needs a checkpoint to resume from")
    if n < recipe.batch_size:
        raise ValueError(f"need at least batch_size = {recipe.batch_size} training images, got {n}")
    _check_bank(recipe, bank, None)
    if bank is not None and bank.images is not None and tuple(bank.images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"bank images {tuple(bank.images.shape[1:])} and training images "
                         f"{tuple(images.shape[1:])} differ in shape")
    pairing = None if bank is None else Pairing(bank, labels, _pairing_mode(recipe), num_classes)
    checkpoint = None if checkpoint is None else Path(checkpoint)
    init_ss, data_ss = np.random.SeedSequence(recipe.seed).spawn(2)
    model = make_student(recipe.student, num_classes, size, seed=seed_of(init_ss))
    batches = BatchOrder("per_step", seed_of(data_ss), n)
    bs, steps_per_epoch = recipe.batch_size, n // recipe.batch_size
    total, warmup = recipe.epochs * steps_per_epoch, round(recipe.warmup_epochs * steps_per_epoch)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)

    history: dict[str, list[float]] = {k: [] for k in (*TERMS, "train_acc", "lr", "seconds")}
    if monitor is not None:
        history["monitor_acc"] = []
    pos = LoopPosition()
    run = _fresh_sums()
    config = {**recipe.to_dict(), "num_classes": num_classes, "image_size": size, "n_images": n,
              "bank": None if bank is None else bank.fingerprint(recipe.condition)}
    data_fp = fingerprint(images, labels) if checkpoint is not None else ""
    if checkpoint is not None and artifact_exists(checkpoint):
        tensors, meta = load_artifact(checkpoint)
        check_resumable(checkpoint, meta, config, data_fp)
        model.load_state_dict(strip_prefix(tensors, "model."))
        opt.load_state_dict(unflatten_optimizer(tensors, meta["param_groups"]))
        history = {k: list(v) for k, v in meta["history"].items()}
        pos = LoopPosition(meta["epoch"], meta["step"], meta["epoch_seconds"])
        run = {"sums": tensors["run.sums"], "correct": tensors["run.correct"]}
        log.info("resuming %s at epoch %d, step %d/%d", checkpoint.name, pos.epoch, pos.step, steps_per_epoch)
    batches.start_epoch(pos.epoch)

    def save() -> None:
        if checkpoint is None:
            return
        opt_tensors, opt_groups = flatten_optimizer(opt)
        save_artifact(checkpoint, {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors,
                                   "run.sums": run["sums"], "run.correct": run["correct"]}, {
            "stage": f"{STAGE}_resume", "config": config, "data": data_fp, "epoch": pos.epoch, "step": pos.step,
            "epoch_seconds": round(pos.epoch_seconds, 3), "history": history, "param_groups": opt_groups,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, max_bytes=PUBLISH_MAX_BYTES)

    def train_step(epoch: int, step: int) -> None:
        idx = batches.perm[step * bs: (step + 1) * bs]
        lr = lr_at(epoch * steps_per_epoch + step, total, warmup, recipe.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        terms, logits = distill_terms(model, recipe, images[idx], labels[idx], idx, batches.generator(epoch, step),
                                      bank, pairing)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        run["sums"] += torch.stack([terms[k].detach().double() for k in TERMS])
        run["correct"] += (logits.detach().argmax(1) == labels[idx]).sum()
        if step % 20 == 0:
            bar.set_postfix(epoch=epoch + 1, **{k: f"{v / (step + 1):.3f}" for k, v in
                                                zip(TERMS, run["sums"].tolist()) if v})

    def end_epoch(epoch: int, seconds: float) -> None:
        for k, v in zip(TERMS, (run["sums"] / steps_per_epoch).tolist()):
            history[k].append(v)
        history["train_acc"].append(run["correct"].item() / (steps_per_epoch * bs))
        history["lr"].append(lr_at((epoch + 1) * steps_per_epoch - 1, total, warmup, recipe.lr))
        history["seconds"].append(seconds)
        if monitor is not None:
            history["monitor_acc"].append(accuracy(predict(model, monitor[0]), monitor[1]))
        run.update(_fresh_sums())
        if epoch + 1 < recipe.epochs:
            batches.start_epoch(epoch + 1)
        log.info("%s student: epoch %d/%d, %s, train acc %.4f%s, %.0f s", recipe.method, epoch + 1, recipe.epochs,
                 ", ".join(f"{k} {history[k][-1]:.4f}" for k in TERMS), history["train_acc"][-1],
                 f", monitor acc {history['monitor_acc'][-1]:.4f}" if monitor is not None else "", seconds)

    def incomplete(where: str) -> TrainingIncomplete:
        return TrainingIncomplete(f"{recipe.method} student: the budget of {max_seconds:.0f} s ran out {where}; "
                                  f"checkpoint {checkpoint}")

    bar = tqdm(total=total, initial=pos.epoch * steps_per_epoch + pos.step, desc=f"{recipe.method} student",
               disable=not progress, mininterval=1.0)
    model.train()
    try:
        run_epochs(pos, recipe.epochs, steps_per_epoch, train_step, end_epoch, save, incomplete,
                   max_seconds=max_seconds, checkpoint_every=recipe.checkpoint_every, on_step=bar.update)
    finally:
        bar.close()
    model.eval().requires_grad_(False)
    return model, history


def _monitor_split(test: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """A class-stratified subset of at most :data:`MONITOR_N` test images (CIFAR-10 is sorted by class)."""
    images, labels = test
    if len(labels) <= MONITOR_N:
        return images, labels
    keep = stratified_subset(labels, n=MONITOR_N, seed=0)
    return images[keep], labels[keep]


def load_or_train_student(
    recipe: StudentRecipe,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    data_fingerprint: str,
    *,
    bank: TeachingBank | None = None,
    test: tuple[Tensor, Tensor] | Callable[[], tuple[Tensor, Tensor]] | None = None,
    publish: bool = False,
    progress: bool = True,
    max_seconds: float | None = None,
) -> tuple[Student, dict]:
    """The student of ``(recipe, data, bank)``: loaded from the artifacts/cache, else trained (resumably) and saved.

    The key covers :meth:`StudentRecipe.to_dict`, ``num_classes``, the image size and count, the data
    fingerprint and the bank's :meth:`~paperlib.teaching.TeachingBank.fingerprint`. Training resumes from and
    checkpoints into ``<key>.resume.safetensors`` beside the artifact (deleted once the artifact is saved).

    Args:
        recipe: Method and settings.
        images: ``[N, 3, S, S]`` uint8 training images.
        labels: ``[N]`` int64.
        num_classes: Classes.
        data_fingerprint: :func:`paperlib.data.fingerprint` of the training set (manifest ``data``, checked).
        bank: The method's teaching bank (``None`` for Vanilla).
        test: ``(images, labels)`` of the test split, or a function returning them (called only when
            training): the final ``test_accuracy`` (and ``test_n``) and the per-epoch ``monitor_acc`` on a
            class-stratified subset of :data:`MONITOR_N` of them.
        publish: Save into the committed ``artifacts/`` instead of the scratch cache.
        progress: tqdm bar.
        max_seconds: Time budget of this call's training.

    Returns:
        ``(model, manifest)``: the student (eval, frozen) and its manifest plus ``history`` (per-epoch lists).

    Raises:
        TrainingIncomplete: ``max_seconds`` ran out; call again to resume.
    """
    if not isinstance(data_fingerprint, str) or not data_fingerprint:
        raise ValueError(f"data_fingerprint must be a non-empty str, got {data_fingerprint!r}")
    _check_bank(recipe, bank, data_fingerprint)
    config = {**recipe.to_dict(), "num_classes": num_classes, "image_size": images.shape[-1],
              "n_images": images.shape[0], "data": data_fingerprint,
              "bank": None if bank is None else bank.fingerprint(recipe.condition)}
    key = config_key(config, STAGE_VERSION)
    for pub in (True, False):
        path = artifact_path(STAGE, config, STAGE_VERSION, pub)
        if artifact_exists(path):
            log.info("found cached %s (%s), loading", STAGE, path.name)
            return load_student(path, data_fingerprint)
    final = artifact_path(STAGE, config, STAGE_VERSION, publish)
    if publish:
        check_may_compute(f"student {recipe.dataset}/{recipe.method} seed {recipe.seed} ({key})",
                          f"make students DATASET={recipe.dataset} METHOD={recipe.method} SEEDS={recipe.seed}")
    resume = final.with_name(f"{key}.resume.safetensors")
    split = test() if callable(test) else test
    try:
        model, history = train_student(recipe, images, labels, num_classes, bank=bank, progress=progress,
                                       monitor=None if split is None else _monitor_split(split),
                                       checkpoint=resume, max_seconds=max_seconds)
    except TrainingIncomplete as exc:
        raise TrainingIncomplete(f"training incomplete, call again to resume ({exc})") from None
    manifest = {
        "stage": STAGE, "version": STAGE_VERSION, "key": key, "config": config, "data": data_fingerprint,
        "dataset": recipe.dataset, "method": recipe.method, "seed": recipe.seed, "epochs": recipe.epochs,
        "bank": config["bank"], "bank_kind": recipe.bank_kind, "bank_n": None if bank is None else len(bank),
        "wall_time_s": round(math.fsum(history["seconds"]), 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paperlib": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if split is not None:
        manifest["test_accuracy"] = accuracy(predict(model, split[0]), split[1])
        manifest["test_n"] = int(split[1].shape[0])
        log.info("%s student %s: test accuracy %.4f", recipe.method, key, manifest["test_accuracy"])
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"history.{k}": torch.tensor(v, dtype=torch.float64) for k, v in history.items()})
    save_artifact(final, tensors, manifest)
    delete_artifact(resume)
    return load_student(final, data_fingerprint)


def load_student(path: str | Path, data_fingerprint: str | None = None) -> tuple[Student, dict]:
    """A saved student (eval, frozen) and its manifest plus ``history``, checked (key, tensors, data)."""
    path = Path(path)
    tensors, manifest = load_artifact(path, expect=None if data_fingerprint is None else {"data": data_fingerprint})
    key = path.name.split(".")[0]
    if manifest.get("key", key) != key:
        raise ProvenanceError(f"{path}: manifest key {manifest.get('key')!r}, expected {key!r}")
    c = manifest["config"]
    model = make_student(StudentConfig.from_dict(c["student"]), c["num_classes"], c["image_size"])
    model.load_state_dict(strip_prefix(tensors, "model."))
    model.eval().requires_grad_(False)
    history = {k: v.tolist() for k, v in strip_prefix(tensors, "history.").items()}
    return model, {**manifest, "history": history}


# ----------------------------------------------------------------------------------------------------------
# The book's students
# ----------------------------------------------------------------------------------------------------------


def book_students(
    dataset: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    profile: str = "full",
    *,
    progress: bool = True,
    max_seconds: float | None = None,
    **overrides,
) -> dict[tuple[str, int], tuple[Student, dict]]:
    """The book's students of ``dataset`` for every method and seed: loaded if saved, else trained.

    The training set is the dataset's CDM training set (:func:`paperlib.train.cdm_recipe`), the banks
    :func:`paperlib.teaching.book_bank`'s (the CDM is loaded only when a method needs a bank).

    Args:
        dataset: Dataset name.
        methods: :data:`METHODS` names.
        seeds: Training seeds.
        profile: ``"full"`` reads and saves the committed ``artifacts/student/``.
        progress: tqdm bars.
        max_seconds: Budget of the whole call (banks and students, one after another).
        **overrides: :class:`StudentRecipe` fields for every student (``weights``, ``pairing``, ...).

    Returns:
        ``{(method, seed): (student, manifest)}``.

    Raises:
        TrainingIncomplete, ComputeIncomplete: The budget ran out; call again to resume.
    """
    from paperlib.teaching import book_bank
    from paperlib.train import cdm_recipe, load_book_cdm

    data = cdm_recipe(dataset, profile).data
    images, labels = load_dataset(data, "train")
    fp = fingerprint(images, labels)
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    banks: dict[str, TeachingBank] = {}
    cdm = None
    out = {}
    for method in methods:
        kind = BANK_OF_METHOD.get(method)
        if kind is not None and kind not in banks:
            cdm = cdm or load_book_cdm(dataset, profile, progress)
            budget = None if deadline is None else max(0.0, deadline - time.perf_counter())
            banks[kind] = book_bank(cdm, profile, dataset, kind, progress, budget)
        for seed in seeds:
            recipe = student_recipe(dataset, method, profile, seed, **overrides)
            budget = None if deadline is None else max(0.0, deadline - time.perf_counter())
            out[(method, seed)] = load_or_train_student(
                recipe, images, labels, len(data.classes), fp, bank=banks.get(kind), publish=profile == "full",
                test=partial(load_dataset, data, "test"), progress=progress, max_seconds=budget)
    return out


def book_student(dataset: str, method: str, seed: int = 0, profile: str = "full", **kwargs) -> tuple[Student, dict]:
    """One of :func:`book_students`: ``(student, manifest)``."""
    return book_students(dataset, [method], [seed], profile, **kwargs)[(method, seed)]


def main(argv: list[str] | None = None) -> None:
    """``python -m paperlib.cadistill``: train the book's students of one dataset and method, seed after seed,
    in resumable pieces (``--max-minutes``: stop with a checkpoint, call again to resume). DMDistill first
    computes its bank (the CDM features of every training image) in resumable chunks."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m paperlib.cadistill", description=main.__doc__)
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more training seeds")
    parser.add_argument("--profile", choices=["smoke", "full"], default="full")
    parser.add_argument("--pairing", choices=PAIRINGS, default="random")
    parser.add_argument("--condition", choices=CONDITIONS, default="class")
    parser.add_argument("--align", type=float, default=None, help="λ_align (default DistillWeights')")
    parser.add_argument("--sep", type=float, default=None, help="λ_sep")
    parser.add_argument("--cka", type=float, default=None, help="λ_CKA")
    parser.add_argument("--epochs", type=int, default=None, help="default: the book's recipe")
    parser.add_argument("--sweep", action="store_true",
                        help="train chapter 6's λ sweep (BOOK_SWEEP, one λ at a time) instead of one setting")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop with a checkpoint after this long (call again to resume)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict = {}
    if args.method in ("cfgdistill", "cadistill"):
        overrides.update(pairing=args.pairing, condition=args.condition)
    lambdas = {k: v for k, v in (("align", args.align), ("sep", args.sep), ("cka", args.cka)) if v is not None}
    if lambdas:
        overrides["weights"] = replace(DistillWeights(), **lambdas)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    budget = None if args.max_minutes is None else 60 * args.max_minutes
    print(f"{args.dataset}: {args.method} students, seeds {args.seed}, threads {torch.get_num_threads()}, "
          f"{overrides or 'book recipe'}", flush=True)
    settings = [overrides]
    if args.sweep:
        if args.method not in ("cfgdistill", "cadistill") or lambdas:
            parser.error("--sweep is for cfgdistill/cadistill, without --align/--sep/--cka")
        settings = [{**overrides, "weights": replace(DistillWeights(), **{name: v})}
                    for name, values in BOOK_SWEEP.items() for v in values]
    deadline = None if budget is None else time.perf_counter() + budget
    students = {}
    try:
        for setting in settings:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            for (method, seed), got in book_students(args.dataset, [args.method], args.seed, args.profile,
                                                     max_seconds=left, **setting).items():
                students[(method, seed, str(setting.get("weights", "")))] = got
    except (TrainingIncomplete, ComputeIncomplete) as exc:
        print(f"paused: {exc}")
        return
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the step finished and the checkpoint is written
        print("interrupted: checkpoint written; run the same command again to resume", flush=True)
        raise SystemExit(130) from None
    for (method, seed, _), (_, manifest) in students.items():
        lam = manifest["config"].get("weights") or {}
        print(f"done: {method} seed {seed}{f' {lam}' if lam else ''}: test accuracy "
              f"{manifest.get('test_accuracy', math.nan):.4f} ({manifest['key']}, {manifest['wall_time_s']:.0f} s)")


# ----------------------------------------------------------------------------------------------------------
# What chapter 6 reports
# ----------------------------------------------------------------------------------------------------------

BOOK_SWEEP: dict[str, tuple[float, ...]] = {"align": (0.0, 0.1, 0.5, 1.0), "sep": (0.0, 0.1, 0.5, 1.0),
                                            "cka": (0.0, 0.5, 1.0, 2.0)}
"""Chapter 6's one-at-a-time λ sweep (:data:`paperlib.distill.LAMBDA_GRID` plus 0, which removes the term)."""

PAPER_TABLE1_CLEAN: dict[str, float] = {"vanilla": 92.4, "dmdistill": 92.9, "cfgdistill": 92.9, "cadistill": 93.1}
"""The paper's Table 1, clean CIFAR-10 accuracy (%) of its ResNet-18 students (spec §10; one run each)."""


def loss_terms_on_batch(
    banks: dict[str, TeachingBank],
    images: Tensor,
    labels: Tensor,
    recipe: StudentRecipe,
    n: int = 16,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Each method's loss terms on one small batch of training images, for one freshly initialised student.

    Args:
        banks: ``kind -> bank`` for the methods to show (a method whose bank is missing is left out).
        images: ``[N, 3, S, S]`` uint8 training set.
        labels: ``[N]`` labels.
        recipe: The student recipe (its method is replaced per row).
        n: Batch size.
        seed: Seeds the student, the batch and the pairing draws.

    Returns:
        ``(table, info)``: one row per method with ``ce``, ``align``, ``sep``, ``cka`` and the weighted ``loss``
        (Eq. 6); ``info`` has ``n``, ``classes`` (distinct classes in the batch) and ``fallback``, the anchors
        of L_sep without a same-class partner among the drawn bank images (Eq. 12).
    """
    import pandas as pd

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=g)[:n]
    x, y = images[idx], labels[idx]
    model = make_student(recipe.student, int(labels.max()) + 1, images.shape[-1], seed=seed)
    rows = {}
    for method in METHODS:
        kind = BANK_OF_METHOD[method]
        if kind is not None and kind not in banks:
            continue
        r = replace(recipe, method=method)
        bank = None if kind is None else banks[kind]
        pairing = None if bank is None else Pairing(bank, labels, _pairing_mode(r), int(labels.max()) + 1)
        with torch.no_grad():
            terms, _ = distill_terms(model, r, x, y, idx, torch.Generator().manual_seed(seed), bank, pairing)
        rows[method] = {k: terms[k].item() for k in ("ce", "align", "sep", "cka", "loss")}
    counts = torch.bincount(y)
    info = {"n": n, "classes": int((counts > 0).sum()), "fallback": int((counts[y] == 1).sum())}
    return pd.DataFrame(rows).T, info


def history_array(students: dict[tuple[str, int], tuple[Student, dict]], method: str, key: str) -> np.ndarray:
    """``[seeds, epochs]`` of one history entry (e.g. ``"monitor_acc"``, ``"cka"``) of a method's students."""
    runs = [m["history"][key] for (meth, _), (_, m) in sorted(students.items()) if meth == method]
    return np.asarray(runs, dtype=float)


def accuracy_table(students: dict[tuple[str, int], tuple[Student, dict]], paper: dict[str, float] | None = None
                   ) -> pd.DataFrame:
    """Clean test accuracy (%) per method: mean, std over seeds (sample std), seeds, and the paper's value.

    Args:
        students: ``{(method, seed): (student, manifest)}`` (:func:`book_students`), or for controls any
            ``{(name, seed): ...}``.
        paper: ``name -> %`` shown as the column ``paper`` (e.g. :data:`PAPER_TABLE1_CLEAN`).
    """
    import pandas as pd

    rows = {}
    for (name, _), (_, manifest) in sorted(students.items(), key=lambda kv: kv[0][1]):
        rows.setdefault(name, []).append(100 * manifest["test_accuracy"])
    table = pd.DataFrame({name: {"mean": np.mean(v), "std": np.std(v, ddof=1) if len(v) > 1 else np.nan,
                                 "seeds": len(v)} for name, v in rows.items()}).T
    table["seeds"] = table["seeds"].astype(int)
    if paper is not None:
        table["paper"] = [paper.get(name, np.nan) for name in table.index]
    return table


def lambda_sweep(
    dataset: str,
    grid: dict[str, Sequence[float]],
    seeds: Sequence[int],
    profile: str = "full",
    method: str = "cadistill",
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Clean accuracy of CaDistill students with one λ changed at a time (the others at their defaults).

    Args:
        dataset: Dataset name.
        grid: ``"align" | "sep" | "cka" -> values``.
        seeds: Training seeds per value.
        profile: As :func:`book_students` (the default λ's give the main students, read from the cache).
        method: ``"cadistill"`` or ``"cfgdistill"``.
        progress: tqdm bars.

    Returns:
        ``name -> DataFrame(index=value, columns mean, std, seeds)`` of the test accuracy (fraction).
    """
    import pandas as pd

    out = {}
    for name, values in grid.items():
        rows = {}
        for v in values:
            weights = replace(DistillWeights(), **{name: float(v)})
            got = book_students(dataset, [method], seeds, profile, weights=weights, progress=progress)
            acc = [m["test_accuracy"] for _, m in got.values()]
            rows[float(v)] = {"mean": np.mean(acc), "std": np.std(acc, ddof=1) if len(acc) > 1 else np.nan,
                              "seeds": len(acc)}
        out[name] = pd.DataFrame(rows).T.sort_index()
    return out


def clean_claim(table: pd.DataFrame, method: str = "cadistill", reference: str = "vanilla") -> str:
    """The verdict on "``method`` keeps clean accuracy": ``"holds"`` unless it is below ``reference`` by more
    than two standard errors over seeds (``"does not"``); ``"cannot tell"`` with fewer than two seeds."""
    from paperlib.metrics import two_standard_errors

    a, b = table.loc[method], table.loc[reference]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return "cannot tell"
    noise = two_standard_errors(a["std"] / a["seeds"] ** 0.5, b["std"] / b["seeds"] ** 0.5)
    return "does not" if a["mean"] - b["mean"] < -noise else "holds"


def clean_verdict(table: pd.DataFrame, method: str = "cadistill", reference: str = "vanilla") -> str:
    """One clause: is ``method``'s mean clean accuracy above, below or within two standard errors of
    ``reference``'s (standard errors over seeds, from :func:`accuracy_table`'s ``mean``, ``std``, ``seeds``)?"""
    from paperlib.metrics import two_standard_errors

    a, b = table.loc[method], table.loc[reference]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return f"{method} {a['mean'] - b['mean']:+.2f} points against {reference} (one seed: no error bar)"
    gap = a["mean"] - b["mean"]
    noise = two_standard_errors(a["std"] / a["seeds"] ** 0.5, b["std"] / b["seeds"] ** 0.5)
    if abs(gap) <= noise:
        return f"{method} is within two standard errors of {reference} ({gap:+.2f} ± {noise:.2f} points)"
    return f"{method} is {'above' if gap > 0 else 'below'} {reference} by {abs(gap):.2f} points (± {noise:.2f})"


if __name__ == "__main__":
    main()
