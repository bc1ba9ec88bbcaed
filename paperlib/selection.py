"""Choosing CLARID's hyperparameters: ``t*`` from two-stage sampling (paper §3.2.1, App. H.1), and the
hand-over of chosen values from one chapter to the next.

Two-stage sampling runs the CDM unconditionally from ``T`` down to a switch time ``t_c`` and conditionally
below it. The later the condition comes in (the smaller ``t_c``), the less of the image it can still decide,
so the classifiers' accuracy on the samples rises with ``t_c`` and saturates; ``t*`` is the saturation point.
The paper gives no rule for it; the book's (:func:`plateau_t_star` [O]) takes the earliest ``t_c`` whose paired
gap to fully conditional sampling, and every later one's, lies within a margin with one-sided confidence
(``gap + z se <= margin``), and shows beside it a fixed tolerance on the point estimates
(:func:`choose_t_star`: the first ``t_c`` within ``delta`` of the maximum) and the Kneedle knee.

Chapters run in order; a value one chapter chooses (``t*``, the feature layer and time) is recorded with
:func:`record_choice` and read by the next with :func:`load_choice`. The full profile keeps them in the
committed ``artifacts/choices/``, other profiles in the scratch cache.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from paperlib.cache import PendingRun, dir_lock, load_or_compute, module_fingerprint, remove_stale_tmp, write_durable
from paperlib.data import DATASET_NAMES, from_model_range
from paperlib.diffusion import ddim_grid, two_stage_sample
from paperlib.metrics import knee_point, saturation_point
from paperlib.models import CDM, NUM_TIMESTEPS, clips_x0, model_device
from paperlib.paths import ARTIFACTS_DIR, cache_dir
from paperlib.progress import tqdm


def _check_grid(alpha_bar: Tensor, t_switches: Sequence[int], n_per_class: int, num_steps: int) -> None:
    grid = ddim_grid(len(alpha_bar) - 1, num_steps).tolist()
    bad = [t for t in t_switches if t not in grid]
    if bad:
        raise ValueError(f"t_switches must lie on the {num_steps}-step DDIM grid (step {grid[1]}), got {bad}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")


@torch.no_grad()
def two_stage_predictions(
    model: CDM,
    classifiers: dict[str, nn.Module],
    alpha_bar: Tensor,
    t_c: int,
    n_per_class: int,
    num_steps: int = 50,
    seed: int = 0,
    batch_size: int = 500,
    clip_x0: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Two-stage samples at one switch time ``t_c`` and every classifier's predicted class for them.

    Batch ``b`` starts from the noise of generator seed ``seed * 100_003 + b`` whatever ``t_c`` is, so curves
    over ``t_c`` compare switch times, not noise draws.

    Returns:
        ``(samples [C * n_per_class, 3, H, W] uint8, {name: predicted class [C * n_per_class]})``, samples
        ordered class by class.
    """
    from paperlib.classifiers import predict

    _check_grid(alpha_bar, [t_c], n_per_class, num_steps)
    dev = model_device(model)
    labels = torch.arange(model.num_classes).repeat_interleave(n_per_class)
    imgs = []
    for b, start in enumerate(range(0, len(labels), batch_size)):
        y = labels[start : start + batch_size].to(dev)
        # x_T is drawn on the CPU from the seed, then moved: the same seed gives the same noise on any device
        x = two_stage_sample(model, (len(y), *model.latent_shape), y, alpha_bar, t_c, model.null_class,
                             generator=seed * 100_003 + b, num_steps=num_steps, device=dev,
                             clip_x0=clips_x0(model, clip_x0))
        imgs.append(from_model_range(model.decode(x)).cpu())
    samples = torch.cat(imgs)
    return samples, {name: predict(clf, samples).argmax(1) for name, clf in classifiers.items()}


