"""Resumable training state as flat tensor dicts (what :func:`paperlib.cache.save_artifact` stores), and the
pieces every resumable trainer shares.

An optimizer's state becomes ``opt.<param index>.<name>`` tensors plus its JSON-able ``param_groups``;
a module's state is kept under a prefix (``model.``, ``ema.``) and recovered with :func:`strip_prefix`.
:class:`BatchOrder` draws the minibatch order and augmentation of a run so that they are reproducible from any
checkpoint, :func:`deferred_interrupt` turns SIGTERM/Ctrl-C into a flag checked between steps, and
:func:`check_resumable` refuses a checkpoint made with other settings or data, and :func:`run_epochs` drives
the epochs of a resumable run (checkpoints every N steps, after every epoch, on a signal, when the budget runs
out).
Used by the CDM trainer (:mod:`paperlib.train`), the classifiers (:mod:`paperlib.classifiers`) and the
students (:mod:`paperlib.cadistill`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from paperlib.cache import ProvenanceError

__all__ = ["BatchOrder", "LoopPosition", "StopFlag", "check_resumable", "deferred_interrupt", "flatten_optimizer",
           "run_epochs", "seed_of", "strip_prefix", "unflatten_optimizer"]


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    """``(tensors, param_groups)``: the optimizer's per-parameter state as ``opt.<i>.<name>`` tensors."""
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": torch.as_tensor(v) for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def unflatten_optimizer(tensors: dict[str, Tensor], groups: list) -> dict:
    """The ``state_dict`` :func:`flatten_optimizer` took apart (other keys of ``tensors`` are ignored)."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": groups}


def strip_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` whose name starts with ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def seed_of(ss: np.random.SeedSequence) -> int:
    """One 32-bit seed drawn from a :class:`numpy.random.SeedSequence`."""
    return int(ss.generate_state(1)[0])


class BatchOrder:
    """The minibatch order and augmentation draws of a run, reproducible from any checkpoint.

    ``"stream"``: one generator over the whole run (the v2 classifiers' order); its state and the current
    epoch's permutation go into the checkpoint. ``"per_step"``: epoch ``e``'s permutation is drawn from a
    generator seeded by ``(seed, e)`` and step ``i``'s draws from one seeded by ``(seed, e, i)``, so nothing
    needs saving.

    Args:
        mode: ``"stream"`` or ``"per_step"``.
        seed: The run's data seed.
        n: Training set size (the permutations are of ``range(n)``).
    """

    def __init__(self, mode: str, seed: int, n: int):
        if mode not in ("stream", "per_step"):
            raise ValueError(f"mode must be 'stream' or 'per_step', got {mode!r}")
        self.mode, self.seed, self.n = mode, seed, n
        self.stream = torch.Generator().manual_seed(seed) if mode == "stream" else None
        self.perm: Tensor | None = None

    def _seeded(self, epoch: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed_of(np.random.SeedSequence([self.seed, epoch, step + 1])))

    def start_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s permutation (:attr:`perm`)."""
        g = self.stream if self.stream is not None else self._seeded(epoch, -1)
        self.perm = torch.randperm(self.n, generator=g)

    def generator(self, epoch: int, step: int) -> torch.Generator:
        """The generator of step ``step`` of epoch ``epoch`` (augmentation, pairing draws)."""
        return self.stream if self.stream is not None else self._seeded(epoch, step)

    def state(self) -> dict[str, Tensor]:
        """Tensors a checkpoint must hold to continue the order (none for ``"per_step"``)."""
        if self.stream is None:
            return {}
        return {"rng.stream": self.stream.get_state(), "rng.perm": self.perm}

    def load(self, tensors: dict[str, Tensor], epoch: int) -> None:
        """Continue from a checkpoint's :meth:`state` taken in epoch ``epoch``."""
        if self.stream is None:
            self.start_epoch(epoch)
        else:
            self.stream.set_state(tensors["rng.stream"])
            self.perm = tensors["rng.perm"]


class StopFlag:
    """Set by :func:`deferred_interrupt` when SIGTERM or Ctrl-C arrived."""

    requested = False


@contextmanager
def deferred_interrupt() -> Iterator[StopFlag]:
    """SIGTERM and Ctrl-C set a flag that the training loop checks between steps, so the checkpoint it then
    writes (before raising ``KeyboardInterrupt``) holds a consistent state; a second signal interrupts at once.

    :func:`paperlib.train._sigterm_as_interrupt`'s pattern, deferred to the end of the step: an interrupt in
    the middle of one would leave half-updated weights or batch-norm statistics in the checkpoint.
    """
    flag = StopFlag()

    def handler(signum, frame):  # noqa: ARG001
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not in the main thread: no handlers, nothing deferred
        yield flag
        return
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def check_resumable(path: Path, meta: dict, config: dict, data_fp: str) -> None:
    """Refuse a checkpoint of another config or other data, naming the fields that differ.

    Args:
        path: The checkpoint (for the message).
        meta: Its manifest (``config`` and ``data`` are compared).
        config: The JSON-able config of the run about to resume.
        data_fp: The fingerprint of its training data.

    Raises:
        ProvenanceError: A field of the config or the data fingerprint differs.
    """
    theirs, ours = json.loads(json.dumps(meta.get("config") or {})), json.loads(json.dumps(config))
    diffs = [f"{k}: checkpoint {theirs.get(k)!r}, now {ours.get(k)!r}"
             for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if meta.get("data") != data_fp:
        diffs.append(f"data fingerprint: checkpoint {meta.get('data')!r}, now {data_fp!r}")
    if diffs:
        raise ProvenanceError(
            f"cannot resume {path}: it was made with other settings ({'; '.join(diffs)}). Train with the "
            f"checkpoint's settings and data, or delete {path.name} with its .json and shards "
            f"(paperlib.cache.delete_artifact) to start afresh."
        )


class LoopPosition:
    """Where a resumable run is: ``epoch`` (0-based, the one under way), ``step`` within it, and the seconds
    spent in it so far (summed over the pieces of an interrupted epoch)."""

    def __init__(self, epoch: int = 0, step: int = 0, epoch_seconds: float = 0.0):
        self.epoch, self.step, self.epoch_seconds = int(epoch), int(step), float(epoch_seconds)


def run_epochs(
    pos: LoopPosition,
    epochs: int,
    steps_per_epoch: int,
    train_step: Callable[[int, int], None],
    end_epoch: Callable[[int, float], None],
    save: Callable[[], None],
    incomplete: Callable[[str], Exception],
    *,
    max_seconds: float | None = None,
    checkpoint_every: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> None:
    """Drive a resumable training loop from ``pos`` to the end of epoch ``epochs``, checkpointing through
    ``save``: after every epoch, every ``checkpoint_every`` global steps, on SIGTERM/Ctrl-C (deferred to the
    end of the step, then ``KeyboardInterrupt``) and when ``max_seconds`` of this call run out (then
    ``incomplete(where)`` is raised, ``where`` saying e.g. ``"at epoch 1/2, step 1/4"``).

    Args:
        pos: Updated in place (``save`` reads it): resumed runs pass the checkpoint's position.
        epochs: Epochs of the run.
        steps_per_epoch: Steps per epoch.
        train_step: ``(epoch, step)`` runs one optimisation step (and accumulates its statistics).
        end_epoch: ``(epoch, seconds)`` closes an epoch (history, reset statistics, start the next epoch's
            batch order), before the epoch's checkpoint.
        save: Writes the checkpoint of the current state.
        incomplete: Builds the exception raised when the budget runs out.
        max_seconds: Budget of this call.
        checkpoint_every: Also checkpoint every this many global steps within epochs.
        on_step: Called after every step (e.g. a progress bar's update).
    """
    call_start = time.perf_counter()
    with deferred_interrupt() as stop:

        def pause(where: str) -> None:
            save()
            if stop.requested:
                raise KeyboardInterrupt
            raise incomplete(where)

        def out_of_time() -> bool:
            return max_seconds is not None and time.perf_counter() - call_start >= max_seconds

        while pos.epoch < epochs:
            start = time.perf_counter()
            while pos.step < steps_per_epoch:
                train_step(pos.epoch, pos.step)
                pos.step += 1
                if on_step is not None:
                    on_step()
                if pos.step == steps_per_epoch:
                    break
                if stop.requested or out_of_time():
                    pos.epoch_seconds += time.perf_counter() - start
                    pause(f"at epoch {pos.epoch + 1}/{epochs}, step {pos.step}/{steps_per_epoch}")
                if checkpoint_every and (pos.epoch * steps_per_epoch + pos.step) % checkpoint_every == 0:
                    now = time.perf_counter()
                    pos.epoch_seconds, start = pos.epoch_seconds + now - start, now
                    save()
            pos.epoch_seconds += time.perf_counter() - start
            end_epoch(pos.epoch, pos.epoch_seconds)
            pos.epoch, pos.step, pos.epoch_seconds = pos.epoch + 1, 0, 0.0
            save()
            if (stop.requested or out_of_time()) and pos.epoch < epochs:
                pause(f"after epoch {pos.epoch}/{epochs}")
