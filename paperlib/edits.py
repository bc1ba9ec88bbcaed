"""CLARID against controls matched to the edit: the t* x k map, the guidance sweep, equal-distance curves.

For each image ``x_0`` of class ``c`` and each ``t*`` (paper §3.2; spec §3.6) we invert to ``x_{t*}``, take
CLARID's top-``K`` extraneous directions ``V_K`` once, and make *edits*: latents ``z = (I - D D^T) x_{t*}``
whose directions ``D`` (``[n, k]``) come from

- ``clarid``: ``V_k``, CLARID's own top ``k`` (Eq. 2), or ``V_{k*}`` at the EVR elbow;
- ``span`` / ``lowfreq`` / ``isotropic``: the matched controls of :mod:`paperlib.controls`;
- ``cfg``: no projection (``k = 0``): at ``w = 1`` the plain reconstruction, at ``w > 1`` the paper's pure CFG.

Every edit is decoded with CFG after the projection (spec §3.3) at the run's guidance scale, and the guidance
sweep decodes the ``k*`` edits at further scales. Beside each output we keep the size of the edit: the latent
change ``||x_{t*} - z||``, the feature change ``||f_{l,t*}(x_{t*}) - f_{l,t*}(z)||`` and, once scored
(:func:`edit_scores`), the output's distance to its input (PSNR, SSIM). Controls that need many directions
to change the output as much as CLARID does get larger ``k`` (``distance_ks``), so that methods can be
compared at equal distance to the input (:func:`matched_comparison`), not only at equal ``k``.
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paperlib.cache import artifact_exists, artifact_path, config_key, load_artifact, load_or_compute_chunked
from paperlib.canonical import ClaridConfig, _check_run_inputs, invert_with_directions
from paperlib.clarid import project_out
from paperlib.controls import CONTROLS, control_directions, energy_fraction, lowfreq_basis
from paperlib.data import DATASET_NAMES, fingerprint, from_model_range
from paperlib.diffusion import ddim_decode
from paperlib.metrics import psnr, ssim
from paperlib.models import CDM, clips_x0
from paperlib.validate import check_indices

STAGE = "edit_run"
STAGE_VERSION = 1

METHODS = ("clarid", *CONTROLS)
"""Projection methods of an edit run; ``cfg`` (no projection) is always added."""


K_STAR = -1
"""The ``k`` of an edit that removes each image's own ``k*`` directions (elbow of its EVR curve)."""


@dataclass(frozen=True)
class Edit:
    """One decoded edit of every image: ``method`` removes ``k`` directions (``K_STAR``: ``k*``), decoded at
    guidance scale ``w``."""

    method: str
    k: int
    w: float

    @property
    def name(self) -> str:
        k = "kstar" if self.k == K_STAR else f"k{self.k}"
        return f"{self.method}/{k}/w{self.w:g}"

    @property
    def k_label(self) -> str:
        return "k*" if self.k == K_STAR else str(self.k)


@dataclass(frozen=True)
class EditConfig:
    """What an edit run decodes (all values ours: the paper has no matched controls).

    Attributes:
        clarid: CLARID's configuration; its ``t_star`` is the main ``t*`` (chapter 2's choice) and its
            ``guidance_scale`` the CFG scale of every edit (the CFG baseline's, spec §3.3).
        t_stars: The map's inversion times (the main ``t*`` is always added).
        ks: Numbers of directions of the map (every method, every ``t*``; ``k*`` is always added).
        distance_ks: Extra ``k`` per method, so that each curve of output distance against ``k`` reaches
            CLARID's distances (a random direction changes the output far less).
        guidance_sweep: Extra scales at the main ``t*`` for the ``k*`` edits and pure CFG.
        methods: Projection methods (see :data:`METHODS`).
        n_freq: Coarse DCT frequencies per axis of the ``lowfreq`` control.
    """

    clarid: ClaridConfig = field(default_factory=lambda: ClaridConfig(guidance_scale=3.0))
    t_stars: tuple[int, ...] = (300, 500, 700, 900)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    distance_ks: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("clarid", (16,)), ("span", (16,)), ("lowfreq", (16, 32, 48)), ("isotropic", (16, 64, 256, 1024)))
    guidance_sweep: tuple[float, ...] = (1.0, 2.0, 5.0)
    methods: tuple[str, ...] = METHODS
    n_freq: int = 4

    def __post_init__(self) -> None:
        """Validate the fields that :class:`ClaridConfig` does not.

        Raises:
            ValueError: On an unknown method, ``k`` outside what a method allows (``1..K`` for ``clarid`` and
                ``span``; ``lowfreq``'s limit, ``C n_freq^2``, needs the latent and is checked by
                :func:`edit_batch`), a ``t*`` off the DDIM grid, or a bad scale.
        """
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        for t in self.t_stars:
            replace(self.clarid, t_star=t)  # ClaridConfig checks the grid
        dks = dict(self.distance_ks)
        if set(dks) - set(self.methods):
            raise ValueError(f"distance_ks names methods not in methods {self.methods}: {sorted(set(dks))}")
        for m in self.methods:
            limit = {"clarid": self.clarid.K, "span": self.clarid.K}.get(m)  # lowfreq: C n_freq^2, per latent
            for k in (*self.ks, *dks.get(m, ())):
                if isinstance(k, bool) or not isinstance(k, int) or k < 1 or (limit is not None and k > limit):
                    raise ValueError(f"k of method {m!r} must be an integer in 1..{limit or 'n'}, got {k!r}")
        for w in (self.clarid.guidance_scale, *self.guidance_sweep):
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise ValueError(f"guidance scales must be finite numbers >= 0, got {w!r}")

    @property
    def main_t_star(self) -> int:
        return self.clarid.t_star

    @property
    def w(self) -> float:
        return float(self.clarid.guidance_scale)

    def all_t_stars(self) -> list[int]:
        return sorted({*self.t_stars, self.main_t_star})

    def edits(self, t_star: int) -> list[Edit]:
        """The edits decoded at ``t_star``, in a fixed order (reconstruction first)."""
        w = self.w
        out = [Edit("cfg", 0, 1.0)] + ([Edit("cfg", 0, w)] if w != 1.0 else [])
        dks = dict(self.distance_ks)
        for m in self.methods:
            ks = sorted({*self.ks, *dks.get(m, ())})
            out += [Edit(m, k, w) for k in ks] + [Edit(m, K_STAR, w)]
        if t_star == self.main_t_star:
            for s in self.guidance_sweep:
                if s != w:
                    out += ([Edit("cfg", 0, s)] if s != 1.0 else []) + [Edit(m, K_STAR, s) for m in self.methods]
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clarid"] = self.clarid.to_dict()
        d["distance_ks"] = [[m, list(ks)] for m, ks in self.distance_ks]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EditConfig:
        d = dict(d)
        d["clarid"] = ClaridConfig.from_dict(d["clarid"])
        d["distance_ks"] = tuple((m, tuple(ks)) for m, ks in d["distance_ks"])
        for key in ("t_stars", "ks", "guidance_sweep", "methods"):
            d[key] = tuple(d[key])
        return cls(**d)