def _accuracy_rows(t_c: int, preds: dict[str, Tensor], labels: Tensor) -> list[dict]:
    correct = torch.stack([(p == labels).double() for p in preds.values()])  # [classifiers, N]
    n = correct.shape[1]
    rows = [{"t_c": t_c, "classifier": name, "accuracy": c.mean().item(),
             "se": (c.var(correction=0) / n).sqrt().item()} for name, c in zip(preds, correct)]
    # The mean's standard error is over samples of the per-sample fraction of classifiers that are right.
    per_sample = correct.mean(0)
    return rows + [{"t_c": t_c, "classifier": "mean", "accuracy": per_sample.mean().item(),
                    "se": (per_sample.var(correction=1) / n).sqrt().item() if n > 1 else float("nan")}]


def two_stage_accuracy(
    model: CDM,
    classifiers: dict[str, nn.Module],
    alpha_bar: Tensor,
    t_switches: Sequence[int],
    n_per_class: int,
    num_steps: int = 50,
    seed: int = 0,
    batch_size: int = 500,
    clip_x0: bool = True,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[int, Tensor]]:
    """Classifier accuracy on two-stage samples for every switch time ``t_c`` (App. H.1, Fig. 20).

    The same initial noise (seeded by ``seed`` and the batch) is used at every ``t_c``, so the curve
    compares switch times, not noise draws.

    Args:
        model: The CDM (needs a null class).
        classifiers: ``{name: model}`` taking uint8-range images (see :func:`paperlib.classifiers.predict`).
        alpha_bar: ``[T + 1]`` schedule.
        t_switches: Switch times on the ``num_steps`` grid (``T``: fully conditional; ``0``: unconditional).
        n_per_class: Samples per class and switch time (the paper: 5).
        num_steps: DDIM steps (the paper: 50).
        seed: Seed of the initial noise.
        batch_size: Samples per DDIM batch.
        clip_x0: Clamp the predicted clean image at every DDIM step (diffusers' ``clip_sample``).
        progress: tqdm bar.

    Returns:
        ``(table, samples)``: one row per ``(t_c, classifier)`` with ``accuracy`` and its standard error
        ``se`` over samples (plus a ``mean`` row per ``t_c``, the average of the classifiers as in the paper),
        and ``{t_c: [N, 3, H, W] uint8}``.
    """
    _check_grid(alpha_bar, t_switches, n_per_class, num_steps)
    labels = torch.arange(model.num_classes).repeat_interleave(n_per_class)
    rows, samples = [], {}
    for t_c in tqdm(list(t_switches), desc="two-stage sampling", disable=not progress):
        samples[t_c], preds = two_stage_predictions(model, classifiers, alpha_bar, t_c, n_per_class, num_steps,
                                                    seed, batch_size, clip_x0)
        rows += _accuracy_rows(t_c, preds, labels)
    return pd.DataFrame(rows), samples


def book_two_stage_accuracy(
    cdm,
    classifiers: dict[str, nn.Module],
    profile: str,
    t_switches: Sequence[int],
    n_per_class: int,
    num_steps: int = 50,
    seed: int = 0,
    keep_per_class: int = 4,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[int, Tensor]]:
    """:func:`two_stage_accuracy` for a chapter, cached per switch time: each ``t_c`` is one small artifact of
    the classifiers' predictions and a few samples per class, so an interrupted run resumes at the next ``t_c``
    and, in the full profile (published into ``artifacts/``), ``make book`` redraws chapter 2 without sampling.

    Args:
        cdm: A :class:`paperlib.train.BookCDM`.
        classifiers: ``{name: classifier}``; their weights are part of the cache key.
        profile: ``"full"`` publishes into ``artifacts/``.
        t_switches: Switch times on the ``num_steps`` grid.
        n_per_class: Samples per class and switch time.
        num_steps: DDIM steps.
        seed: Seed of the initial noise.
        keep_per_class: Samples per class and ``t_c`` kept for figures.
        progress: tqdm bar over switch times.

    Returns:
        ``(table, samples)`` as :func:`two_stage_accuracy`, with ``samples[t_c]`` of shape
        ``[C * keep_per_class, 3, H, W]`` (class by class); ``table.attrs["seconds"]`` is the sampling time the
        artifacts record (when they were computed, not this call's) and ``table.attrs["per_sample"]`` maps each
        ``t_c`` to the ``[C * n_per_class]`` share of classifiers right on each sample (for
        :func:`plateau_t_star`; sample ``j`` starts from the same noise at every ``t_c``).
    """
    _check_grid(cdm.alpha_bar, t_switches, n_per_class, num_steps)
    C = cdm.model.num_classes
    keep = min(keep_per_class, n_per_class)
    keep_rows = (torch.arange(C)[:, None] * n_per_class + torch.arange(keep)).flatten()
    labels = torch.arange(C).repeat_interleave(n_per_class)
    config = {"model": cdm.manifest["key"], "classifiers": {n: module_fingerprint(c) for n, c in classifiers.items()},
              "n_per_class": n_per_class, "num_steps": num_steps, "seed": seed, "keep_per_class": keep}
    rows, samples, seconds, per_sample = [], {}, 0.0, {}
    for t_c in tqdm(list(t_switches), desc="two-stage sampling", disable=not progress):

        def compute(t_c: int = t_c) -> dict[str, Tensor]:
            imgs, preds = two_stage_predictions(cdm.model, classifiers, cdm.alpha_bar, t_c, n_per_class, num_steps,
                                                seed)
            return {"samples": imgs[keep_rows], **{f"pred.{n}": p.to(torch.uint8) for n, p in preds.items()}}

        part, manifest = load_or_compute("two_stage", {**config, "t_c": int(t_c)}, compute,
                                         publish=profile == "full", verbose=False)
        samples[t_c] = part["samples"]
        preds = {n: part[f"pred.{n}"].long() for n in classifiers}
        rows += _accuracy_rows(t_c, preds, labels)
        per_sample[int(t_c)] = torch.stack([(p == labels).double() for p in preds.values()]).mean(0)
        seconds += manifest["wall_time_s"]
    table = pd.DataFrame(rows)
    table.attrs["seconds"] = seconds
    table.attrs["per_sample"] = per_sample
    return table, samples


def choose_t_star(t: Sequence[int], accuracy: Sequence[float], delta: float = 0.01) -> dict[str, int | None]:
    """``t*`` as the saturation point of the accuracy curve, and the Kneedle knee beside it (spec §4 [O]).

    Args:
        t: Increasing switch times.
        accuracy: Mean classifier accuracy at each ``t`` (in ``[0, 1]``).
        delta: Plateau tolerance (absolute accuracy; 0.01 = 1 percentage point).

    Returns:
        ``{"saturation": t*, "knee": Kneedle knee or None}``.
    """
    knee = knee_point(list(t), list(accuracy), curve="concave", direction="increasing")
    return {"saturation": int(saturation_point(list(t), list(accuracy), delta)),
            "knee": None if knee is None else int(knee)}