def _edit_seed(seed: int, edit: Edit, base: int) -> int:
    """A per-image, per-method seed of the control's directions (stable across runs and platforms).

    It does not depend on ``k``: with :func:`paperlib.controls.random_orthonormal`'s nested draws, an image's
    control at ``k = 4`` removes the directions it removed at ``k = 2`` and two more."""
    return (seed * 1_000_003 + zlib.crc32(edit.method.encode()) + base) % 2**62


def _decode(model: CDM, z: Tensor, y: Tensor, alpha_bar: Tensor, cfg: ClaridConfig, t_star: int,
            w: float, batch_size: int) -> Tensor:
    outs = []
    for s in range(0, len(z), batch_size):
        x0 = ddim_decode(model, z[s : s + batch_size], y[s : s + batch_size], alpha_bar, t_star, 0, cfg.num_steps,
                         w, model.null_class, clip_x0=clips_x0(model, cfg.clip_x0))
        outs.append(from_model_range(model.decode(x0)).cpu())
    return torch.cat(outs)


def edit_batch(
    model: CDM,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    ecfg: EditConfig,
    t_star: int,
    seeds: Tensor,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Every edit of :meth:`EditConfig.edits` for a batch of images at one ``t*``.

    Args:
        model: The CDM.
        images: ``[B, 3, H, W]`` uint8.
        labels: ``[B]`` real classes.
        alpha_bar: ``[T + 1]`` schedule.
        ecfg: The run's configuration.
        t_star: Inversion time (one of :meth:`EditConfig.all_t_stars`).
        seeds: ``[B]`` per-image seeds (dataset indices): the Krylov start and every control's directions.
        batch_size: Latents per decoding call.
        progress: tqdm bar over the images' Jacobians.

    Returns:
        ``sigma [B, K]``, ``k_star [B]``, ``lowfreq_energy [B, K]`` (share of each of CLARID's directions
        inside the coarse subspace of the ``lowfreq`` control), ``x_norm [B]`` (``||x_{t*}||``), and per edit
        ``img.<name> [B, 3, H, W]`` uint8, ``dx.<name> [B]`` (latent change) and ``df.<name> [B]`` (feature
        change at ``cfg.layer``, ``t*``, under the image's class).
    """
    cfg = replace(ecfg.clarid, t_star=t_star)
    y, x_t, V, sigma, k_star, _ = invert_with_directions(model, images, labels, alpha_bar, cfg, seeds, progress)
    dev = x_t.device
    k_stars = k_star.tolist()
    shape = tuple(x_t.shape[1:])
    basis = lowfreq_basis(shape[0], shape[1], ecfg.n_freq)
    out: dict[str, Tensor] = {"sigma": sigma, "k_star": k_star, "lowfreq_energy": energy_fraction(V.cpu(), basis),
                              "x_norm": x_t.flatten(1).norm(dim=1).cpu()}
    edits = ecfg.edits(t_star)
    too_many = [e.name for e in edits if e.k > x_t[0].numel()]
    if too_many:
        raise ValueError(f"edits {too_many} remove more directions than the latent has ({x_t[0].numel()})")
    too_coarse = [e.name for e in edits if e.method == "lowfreq" and e.k > basis.shape[1]]
    if too_coarse:
        raise ValueError(f"edits {too_coarse} remove more directions than the coarse subspace has "
                         f"({basis.shape[1]} = {shape[0]} channels x {ecfg.n_freq}^2)")
    latents: dict[str, Tensor] = {}
    for e in edits:
        if e.method == "cfg":
            latents[e.name] = x_t
            continue
        zs = []
        for i in range(len(y)):
            k = k_stars[i] if e.k == K_STAR else e.k
            D = (V[i, :, :k] if e.method == "clarid" else
                 control_directions(e.method, k, _edit_seed(int(seeds[i]), e, cfg.seed), V=V[i].cpu(), shape=shape,
                                    basis=basis).to(dev))
            zs.append(project_out(x_t[i], D))
        latents[e.name] = torch.stack(zs)
    t = torch.full((len(y),), t_star, device=dev)
    with torch.no_grad():
        f0 = model.features(x_t, t, y, cfg.layer).flatten(1)
        for name, z in latents.items():
            out[f"dx.{name}"] = (z - x_t).flatten(1).norm(dim=1).cpu()
            out[f"df.{name}"] = (model.features(z, t, y, cfg.layer).flatten(1) - f0).norm(dim=1).cpu()
    for w in sorted({e.w for e in edits}):
        names = [e.name for e in edits if e.w == w]
        z = torch.cat([latents[n] for n in names])
        imgs = _decode(model, z, y.repeat(len(names)), alpha_bar, cfg, t_star, w, batch_size)
        for j, n in enumerate(names):
            out[f"img.{n}"] = imgs[j * len(y) : (j + 1) * len(y)]
    return out


def _run_config(model_key: str, ecfg: EditConfig, t_star: int, indices: Tensor) -> dict:
    # Keyed by what this t*'s outputs depend on, so runs whose configs differ elsewhere share it.
    return {"model": model_key, "clarid": replace(ecfg.clarid, t_star=t_star, fixed_ks=()).to_dict(),
            "t_star": int(t_star), "edits": [e.name for e in ecfg.edits(t_star)], "n_freq": ecfg.n_freq,
            "indices_sha": config_key(indices.tolist())}


def cached_edit_run(model_key: str, images: Tensor, labels: Tensor, indices: Tensor, ecfg: EditConfig,
                    t_star: int) -> dict[str, Tensor] | None:
    """The finished :func:`edit_run` of a CDM known only by its key (no weights needed), or ``None`` if it
    has not been run. Provenance (the data) is checked as on every load."""
    config = _run_config(model_key, ecfg, t_star, check_indices("indices", indices, len(images)))
    for pub in (True, False):
        path = artifact_path(STAGE, config, STAGE_VERSION, pub)
        if artifact_exists(path):
            return load_artifact(path, expect={"data": fingerprint(images, labels)})[0]
    return None


def edit_run(
    model: CDM,
    model_key: str,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    alpha_bar: Tensor,
    ecfg: EditConfig,
    t_star: int,
    chunk_size: int = 10,
    publish: bool = False,
    progress: bool = True,
    max_seconds: float | None = None,
) -> tuple[dict[str, Tensor], dict]:
    """:func:`edit_batch` over ``images[indices]`` at one ``t*``, in resumable cached chunks (``max_seconds``:
    stop with :class:`paperlib.cache.ComputeIncomplete` after the chunk that exceeds the budget).

    One artifact per ``t*`` keeps each file small (a 100-image CIFAR-10 map is about 7 MB per ``t*``). Its key
    holds the CDM, CLARID's configuration at this ``t*`` (``fixed_ks`` aside), the list of edits, ``n_freq``
    and the images, so a scaling run at the main ``t*`` and a full map share the main ``t*``'s artifact.

    Returns:
        ``(tensors, manifest)``: :func:`edit_batch`'s outputs for all images plus ``indices``, ``labels`` and
        per-image ``seconds``.
    """
    if t_star not in ecfg.all_t_stars():
        raise ValueError(f"t_star must be one of the run's {ecfg.all_t_stars()}, got {t_star}")
    _check_run_inputs(model, images, labels, ecfg.clarid)
    indices = check_indices("indices", indices, len(images))
    config = _run_config(model_key, ecfg, t_star, indices)

    def chunk(start: int, stop: int) -> dict[str, Tensor]:
        idx = indices[start:stop]
        tic = time.perf_counter()
        part = edit_batch(model, images[idx], labels[idx], alpha_bar, ecfg, t_star, idx)
        part["seconds"] = torch.full((len(idx),), (time.perf_counter() - tic) / len(idx))
        return part

    return load_or_compute_chunked(
        STAGE, config, len(indices), chunk_size, chunk,
        finish=lambda merged: {**merged, "indices": indices, "labels": labels[indices]}, version=STAGE_VERSION,
        publish=publish, verbose=progress, provenance={"data": fingerprint(images, labels)},
        hint="The run indexes other images than the ones given here; pass the images it was made from.",
        desc=f"edits at t*={t_star} ({len(indices)} images)", max_seconds=max_seconds,
        how=f"make edits DATASET=<dataset> N={len(indices)} MAP=1")


# ----------------------------------------------------------------------------------------------------------
# Scoring and comparison
# ----------------------------------------------------------------------------------------------------------


def _parse(name: str) -> Edit:
    method, k, w = name.split("/")
    return Edit(method, K_STAR if k == "kstar" else int(k[1:]), float(w[1:]))


def run_edits(run: dict[str, Tensor]) -> list[Edit]:
    """The edits stored in an :func:`edit_run` artifact, in storage order."""
    return [_parse(k[4:]) for k in run if k.startswith("img.")]


def nearest_input(outputs: Tensor, inputs: Tensor) -> Tensor:
    """Index of the input nearest (pixel MSE) to each output: an output that keeps its input's identity is
    nearer that input than any other image of the run (a regenerated sample need not be).

    Args:
        outputs: ``[M, C, H, W]``.
        inputs: ``[N, C, H, W]``.

    Returns:
        ``[M]`` int64 rows of ``inputs``.
    """
    a, b = outputs.flatten(1).double(), inputs.flatten(1).double()
    return torch.cdist(a, b).argmin(dim=1)


@torch.no_grad()
def edit_scores(
    run: dict[str, Tensor],
    inputs: Tensor,
    classifiers: dict[str, nn.Module],
    t_star: int,
    shapes=None,
    probes: dict[str, nn.Module] | None = None,
) -> pd.DataFrame:
    """One row per image and edit: the edit's size, its output's distance to the input, and what it keeps.

    Args:
        run: An :func:`edit_run` artifact (one ``t*``).
        inputs: ``[M, 3, H, W]`` uint8, the run's input images (``images[run["indices"]]``).
        classifiers: Chapter 2's judges; ``correct`` is the share of them that read the input's class.
        t_star: The run's ``t*`` (a column).
        shapes: For shapes, the :class:`paperlib.data.ShapesData` of the inputs (masks and factors).
        probes: For shapes, :func:`paperlib.factors.train_background_probes`'s probes; with a ``"mask"``
            entry (:func:`paperlib.factors.train_mask_probe`), the object each output shows is found, and every
            edit's background is the same region of its image, outside the input's object and every edit's
            (:class:`paperlib.factors.SharedBackground`): an edit that moves the object neither shows its
            silhouette to the background probes nor has its background measured on less of the image.

    Returns:
        Columns ``image`` (row in the run), ``label``, ``t_star``, ``method``, ``k`` (``K_STAR`` for ``k*``),
        ``k_label``, ``k_used`` (the image's number of directions), ``w``, ``dx``, ``df``, ``psnr``, ``ssim``
        (against the input, 8-bit scale), ``correct``, ``identity`` (the output is nearer its own input than
        any other input of the run, :func:`nearest_input`); with ``shapes``: ``change_outside``, ``change_inside``
        (mean absolute pixel change outside / inside the object), ``bg_family_kept``,
        ``class_from_bg``, ``own_bg`` (the input's background belongs to its class's family) and
        ``class_from_bg_own`` / ``class_from_bg_rand`` (``class_from_bg`` on own- / other-background inputs,
        NaN on the others); with a mask probe also ``object_iou`` (IoU of the output's object with the input's),
        ``moved`` (that IoU below :data:`paperlib.factors.MOVED_IOU`: moved, redrawn or lost) and ``bg_visible``
        (share of the image the background probes see, the same for every edit of an image).
    """
    from paperlib.classifiers import predict
    from paperlib.factors import MOVED_IOU, SharedBackground, pixel_change

    labels = run["labels"]
    if len(inputs) != len(labels):
        raise ValueError(f"inputs must be the run's {len(labels)} input images, got {len(inputs)}")
    frames = []
    if shapes is not None:
        shared = SharedBackground(shapes.masks, {e.name: run[f"img.{e.name}"] for e in run_edits(run)},
                                  probes.get("mask"))
    for e in run_edits(run):
        out = run[f"img.{e.name}"]
        correct = torch.stack([(predict(c, out).argmax(1) == labels).float() for c in classifiers.values()])
        k_used = run["k_star"] if e.k == K_STAR else torch.full_like(run["k_star"], e.k)
        cols = {
            "image": np.arange(len(labels)), "label": labels.numpy(), "t_star": t_star, "method": e.method,
            "k": e.k, "k_label": e.k_label, "k_used": k_used.numpy(), "w": e.w,
            "dx": run[f"dx.{e.name}"].numpy(), "df": run[f"df.{e.name}"].numpy(),
            "psnr": psnr(out.double(), inputs.double(), 255.0).clamp(max=100).numpy(),
            "ssim": ssim(out, inputs).numpy(), "correct": correct.mean(0).numpy(),
            "identity": nearest_input(out, inputs).eq(torch.arange(len(labels))).float().numpy(),
        }
        if shapes is not None:
            if shared.found:
                iou = shared.iou(e.name)
                cols |= {"object_iou": iou.numpy(), "moved": (iou < MOVED_IOU).float().numpy(),
                         "bg_visible": shared.visible.numpy()}
            change = pixel_change(inputs, out, shared.objects)
            view = shared.view(out)
            cols |= {
                "change_outside": change["outside"].numpy(), "change_inside": change["inside"].numpy(),
                "bg_family_kept": (predict(probes["bg_family"], view).argmax(1)
                                   == shapes.factors["bg_family"]).float().numpy(),
                "class_from_bg": (predict(probes["class_from_bg"], view).argmax(1) == labels).float().numpy(),
                "own_bg": (shapes.factors["bg_family"] == labels).numpy(),
            }
            cols["class_from_bg_own"] = np.where(cols["own_bg"], cols["class_from_bg"], np.nan)
            cols["class_from_bg_rand"] = np.where(cols["own_bg"], np.nan, cols["class_from_bg"])
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


SUMMARY_METRICS = ("correct", "identity", "psnr", "ssim", "dx", "df", "change_outside", "class_from_bg",
                   "class_from_bg_own", "class_from_bg_rand", "bg_family_kept", "object_iou", "moved")


def summarize(scores: pd.DataFrame, by: tuple[str, ...] = ("t_star", "method", "k", "k_label", "w"),
              metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean, standard error over images and count of each metric per group.

    Returns:
        One row per group; columns ``<metric>`` (mean), ``<metric>_se`` and ``n``.
    """
    metrics = tuple(m for m in metrics if m in scores)
    g = scores.groupby(list(by), sort=True)
    mean = g[list(metrics)].mean()
    se = g[list(metrics)].sem().add_suffix("_se")
    return pd.concat([mean, se, g.size().rename("n")], axis=1).reset_index()


def _interp_rows(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation, NaN outside each row's range.

    Args:
        x: Query points, ``[B, P]``.
        xs: Curve abscissae, ``[B, m]`` (any order).
        ys: Curve values, ``[B, m]``.

    Returns:
        ``[B, P]``: row ``b`` of ``ys`` against ``xs`` read at ``x[b]``.
    """
    order = np.argsort(xs, axis=1)
    xs, ys = np.take_along_axis(xs, order, 1), np.take_along_axis(ys, order, 1)
    m = xs.shape[1]
    if m == 1:
        return np.where(x == xs, ys, np.nan)
    j = np.clip((xs[:, None, :] <= x[:, :, None]).sum(-1), 1, m - 1)
    x0, x1 = np.take_along_axis(xs, j - 1, 1), np.take_along_axis(xs, j, 1)
    y0, y1 = np.take_along_axis(ys, j - 1, 1), np.take_along_axis(ys, j, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(x1 > x0, (x - x0) / (x1 - x0), 0.0)
    inside = (x >= xs[:, :1]) & (x <= xs[:, -1:])
    return np.where(inside, (1 - a) * y0 + a * y1, np.nan)


def curves(scores: pd.DataFrame, t_star: int, w: float, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Summaries at ``(t*, w)`` with the no-projection edit (pure CFG at ``w``) as every method's ``k = 0``:
    the curves of :func:`matched_comparison`, for plotting."""
    s = summarize(scores[(scores.t_star == t_star) & (scores.w == w)], metrics=metrics)
    start = s[s.method == "cfg"]
    return pd.concat([s[s.method != "cfg"]] + [start.assign(method=m) for m in s.method.unique() if m != "cfg"],
                     ignore_index=True)


def matched_comparison(
    scores: pd.DataFrame, t_star: int, w: float, distance: str = "psnr", metric: str = "correct",
    method: str = "clarid", controls: tuple[str, ...] = CONTROLS, alpha: float = 0.05, n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``method`` against each control *at the same distance to the input*, with a paired bootstrap.

    Each control's fixed-``k`` points at ``(t*, w)``, with pure CFG as its ``k = 0``, form a curve of mean
    ``metric`` against mean ``distance``; each of ``method``'s points (every ``k`` and ``k*``) is compared
    with the control's curve interpolated at its distance. Only images with both values in every edit count,
    so both axes are means over the same images (e.g. the own-background half for ``class_from_bg_own``).

    Uncertainty: the images are resampled with replacement (``n_boot`` multinomial weights, ``seed``) and
    the whole comparison (both curves, the interpolation, the gaps) is recomputed on each replicate, so
    the pairing of the edits of one image is kept. The verdicts of one control use a simultaneous band
    over its matched points (the ``1 - alpha`` quantile of the largest studentised gap), so that several
    ``k`` together give a false "above" or "below" with probability about ``alpha``, not one per point.
    Where the control's curve does not reach that distance there is no matched point (``"unmatched"``).

    Returns:
        One row per ``(control, k)`` of ``method``: ``t_star``, ``k`` (``K_STAR`` for ``k*``), ``k_label``,
        ``distance``, ``value``, ``control_value``, ``gap``, ``gap_se`` (bootstrap), ``band`` (the
        critical value in units of ``gap_se``), ``n`` (images) and ``verdict`` in
        ``{"above", "below", "tie", "unmatched"}``.

    Raises:
        ValueError: If ``alpha`` is not in ``(0, 1)`` or ``n_boot < 2``.
    """
    if not 0 < alpha < 1 or n_boot < 2:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 2, got {alpha} and {n_boot}")
    sel = scores[(scores.t_star == t_star) & (scores.w == w)
                 & (scores.method.isin([method, *controls]) | ((scores.method == "cfg") & (scores.k == 0)))]
    sel = sel[(sel.method == method) | (sel.k != K_STAR)]
    if sel.empty or not (sel.method == method).any():
        return pd.DataFrame()
    wide = sel.set_index(["image", "method", "k"])[[metric, distance]].unstack(["method", "k"]).dropna()
    cols = wide[metric].columns
    n = len(wide)
    if n == 0:
        return pd.DataFrame()
    labels = sel.drop_duplicates(["method", "k"]).set_index(["method", "k"]).k_label
    y_full, x_full = wide[metric][cols].to_numpy(float), wide[distance][cols].to_numpy(float)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot) / n
    y = np.vstack([y_full.mean(0), weights @ y_full])  # row 0: the estimate; then [n_boot, E]
    x = np.vstack([x_full.mean(0), weights @ x_full])
    idx = {c: i for i, c in enumerate(cols)}
    mine = [c for c in cols if c[0] == method and c[1] != 0]
    base = [idx[c] for c in cols if c == ("cfg", 0)]
    rows = []
    for ctrl in controls:
        curve = base + [idx[c] for c in cols if c[0] == ctrl]
        if len(curve) == len(base):
            continue
        p = [idx[c] for c in mine]
        gap = y[:, p] - _interp_rows(x[:, p], x[:, curve], y[:, curve])
        est, reps = gap[0], gap[1:]
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: unmatched points
            se = np.nanstd(reps, axis=0, ddof=1)
        ok = np.isfinite(est) & (se > 0)
        if ok.any():
            stud = np.abs(reps[:, ok] - est[ok]) / se[ok]
            band = float(np.nanquantile(np.nanmax(np.where(np.isfinite(stud), stud, -np.inf), axis=1), 1 - alpha))
        else:
            band = math.nan
        for j, c in enumerate(mine):
            g, s_ = float(est[j]), float(se[j])
            verdict = ("unmatched" if math.isnan(g) else "tie" if g == 0
                       else ("above" if g > 0 else "below") if s_ == 0
                       else "above" if g > band * s_ else "below" if g < -band * s_ else "tie")
            rows.append({"control": ctrl, "t_star": t_star, "k": int(c[1]), "k_label": labels[c],
                         "distance": x[0, idx[c]], "value": y[0, idx[c]], "control_value": y[0, idx[c]] - g,
                         "gap": g, "gap_se": s_, "band": band, "n": n, "verdict": verdict})
    return pd.DataFrame(rows)


def equal_distance_verdict(table: pd.DataFrame, higher_is_better: bool = True) -> dict[str, str]:
    """Per control, one word from :func:`matched_comparison`'s rows: ``"wins"`` (some matched point above, none
    below), ``"loses"`` (the reverse), ``"mixed"``, ``"ties"`` or ``"unmatched"`` (no point could be matched).
    ``higher_is_better = False`` reads a metric where less is better (e.g. class read from the background)."""
    out = {}
    good, bad = ("above", "below") if higher_is_better else ("below", "above")
    for ctrl, t in table.groupby("control", sort=False):
        v = set(t.verdict)
        out[ctrl] = ("unmatched" if v == {"unmatched"} else "mixed" if {good, bad} <= v else "wins" if good in v
                     else "loses" if bad in v else "ties")
    return out


_VERDICT_PHRASES = {"wins": "wins against {c}", "loses": "loses against {c}", "ties": "ties with {c}",
                    "mixed": "both wins and loses against {c}",
                    "unmatched": "cannot be compared with {c} (their distances to the input never overlap)"}


def verdict_words(verdicts: Mapping[str, str]) -> str:
    """:func:`equal_distance_verdict`'s words as a clause, e.g. "wins against `span`, ties with `isotropic`"."""
    return ", ".join(_VERDICT_PHRASES[v].format(c=f"`{c}`") for c, v in verdicts.items())


def paired_gap(scores: pd.DataFrame, metric: str, a: dict, b: dict) -> tuple[float, float, int]:
    """Mean paired difference ``a - b`` of ``metric`` over the images both edits share, its s.e. and n.

    ``a`` and ``b`` select one edit each by column values, e.g. ``{"method": "clarid", "k": 4, "t_star": 900,
    "w": 3.0}``.
    """
    def pick(sel: dict) -> pd.Series:
        m = np.logical_and.reduce([scores[k] == v for k, v in sel.items()])
        return scores[m].set_index("image")[metric]

    d = (pick(a) - pick(b)).dropna()
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return float(d.mean()), float(se), len(d)


# ----------------------------------------------------------------------------------------------------------
# The chapter's tables
# ----------------------------------------------------------------------------------------------------------


def method_label(method: str, k: int, w: float | None = None) -> str:
    """A reader's name of an edit: ``"CLARID (k*)"``, ``"span (k=4)"``, ``"pure CFG"``, ``"reconstruction"``."""
    if method == "cfg":
        return "reconstruction" if w == 1.0 else "pure CFG"
    name = "CLARID" if method == "clarid" else method
    return f"{name} (k*)" if k == K_STAR else f"{name} (k={k})"


def control_table(scores: pd.DataFrame, t_star: int, w: float,
                  metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Every method at ``k*`` beside pure CFG and the reconstruction at one ``(t*, w)``: the size of the edit
    (``dx``, ``df``), the output's distance to its input (``psnr``, ``ssim``, ``identity``) and what it keeps.

    Returns:
        One row per edit (index: :func:`method_label`), mean and ``_se`` columns.
    """
    sel = scores[(scores.t_star == t_star) & (((scores.w == w) & ((scores.k == K_STAR) | (scores.method == "cfg")))
                                              | ((scores.method == "cfg") & (scores.w == 1.0)))]
    s = summarize(sel, by=("method", "k", "w"), metrics=metrics)
    s.index = [method_label(m, k, ww) for m, k, ww in zip(s.method, s.k, s.w)]
    order = ["reconstruction", "pure CFG", "CLARID (k*)"] + [f"{c} (k*)" for c in CONTROLS]
    return s.loc[[o for o in order if o in s.index]].drop(columns=["method", "k"])


def guidance_table(scores: pd.DataFrame, t_star: int) -> pd.DataFrame:
    """The guidance sweep: the ``k*`` edits of every method and pure CFG at each scale ``w`` (summaries)."""
    sel = scores[(scores.t_star == t_star) & ((scores.k == K_STAR) | (scores.method == "cfg"))]
    s = summarize(sel, by=("method", "w"))
    s["method"] = s.method.replace({"cfg": "pure CFG"})
    return s


def guidance_sentence(sweep: pd.DataFrame, dataset: str, w: float, z: float = 2.0) -> str:
    """One sentence from :func:`guidance_table`: CLARID's class kept without guidance and at ``w``, beside pure
    CFG and the isotropic control at ``w`` (differences beyond ``z`` s.e. named)."""
    def get(method: str, scale: float) -> tuple[float, float]:
        r = sweep[(sweep.method == method) & (sweep.w == scale)]
        return (float(r.correct.iloc[0]), float(r.correct_se.iloc[0])) if len(r) else (math.nan, math.nan)

    c1, c1s = get("clarid", 1.0)
    cw, cws = get("clarid", w)
    pw, _ = get("pure CFG", w)
    iw, iws = get("isotropic", w)
    if math.isnan(cw):
        return f"On {DATASET_NAMES.get(dataset, dataset)} the sweep has no CLARID edit at w = {w:g}."
    cmp = ("above" if cw - iw > z * math.hypot(cws, iws) else "below" if iw - cw > z * math.hypot(cws, iws)
           else "within two standard errors of")
    name = DATASET_NAMES.get(dataset, dataset)
    first = "" if math.isnan(c1) else f"{c1:.2f} ± {c1s:.2f} of its outputs without guidance and "
    return (f"On {name}, CLARID keeps the class in {first}{cw:.2f} ± {cws:.2f} at w = {w:g}: {cmp} the isotropic "
            f"control at the same w ({iw:.2f}); pure CFG keeps it in {pw:.2f}.")


def edit_map(scores: pd.DataFrame, w: float, metric: str = "correct", method: str = "clarid") -> pd.DataFrame:
    """``method``'s mean ``metric`` over the map: rows ``t*``, columns ``k`` (``k*`` last)."""
    s = summarize(scores[(scores.method == method) & (scores.w == w)], by=("t_star", "k", "k_label"),
                  metrics=(metric,))
    s["order"] = s.k.where(s.k != K_STAR, 10**9)
    t = s.sort_values("order").pivot_table(index="t_star", columns="k_label", values=metric, sort=False)
    return t


def map_gaps(scores: pd.DataFrame, w: float, metric: str = "correct", controls: tuple[str, ...] = CONTROLS,
             method: str = "clarid") -> pd.DataFrame:
    """:func:`matched_comparison` at every ``t*`` of the map, for every control (long format)."""
    frames = [matched_comparison(scores, t, w, metric=metric, method=method, controls=controls)
              for t in sorted(scores.t_star.unique())]
    return pd.concat([f for f in frames if not f.empty], ignore_index=True)


def edit_regime(scores: pd.DataFrame, w: float, keep_identity: float = 0.5, z: float = 2.0,
                method: str = "clarid") -> pd.DataFrame:
    """Where, if anywhere, ``method`` (CLARID) edits rather than regenerates (issue 13, item 3; the rule is ours).

    A cell ``(t*, k)`` of its map qualifies when all hold:

    - *keeps the class*: its class kept is not significantly below pure CFG's at the same ``t*`` and ``w``
      (paired over images, ``z`` standard errors): guidance alone raises class kept, so the reference is
      decoded at the same guidance;
    - *keeps the identity*: at least ``keep_identity`` of its outputs are nearer their own input than any
      other input of the run (:func:`nearest_input`);
    - *removes class-correlated background beyond its controls* (shapes, where ``class_from_bg_own`` exists):
      on inputs on their own class's background, the class is read from its backgrounds significantly less
      often than from every control's at the same distance to the input (:func:`matched_comparison`), and
      at least one control is matched; on CIFAR-10, where no background can be measured, its class kept
      is significantly above some matched control's at the same distance and below none (a tie with every
      control is no evidence of an edit).

    Run with a control as ``method`` (its rivals: the other controls and CLARID), the rule is a placebo
    (:func:`regime_placebo`): a control that "edits" shows the rule does not tell the methods apart.

    Returns:
        One row per cell: ``t_star``, ``k_label``, ``class kept``, ``identity``, ``psnr``, ``matched
        controls`` (``"2 of 3"``: rivals whose curve reaches the cell's distance), the three tests and
        ``edits`` (all three hold).
    """
    bg = "class_from_bg_own" in scores and scores["class_from_bg_own"].notna().any()
    metric = "class_from_bg_own" if bg else "correct"
    rivals = tuple(c for c in ("clarid", *CONTROLS) if c != method)
    gaps = map_gaps(scores, w, metric, controls=rivals, method=method)
    rows = []
    mine = scores[(scores.method == method) & (scores.w == w)]
    for (t, k), d in mine.groupby(["t_star", "k"]):
        ref = {"method": "cfg", "k": 0, "w": w, "t_star": t}
        gap, se, _ = paired_gap(scores, "correct", {"method": method, "k": k, "w": w, "t_star": t}, ref)
        g = gaps[(gaps.t_star == t) & (gaps.k == k)]
        matched = g[g.verdict != "unmatched"]
        beyond = (len(matched) > 0 and (matched.verdict == "below").all() if bg
                  else len(matched) > 0 and (matched.verdict == "above").any()
                  and (matched.verdict != "below").all())
        rows.append({"t_star": int(t), "k": int(k), "k_label": d.k_label.iloc[0], "class kept": d.correct.mean(),
                     "identity": d.identity.mean(), "psnr": d.psnr.mean(),
                     "matched controls": f"{len(matched)} of {len(rivals)}",
                     "keeps class": bool(gap >= -z * se), "keeps identity": bool(d.identity.mean() >= keep_identity),
                     "beyond controls": bool(beyond)})
    out = pd.DataFrame(rows)
    out["edits"] = out["keeps class"] & out["keeps identity"] & out["beyond controls"]
    return out


def regime_placebo(scores: pd.DataFrame, w: float, **kwargs) -> dict[str, int]:
    """:func:`edit_regime` with each control in CLARID's place: per control, the cells where it would
    "edit". Any non-zero count means the rule can pass a method that is only a control."""
    present = set(scores.method)
    return {c: int(edit_regime(scores, w, method=c, **kwargs).edits.sum()) for c in CONTROLS if c in present}


def placebo_sentence(placebo: dict[str, int], n_cells: int) -> str:
    """One sentence from :func:`regime_placebo`: how often the rule passes each control in CLARID's place."""
    if not placebo:
        return "No control was run, so the rule has no placebo."
    counts = ", ".join(f"`{c}` in {n} of {n_cells}" for c, n in placebo.items())
    fails = sum(n > 0 for n in placebo.values())
    tail = ("no control passes, so a cell that passes for CLARID is not one the rule gives any method"
            if not fails else f"{fails} control{'s' if fails > 1 else ''} pass{'' if fails > 1 else 'es'}, so the "
            "rule does not by itself tell CLARID from a control there")
    return f"With each control in CLARID's place, the rule passes {counts} cells: {tail}."


def regime_verdict(regime: pd.DataFrame) -> str:
    """The claim's verdict on one dataset: ``"holds"`` when some cell of the map edits
    (:func:`edit_regime`), ``"does not"`` otherwise."""
    return "holds" if bool(regime.edits.any()) else "does not"


def regime_cells(regime: pd.DataFrame) -> str:
    """``"2 of 20"``: cells of the map where CLARID edits."""
    return f"{int(regime.edits.sum())} of {len(regime)}"


def regime_sentence(regime: pd.DataFrame, dataset: str) -> str:
    """One sentence from :func:`edit_regime`: the cells where CLARID edits, or why no cell qualifies."""
    name = DATASET_NAMES.get(dataset, dataset)
    what = ("while removing more class-correlated background than its matched controls" if dataset == "shapes"
            else "and does at least as well as its matched controls at the same distance")
    hits = regime[regime.edits]
    if len(hits):
        cells = ", ".join(f"(t*={t}, k={k})" for t, k in zip(hits.t_star, hits.k_label))
        return (f"On {name}, CLARID keeps the class and the input's identity {what} in "
                f"{len(hits)} of {len(regime)} cells of the map: {cells}.")
    n_cls = int((~regime["keeps class"]).sum())
    n_id = int((~regime["keeps identity"]).sum())
    n_ctrl = int((~regime["beyond controls"]).sum())
    return (f"On {name}, no cell of the map qualifies: of {len(regime)} cells, {n_cls} lose the class against "
            f"pure CFG at the same guidance, {n_id} lose the input's identity and {n_ctrl} do no better than a "
            f"matched control at the same distance.")


def t_star_sensitivity(scores: pd.DataFrame, w: float, plateau: Sequence[int], main_t_star: int,
                       regime: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's verdicts at every ``t*`` of the map, flagged on or off chapter 2's plateau (issue 13,
    item 4).

    Chapter 2 picks ``t*`` as the earliest switch time on the plateau of fully conditional sampling
    (:func:`paperlib.selection.plateau_t_star`); any later switch time on it is as defensible, and other rules
    (a tolerance, the knee) pick earlier ones. For each ``t*`` of the map: CLARID's class kept and PSNR at
    ``k*``, its equal-distance verdict against each control (:func:`matched_comparison`,
    :func:`equal_distance_verdict`) in class kept and, where ``class_from_bg_own`` exists (shapes), in the class
    read from own backgrounds (lower is better), and the cells of its row of the map where it edits
    (:func:`edit_regime`).

    Args:
        scores: :func:`edit_scores` of the map.
        w: The map's guidance scale.
        plateau: Chapter 2's plateau (switch times).
        main_t_star: Chapter 2's ``t*`` (flagged ``chosen``).
        regime: :func:`edit_regime` of ``scores`` (computed when ``None``).

    Returns:
        One row per ``t*`` of the map (index ``t*``, increasing): ``chosen``, ``on plateau``, ``class kept``,
        ``psnr``, ``class kept vs <control>`` per control, ``background vs <control>`` (shapes), ``edits``
        (``"1 of 6"``) and ``regime`` (``"holds"`` when some cell of the row edits, else ``"does not"``).
    """
    regime = edit_regime(scores, w) if regime is None else regime
    bg = "class_from_bg_own" in scores and scores["class_from_bg_own"].notna().any()
    on = {int(x) for x in plateau}
    rows = []
    for t in sorted(int(x) for x in scores.t_star.unique()):
        mine = scores[(scores.t_star == t) & (scores.method == "clarid") & (scores.k == K_STAR)
                      & (scores.w == w)]
        row = {"t*": t, "chosen": t == main_t_star, "on plateau": t in on, "class kept": mine.correct.mean(),
               "psnr": mine.psnr.mean()}
        for ctrl, v in equal_distance_verdict(matched_comparison(scores, t, w)).items():
            row[f"class kept vs {ctrl}"] = v
        if bg:
            table = matched_comparison(scores, t, w, metric="class_from_bg_own")
            for ctrl, v in equal_distance_verdict(table, higher_is_better=False).items():
                row[f"background vs {ctrl}"] = v
        cells = regime[regime.t_star == t]
        row["edits"] = f"{int(cells.edits.sum())} of {len(cells)}"
        row["regime"] = "holds" if bool(cells.edits.any()) else "does not"
        rows.append(row)
    return pd.DataFrame(rows).set_index("t*")


def _same(a, b) -> bool:
    """Equal verdicts, two missing ones included."""
    return bool(pd.isna(a) and pd.isna(b)) or a == b


def _versus(column: str) -> tuple[str, str] | None:
    """``("<metric> vs", "<control>")`` of a ``"<metric> vs <control>"`` verdict column, else ``None``."""
    metric, sep, control = column.partition(" vs ")
    return (metric + " vs", control) if sep else None


def _verdict_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if _versus(c) or c == "regime"]


def display_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`t_star_sensitivity` table (or a concatenation of several) for the page: a two-level header that
    groups ``"<metric> vs <control>"`` columns under their metric, and "—" where a verdict does not apply."""
    out = table.copy()
    out.columns = pd.MultiIndex.from_tuples(
        [_versus(c) or (c, "") for c in table.columns])
    verdicts = [c for c in out.columns if c[1]]
    out[verdicts] = out[verdicts].astype(object).where(out[verdicts].notna(), "—")
    return out


def sensitivity_sentence(table: pd.DataFrame, plateau: Sequence[int], dataset: str) -> str:
    """Sentences from :func:`t_star_sensitivity`: whether the verdicts stay the same across the plateau's
    rows of the map, and which differ from chapter 2's ``t*`` off it."""
    name = DATASET_NAMES.get(dataset, dataset)
    cols = _verdict_columns(table)
    rows = table[table["on plateau"]]
    ran = [int(t) for t in rows.index]
    absent = [int(t) for t in plateau if int(t) not in ran]
    head = f"On {name}, chapter 2's plateau is t_c = {', '.join(str(t) for t in plateau)}"
    if absent:
        head += f" (not in the map: {', '.join(map(str, absent))})"
    if len(ran) < 2:
        which = f"only t* = {ran[0]}" if ran else "no t* of it"
        out = f"{head}; the map holds {which}, so it cannot show how the verdicts move within the plateau."
    else:
        moved = [c for c in cols if rows[c].nunique(dropna=False) > 1]
        at = ", ".join(map(str, ran))
        if not moved:
            out = (f"{head}: at t* = {at} every equal-distance verdict against the controls and the regime "
                   f"verdict are the same, so the choice of t* within the plateau does not change them.")
        else:
            parts = "; ".join(f"{c}: " + ", ".join(f"{'no verdict' if pd.isna(v) else v} at {t}"
                                                   for t, v in rows[c].items()) for c in moved)
            out = (f"{head}: at t* = {at}, {len(moved)} of {len(cols)} verdicts differ ({parts}); each row has "
                   f"its own test, so a win at one t* and a tie at another can come from similar gaps.")
    chosen = table[table.chosen]
    off = table[~table["on plateau"]]
    if len(chosen) and len(off):
        ref = chosen.iloc[0]
        differ = [c for c in cols if not all(_same(v, ref[c]) for v in off[c])]
        where = ", ".join(map(str, off.index))
        out += (f" Off the plateau (t* = {where}), " + (
            f"{len(differ)} of {len(cols)} verdicts differ from those at t* = {chosen.index[0]}: "
            f"{', '.join(differ)}." if differ else f"every verdict is the one at t* = {chosen.index[0]}."))
    return out


# ----------------------------------------------------------------------------------------------------------
# The book's runs
# ----------------------------------------------------------------------------------------------------------


def book_edit_config(profile: str, dataset: str, **overrides) -> EditConfig:
    """The edit run of ``dataset``: chapter 3's CLARID configuration (recorded with
    :func:`paperlib.selection.record_choice`), decoded at its CFG baseline's scale (``cfg_scales[0]``, spec §3.3).

    Args:
        profile: Profile whose recorded choices are read.
        dataset: ``"shapes"`` or ``"cifar10"``.
        **overrides: :class:`EditConfig` fields (``t_stars``, ``ks``, ``distance_ks``, ``guidance_sweep``, ...).
    """
    from paperlib.selection import load_choice

    spec = load_choice(profile, dataset, "clarid")
    cfg = ClaridConfig.from_dict(spec["config"])
    cfg = replace(cfg, guidance_scale=float(cfg.cfg_scales[0]), fixed_ks=())
    if dataset == "shapes" and "distance_ks" not in overrides:  # 3 x 16 x 16 = 768 dimensions
        overrides["distance_ks"] = tuple((m, tuple(min(k, 512) for k in ks)) for m, ks in EditConfig.distance_ks)
    return EditConfig(clarid=cfg, **overrides)


def book_edit_indices(cdm, dataset: str, n: int, seed: int = 0) -> Tensor:
    """The images of the edit runs: ``n`` training images, class-stratified; on shapes half of them on another
    class's background (so class-from-background can be read on both kinds of input). The same for every
    CDM checkpoint of a dataset.
    """
    from paperlib.data import load_shapes, stratified_subset
    from paperlib.factors import ablation_subset

    if dataset == "shapes":
        return ablation_subset(load_shapes(cdm.recipe.data)[0], n, seed + 17)
    return stratified_subset(cdm.labels, n=n, seed=seed + 17)


def book_edit_runs(
    cdm, profile: str, dataset: str, ecfg: EditConfig, n: int, t_stars: list[int] | None = None, seed: int = 0,
    chunk_size: int = 10, progress: bool = True,
) -> dict[int, dict[str, Tensor]]:
    """:func:`edit_run` of the book at each ``t*`` (default: all of ``ecfg``'s), published in the full profile.

    Returns:
        ``{t*: run tensors}``.
    """
    indices = book_edit_indices(cdm, dataset, n, seed)
    return {t: edit_run(cdm.model, cdm.manifest["key"], cdm.images, cdm.labels, indices, cdm.alpha_bar, ecfg, t,
                        chunk_size, publish=profile == "full", progress=progress)[0]
            for t in (t_stars or ecfg.all_t_stars())}


def _inputs(cdm, dataset: str, run: dict[str, Tensor]):
    from paperlib.data import load_shapes

    shapes = load_shapes(cdm.recipe.data)[0].subset(run["indices"]) if dataset == "shapes" else None
    return cdm.images[run["indices"]], shapes


def book_edit_scores(
    cdm, profile: str, dataset: str, ecfg: EditConfig, n: int, classifiers: dict[str, nn.Module],
    probes: dict[str, nn.Module] | None = None, t_stars: list[int] | None = None, seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`edit_scores` of every :func:`book_edit_runs` run (run first if needed), one frame."""
    runs = book_edit_runs(cdm, profile, dataset, ecfg, n, t_stars, seed, progress=progress)
    frames = []
    for t, run in runs.items():
        inputs, shapes = _inputs(cdm, dataset, run)
        frames.append(edit_scores(run, inputs, classifiers, t, shapes, probes if shapes is not None else None))
    return pd.concat(frames, ignore_index=True)


def scaling_scores(
    cdm, profile: str, dataset: str, ecfg: EditConfig, n: int, steps: list[int], classifiers: dict[str, nn.Module],
    probes: dict[str, nn.Module] | None = None, seed: int = 0,
) -> tuple[pd.DataFrame, list[int]]:
    """The main-``t*`` edit runs of earlier or later CDM checkpoints of the book's run, read by key
    (:func:`paperlib.train.checkpoint_key`; made with ``python -m paperlib.edits --steps S``).

    Args:
        cdm: The book's CDM (its data and image indices).
        steps: Checkpoints to read.

    Returns:
        ``(scores with a "steps" column, steps not yet run)``.
    """
    from paperlib.train import checkpoint_key

    indices = book_edit_indices(cdm, dataset, n, seed)
    frames, missing = [], []
    for s in steps:
        run = cached_edit_run(checkpoint_key(dataset, s, profile), cdm.images, cdm.labels, indices, ecfg,
                              ecfg.main_t_star)
        if run is None:
            missing.append(s)
            continue
        inputs, shapes = _inputs(cdm, dataset, run)
        frames.append(edit_scores(run, inputs, classifiers, ecfg.main_t_star, shapes, probes).assign(steps=s))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), missing


def scaling_table(scores: pd.DataFrame, w: float, metrics: tuple[str, ...] = ("correct", "psnr", "identity")
                  ) -> pd.DataFrame:
    """Per checkpoint: CLARID at ``k*`` and, at the same distance to the input, each control (interpolated
    along its ``k`` curve), so the gap can be read as the CDM improves.

    Returns:
        One row per ``(steps, method)`` with each metric, its ``_se`` and, for the controls, the interpolated
        ``correct`` at CLARID's PSNR (``correct_at_clarid_psnr``) and the matched gap, CLARID's class kept
        minus it (``matched_gap``, with ``matched_gap_se``: :func:`matched_comparison`'s bootstrap s.e.).
    """
    rows = []
    for s, d in scores.groupby("steps"):
        t = int(d.t_star.iloc[0])
        summ = summarize(d[(d.w == w) & ((d.k == K_STAR) | (d.method == "cfg"))], by=("method",), metrics=metrics)
        gaps = matched_comparison(d, t, w)
        for _, r in summ.iterrows():
            row = {"steps": int(s), "method": r.method, **{m: r[m] for m in metrics},
                   **{f"{m}_se": r[f"{m}_se"] for m in metrics}}
            g = gaps[(gaps.control == r.method) & (gaps.k == K_STAR)]
            row["correct_at_clarid_psnr"] = g.control_value.iloc[0] if len(g) else math.nan
            row["matched_gap"] = g.gap.iloc[0] if len(g) else math.nan
            row["matched_gap_se"] = g.gap_se.iloc[0] if len(g) else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from paperlib.train import DATASETS, load_book_cdm, load_cdm_at

    p = argparse.ArgumentParser(prog="python -m paperlib.edits",
                                description="Run the edit map of a dataset in resumable chunks (background job).")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--profile", choices=["smoke", "full"], default="full")
    p.add_argument("--n", type=int, required=True, help="images (class-stratified)")
    p.add_argument("--map", action="store_true", help="every t* of the map (default: the main t* only)")
    p.add_argument("--t-stars", type=int, nargs="*", default=None, help="override the map's t* values")
    p.add_argument("--steps", type=int, default=None, help="a CDM milestone of this many steps (scaling study)")
    p.add_argument("--checkpoint", default=None, help="a resume checkpoint of the same run, at --steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=10)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cdm = (load_book_cdm(args.dataset, args.profile) if args.steps is None
           else load_cdm_at(args.dataset, args.steps, args.profile, args.checkpoint))
    overrides = {} if args.t_stars is None else {"t_stars": tuple(args.t_stars)}
    ecfg = book_edit_config(args.profile, args.dataset, **overrides)
    t_stars = ecfg.all_t_stars() if args.map else [ecfg.main_t_star]
    print(json.dumps({"cdm": cdm.manifest["key"], "t_stars": t_stars, "edits": len(ecfg.edits(ecfg.main_t_star)),
                      "n": args.n}), flush=True)
    book_edit_runs(cdm, args.profile, args.dataset, ecfg, args.n, t_stars, chunk_size=args.chunk_size)
    print("done", flush=True)


if __name__ == "__main__":
    main()