def plateau_t_star(per_sample: dict[int, Tensor], z: float = 2.0, reference: int | None = None,
                   margin: float | None = None) -> dict:
    """``t*`` as the earliest switch time on the plateau of fully conditional sampling (ours, issue 13).

    Two-stage samples share their initial noise across switch times, so the accuracy gap between ``t_c`` and
    the reference is a *paired* difference over samples: ``d_j = correct_j(ref) - correct_j(t_c)``. ``t*`` is
    the smallest ``t_c`` such that it and every later switch time are on the plateau, which is either

    - ``margin = None``: ``mean(d) <= z * se(d)``, the gap is not significant. The noisier the curve, the wider
      the plateau; but as the samples grow, every remaining rise becomes significant and ``t*`` drifts to
      ``T`` (inverting to pure noise);
    - ``margin = m``: ``mean(d) + z * se(d) <= m``, the gap is within ``m`` with one-sided confidence
      (``z = 2``: about 97.7%), a non-inferiority test. More samples make it converge to the first ``t_c``
      whose true gap is below ``m``; fewer samples usually move ``t*`` later, but each ``t_c`` can still be
      admitted wrongly (about ``Phi(-z)`` per point under the normal approximation, more for small ``N``,
      where every paired difference may be 0 and the bound collapses to the gap).

    Args:
        per_sample: ``{t_c: [N] share of classifiers right on sample j}`` (:func:`book_two_stage_accuracy`'s
            ``table.attrs["per_sample"]``), the same ``N`` samples at every ``t_c``.
        z: Standard errors of the test (2: about a 5% two-sided / 2.3% one-sided test per point).
        reference: The plateau's reference switch time (default: the largest, fully conditional sampling).
        margin: The non-inferiority margin, in accuracy (0.02 = 2 points); ``None``: no margin (see above).

    Returns:
        ``{"t_star": int, "plateau": [t_c >= t*, all on the plateau], "admitted": [every t_c that passes,
        also isolated ones below t*], "gap": {t_c: mean gap}, "se": {t_c: its s.e.}, "upper": {t_c: gap +
        z se}, "reference": int, "z": z, "margin": margin}``.

    Raises:
        ValueError: If ``per_sample`` is empty or its tensors differ in length, or ``margin`` is negative.
    """
    if margin is not None and not margin >= 0:
        raise ValueError(f"margin must be None or >= 0, got {margin!r}")
    if not per_sample:
        raise ValueError("per_sample must hold at least one switch time")
    ts = sorted(per_sample)
    n = {len(v) for v in per_sample.values()}
    if len(n) != 1 or n == {0}:
        raise ValueError(f"per_sample must hold the same non-zero number of samples at every t_c, got {sorted(n)}")
    ref = ts[-1] if reference is None else reference
    if ref not in per_sample:
        raise ValueError(f"reference must be one of the switch times {ts}, got {reference}")
    gap, se, on = {}, {}, {}
    for t in ts:
        d = (per_sample[ref] - per_sample[t]).double()
        gap[t] = d.mean().item()
        se[t] = (d.std(correction=1) / len(d) ** 0.5).item() if len(d) > 1 else float("nan")
        bound = z * se[t] if margin is None else margin - z * se[t]
        on[t] = t == ref or gap[t] <= bound
    t_star = ts[-1]
    for t in reversed(ts):
        if not on[t]:
            break
        t_star = t
    upper = {t: gap[t] + z * se[t] for t in ts}
    return {"t_star": int(t_star), "plateau": [t for t in ts if t >= t_star],
            "admitted": [t for t in ts if on[t]], "gap": gap, "se": se, "upper": upper, "reference": int(ref),
            "z": z, "margin": margin}


def milestone_accuracy(
    dataset: str,
    steps: Sequence[int],
    classifiers: dict[str, nn.Module],
    profile: str,
    n_per_class: int,
    num_steps: int = 50,
    seed: int = 0,
    t_c: int = NUM_TIMESTEPS,
) -> tuple[pd.DataFrame, list[int]]:
    """How good the book's CDM run of ``dataset`` is after each of ``steps``: the classifiers' accuracy on its
    fully conditional samples (issue 13, item 5), from :func:`book_two_stage_accuracy` at ``t_c = T``.

    Every checkpoint starts from the same initial noise (``seed``, :func:`two_stage_predictions`), so the rise
    from one checkpoint to the next is a paired difference over samples. A checkpoint counts as missing when
    its weights do not exist (:func:`paperlib.train.load_cdm_at`), or, in a read-only run, when it has not been
    sampled yet. Accuracy is bounded by the classifiers' own accuracy on real images.

    Args:
        dataset: ``"shapes"`` or ``"cifar10"``.
        steps: Training steps of the checkpoints (milestones of the book's run).
        classifiers: ``{name: classifier}`` (chapter 2's).
        profile: The book's profile; ``"full"`` publishes the samples' predictions.
        n_per_class: Samples per class.
        num_steps: DDIM steps.
        seed: Seed of the initial noise.
        t_c: The fully conditional switch time (``T``).

    Returns:
        ``(table, missing)``: one row per checkpoint that exists, in increasing ``steps``, with ``accuracy``
        (mean over the classifiers), its ``accuracy_se`` over samples, and ``rise`` and ``rise_se``: the paired
        change since the previous row (NaN in the first); and the ``steps`` that are missing.
    """
    from paperlib.train import checkpoint_exists, load_cdm_at

    rows, missing, prev = [], [], None
    for s in sorted({int(x) for x in steps}):
        if not checkpoint_exists(dataset, s, profile):
            missing.append(s)
            continue
        try:
            table, _ = book_two_stage_accuracy(load_cdm_at(dataset, s, profile), classifiers, profile, [t_c],
                                               n_per_class, num_steps, seed, progress=False)
        except PendingRun:
            missing.append(s)
            continue
        right = table.attrs["per_sample"][t_c].double()
        n = len(right)
        row = {"steps": s, "accuracy": right.mean().item(), "accuracy_se": (right.std() / n ** 0.5).item(),
               "rise": float("nan"), "rise_se": float("nan")}
        if prev is not None:
            d = right - prev
            row.update(rise=d.mean().item(), rise_se=(d.std() / n ** 0.5).item())
        rows.append(row)
        prev = right
    return pd.DataFrame(rows), missing


def still_rising(table: pd.DataFrame, z: float = 2.0) -> str:
    """Verdict on :func:`milestone_accuracy`'s last interval: ``"still rising"`` when the last checkpoint's
    accuracy lies more than ``z`` paired standard errors above the one before, ``"no clear rise"`` otherwise
    (absence of evidence over that interval, not a plateau), ``"one checkpoint only"`` when there is nothing
    to compare."""
    if len(table) < 2:
        return "one checkpoint only"
    last = table.iloc[-1]
    return "still rising" if last.rise > z * last.rise_se else "no clear rise"


def training_decision(table: pd.DataFrame, book_steps: int, cap: int, z: float = 2.0) -> str:
    """Whether the book's CDM is final by the training rule (ours): a CDM trains on while its last measured
    interval still raised the accuracy of its conditional samples (:func:`still_rising`), up to ``cap`` steps.

    Args:
        table: :func:`milestone_accuracy` of the run, its last row the book's checkpoint.
        book_steps: The steps of the CDM the chapters use (:data:`paperlib.train.BOOK_STEPS`).
        cap: :data:`paperlib.train.STEP_CAP` of the dataset.
        z: Paired standard errors of a clear rise.

    Returns:
        A phrase: ``"final: no clear rise over its last interval"``, ``"final: at the cap of N steps, though
        still rising"``, ``"not final: still rising, so it trains on (cap N steps)"``, or ``"undecided: ..."``
        when the book's checkpoint is not the last one measured or has nothing to compare with.
    """
    if table.empty or int(table.steps.iloc[-1]) != int(book_steps):
        return f"undecided: its {int(book_steps):,}-step checkpoint is not the last one measured"
    verdict = still_rising(table, z)
    if verdict == "one checkpoint only":
        return "undecided: no earlier checkpoint measured"
    if verdict == "no clear rise":
        return "final: no clear rise over its last interval"
    if book_steps >= cap:
        return f"final: at the cap of {int(cap):,} steps, though still rising"
    return f"not final: still rising, so it trains on (cap {int(cap):,} steps)"


def milestone_sentence(table: pd.DataFrame, missing: Sequence[int], dataset: str, z: float = 2.0) -> str:
    """One sentence from :func:`milestone_accuracy`: the accuracy of conditional samples at the first and
    last checkpoint, the last interval's paired rise and :func:`still_rising`'s verdict."""
    name = DATASET_NAMES.get(dataset, dataset)
    gone = f" (not measured yet: {', '.join(f'{s:,}' for s in missing)} steps)" if missing else ""
    if table.empty:
        return f"On {name}, no checkpoint has been measured yet{gone}."
    first, last = table.iloc[0], table.iloc[-1]
    text = f"On {name}, conditional samples are recognised {100 * first.accuracy:.1f}% of the time after " \
           f"{int(first.steps):,} steps"
    if len(table) > 1:
        prev = table.iloc[-2]
        text += (f" and {100 * last.accuracy:.1f}% after {int(last.steps):,}; from {int(prev.steps):,} to "
                 f"{int(last.steps):,} steps it changed by {100 * last.rise:+.1f} ± {100 * last.rise_se:.1f} "
                 f"points (paired s.e.): {still_rising(table, z)} over that interval")
    return text + gone + "."


def _choices_path(profile: str) -> Path:
    root = ARTIFACTS_DIR if profile == "full" else cache_dir()
    return root / "choices" / f"{profile}.json"


def _read_choices(path: Path) -> dict:
    if path.parent.is_dir():
        with contextlib.suppress(OSError), dir_lock(path.parent, blocking=False) as locked:
            if locked:  # no writer is active: a temporary file there is a killed writer's
                remove_stale_tmp(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it (git checkout) or delete it and rerun "
                         f"the chapters that record choices") from exc


def record_choice(profile: str, dataset: str, name: str, value, source: str) -> None:
    """Record a chosen hyperparameter (``value`` JSON-able) for the chapters that follow.

    Safe under concurrent writers and kills: the read-modify-write holds a lock on the choices
    directory and the file is replaced atomically (fsynced first).
    """
    path = _choices_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(path.parent):
        remove_stale_tmp(path)
        choices = _read_choices(path)
        choices.setdefault(dataset, {})[name] = {"value": value, "source": source}
        text = json.dumps(choices, indent=2, sort_keys=True) + "\n"
        write_durable(path, lambda p: p.write_text(text))


def load_choice(profile: str, dataset: str, name: str):
    """A value recorded by :func:`record_choice`; a clear error naming the chapter to run when missing."""
    path = _choices_path(profile)
    choices = _read_choices(path)
    if name not in choices.get(dataset, {}):
        raise KeyError(f"no {name!r} recorded for dataset {dataset!r} in profile {profile!r} ({path}); run the "
                       f"chapter that chooses it first (t_star: 02_t_star; feature_layer/feature_t: 04_nmi), "
                       f"or pass the value as a notebook parameter")
    return choices[dataset][name]["value"]


def saturation_verdict(t: Sequence[int], accuracy: Sequence[float], se: Sequence[float], t_star: int) -> str:
    """Verdict on §3.2.1 / Fig. 20: two-stage accuracy rises with the switch time and saturates at ``t*``.

    *Rises*: the accuracy at the largest switch time beats the one at the smallest by more than two
    standard errors of their difference. *Saturates*: ``t_star`` lies below the largest switch time (a
    plateau before plain conditional sampling). Both: "holds"; a rise without a plateau: "partly";
    no rise: "does not".

    Args:
        t: Increasing switch times.
        accuracy: Mean accuracy at each (``[0, 1]``).
        se: Its standard error at each.
        t_star: The chosen saturation point.

    Raises:
        ValueError: if the sequences differ in length, have fewer than two points, or ``t`` is not increasing.
    """
    if not len(t) == len(accuracy) == len(se) or len(t) < 2:
        raise ValueError(f"t, accuracy and se need one value per switch time (>= 2), got {len(t)}, "
                         f"{len(accuracy)}, {len(se)}")
    if any(b <= a for a, b in zip(t[:-1], t[1:])):
        raise ValueError(f"t must be increasing, got {list(t)}")
    rises = accuracy[-1] - accuracy[0] > 2 * (se[-1] ** 2 + se[0] ** 2) ** 0.5
    if not rises:
        return "does not"
    return "holds" if t_star < t[-1] else "partly"
