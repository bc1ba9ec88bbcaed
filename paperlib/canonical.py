"""CLARID over a dataset: Canonical Samples and every baseline decoded from the same inverted latents.

For each image ``x_0`` of class ``c`` (paper §3.2, Fig. 2; spec §3.6): invert to ``t*``, take the top-``K``
extraneous directions of ``f_{l,t*}`` (:func:`paperlib.clarid.extraneous_directions`), choose ``k*`` at the
EVR elbow, and decode

- ``reconstruction``: ``x_{t*}`` itself (``k = 0``, no guidance), the invert/decode control;
- ``clarid``: the CLARep ``(I - V_{k*} V_{k*}^T) x_{t*}`` with CFG scale ``guidance_scale`` after projection:
  the Canonical Sample;
- ``random``: ``k*`` random orthonormal directions projected out instead (our control: "any projection of
  that size would do"?);
- ``cfg{w}``: ``x_{t*}`` decoded with CFG scale ``w`` and no projection (the paper's "pure CFG");
- ``k{k}``: a fixed number ``k`` of directions projected out (Fig. 4's fixed-``k`` curves).

:func:`clarid_dataset` runs this over many images in chunks that are cached as they finish, so a killed run
resumes where it stopped; the merged result is one artifact (uint8 images, spectra, ``k*``, CLAReps).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from paperlib.cache import config_key, load_or_compute, load_or_compute_chunked
from paperlib.clarid import METHODS, elbow_index, explained_variance_ratio, extraneous_directions, project_out
from paperlib.data import fingerprint, from_model_range, to_model_range
from paperlib.diffusion import ddim_decode, ddim_invert
from paperlib.models import CDM, NUM_TIMESTEPS, check_layer_syntax, clips_x0, model_device
from paperlib.progress import tqdm
from paperlib.train import BookCDM
from paperlib.validate import check_indices, check_int, check_labels, check_tensor, describe

STAGE = "clarid_run"
STAGE_VERSION = 1


JACOBIANS = ("feature", "class_score")


@dataclass(frozen=True)
class ClaridConfig:
    """CLARID's hyperparameters for one CDM (the CIFAR-10 values of the paper were lost, spec §11).

    Attributes:
        t_star: Inversion time ``t*`` (grid point; chapter 2 chooses it).
        K: Directions considered, the EVR horizon.
        layer: Jacobian layer ``l`` (UNets: ``"mid"``, after the mid block, App. E [S]; DiT: the last block,
            ``"block.27"`` for DiT-XL/2; the model's ``jacobian_layer``).
        num_steps: DDIM steps over ``[0, T]`` (100 [S]).
        guidance_scale: CFG scale when decoding CLAReps (after projection [S]; 1 = none).
        cfg_scales: Scales of the pure-CFG baseline decoded from the same ``x_{t*}``.
        fixed_ks: Extra decodes with a fixed ``k`` (``0 < k <= K``).
        method: ``"krylov"`` (matrix-free block Krylov, ours: ~5x fewer steps than ``"subspace"`` iteration for
            the same answer on the CIFAR-10 CDM, see ``bench/``), ``"subspace"`` or ``"exact"`` (full
            Jacobian + SVD).
        tol: Subspace-angle tolerance of the iteration.
        max_iter: Iteration cap.
        squared_evr: EVR from ``sigma^2`` (spec §5.1 default).
        clip_x0: Clamp the predicted clean image at every decoding step (pixel models only: never applied to
            VAE latents; inversion never clips).
        jacobian: Whose Jacobian gives the directions: ``"feature"``, the paper's ``f_{l,t*}`` at ``layer``;
            or ``"class_score"`` (ours, an ablation), ``eps(x, t*, c) - eps(x, t*, null)``, the CDM's implicit
            class score, whose top directions are those that change the class evidence most.
        seed: Seeds the iteration's random start and the random-direction control, per image.
    """

    t_star: int = 600
    K: int = 20
    layer: str = "mid"
    num_steps: int = 100
    guidance_scale: float = 1.0
    cfg_scales: tuple[float, ...] = (3.0,)
    fixed_ks: tuple[int, ...] = ()
    method: str = "krylov"
    tol: float = 1e-3
    max_iter: int = 60
    squared_evr: bool = True
    clip_x0: bool = True
    jacobian: str = "feature"
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field, so a bad config fails here rather than deep inside a run.

        Raises:
            ValueError: If a field is invalid: ``t_star`` must lie on the ``num_steps`` DDIM grid over
                ``[0, T]`` with ``0 < t_star <= T`` (``T = models.NUM_TIMESTEPS``, the book's schedule; the run
                checks it again against the model's ``alpha_bar``), ``layer`` must have the form of a layer name
                (the index is checked against the model when it is known, in :func:`clarid_batch`).
        """
        if self.jacobian not in JACOBIANS:
            raise ValueError(f"jacobian must be one of {JACOBIANS}, got {self.jacobian!r}")
        check_int("K", self.K, 1)
        if any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 < k <= self.K
               for k in self.fixed_ks):
            raise ValueError(f"fixed_ks must lie in 1..K = 1..{self.K}, got {self.fixed_ks}")
        T, num_steps = NUM_TIMESTEPS, check_int("num_steps", self.num_steps, 1)
        if T % num_steps:
            raise ValueError(f"num_steps must divide T = {T} (DDIM grid {{0, T/num_steps, ..., T}}), got {num_steps}")
        step = T // num_steps
        t_star = check_int("t_star", self.t_star, 1, T)
        if t_star % step:
            raise ValueError(f"t_star must lie on the {num_steps}-step DDIM grid (multiples of {step} in "
                             f"{step}..{T}), got {t_star}")
        check_layer_syntax("layer", self.layer)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (isinstance(self.tol, numbers.Real) and 0 < self.tol < math.inf):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol!r}")
        check_int("max_iter", self.max_iter, 1)
        for name, w in [("guidance_scale", self.guidance_scale), *(("cfg_scales", w) for w in self.cfg_scales)]:
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
                raise ValueError(f"{name} must hold finite numbers, got {w!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClaridConfig:
        d = dict(d)
        for key in ("cfg_scales", "fixed_ks"):
            d[key] = tuple(d[key])
        return cls(**d)

    def variants(self) -> list[str]:
        """Names of the decoded images, in a fixed order."""
        return (["reconstruction", "clarid", "random"] + [f"cfg{w:g}" for w in self.cfg_scales]
                + [f"k{k}" for k in self.fixed_ks])


def jacobian_target(model: CDM, cfg: ClaridConfig, label: Tensor):
    """The map whose Jacobian at ``x_{t*}`` CLARID decomposes, for one image of class ``label`` (``[1]``).

    Returns:
        ``f(z [B, *latent_shape]) -> [B, ...]``: ``f_{l,t*}(z, c)`` (Eq. 1) or, for ``cfg.jacobian ==
        "class_score"``, ``eps(z, t*, c) - eps(z, t*, null)``.
    """
    t = torch.tensor([cfg.t_star])
    if cfg.jacobian == "feature":
        def f(z: Tensor) -> Tensor:
            return model.features(z, t.expand(len(z)), label.expand(len(z)), cfg.layer)
    else:
        null = torch.tensor([model.null_class])

        def f(z: Tensor) -> Tensor:
            tt = t.expand(len(z))
            return model(z, tt, label.expand(len(z))) - model(z, tt, null.expand(len(z)))
    return f


def _check_run_inputs(model: CDM, images: Tensor, labels: Tensor, cfg: ClaridConfig,
                      labels_name: str = "labels") -> Tensor:
    """Entry checks of a CLARID run; returns the labels as int64. Real classes only: CLARID conditions on the
    image's class, so the null class is rejected."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a torch.uint8 tensor of shape [B, 3, H, W], got {describe(images)}")
    check_tensor("images", images, nonempty=True)
    labels = check_labels(labels_name, labels, len(images), model.num_classes)
    names = model.layer_names()
    if cfg.jacobian == "feature" and cfg.layer not in names:
        raise ValueError(f"cfg.layer must be one of this model's layers {names}, got {cfg.layer!r}")
    return labels


def _images(model: CDM, x0: Tensor) -> Tensor:
    """uint8 images (on the CPU) of clean samples of ``model``'s diffusion space."""
    return from_model_range(model.decode(x0)).cpu()


def _random_directions(n: int, k: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q.float()


def invert_with_directions(
    model: CDM, images: Tensor, labels: Tensor, alpha_bar: Tensor, cfg: ClaridConfig, seeds: Tensor,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The first half of CLARID for a batch, shared by every run that edits its latents: check the inputs,
    DDIM-invert to ``cfg.t_star``, take each image's top-``K`` extraneous directions and its EVR elbow.

    Args:
        model, images, labels, alpha_bar, cfg, seeds, progress: As :func:`clarid_batch`.

    Returns:
        ``(y [B], x_t [B, *latent_shape], V [B, n, K], sigma [B, K], k_star [B], iterations [B])``; ``y``,
        ``x_t`` and ``V`` on the model's device, the rest on the CPU.

    Raises:
        ValueError: As :func:`clarid_batch`.
    """
    y = _check_run_inputs(model, images, labels, cfg)
    check_tensor("seeds", seeds, ndim=1, dtype="integer")
    if len(seeds) != len(images):
        raise ValueError(f"seeds must have shape [B] = [{len(images)}], got {tuple(seeds.shape)}")
    dev = model_device(model)
    y = y.to(dev)
    x0 = model.encode(to_model_range(images).to(dev))
    x_t = ddim_invert(model, x0, y, alpha_bar, cfg.t_star, num_steps=cfg.num_steps)
    Vs, sigmas, k_stars, iters = [], [], [], []
    for i in tqdm(range(len(y)), desc="extraneous directions", disable=not progress, leave=False):
        f = jacobian_target(model, cfg, y[i : i + 1])
        V, sigma, info = extraneous_directions(f, x_t[i], cfg.K, cfg.method, tol=cfg.tol, max_iter=cfg.max_iter,
                                               chunk_size=model.jacobian_chunk_size,
                                               generator=int(seeds[i]) + cfg.seed, return_info=True)
        sigma = sigma.cpu()
        Vs.append(V)
        sigmas.append(sigma)
        k_stars.append(elbow_index(explained_variance_ratio(sigma, cfg.squared_evr)))
        iters.append(info["iterations"])
    return y, x_t, torch.stack(Vs), torch.stack(sigmas), torch.tensor(k_stars), torch.tensor(iters)


def clarid_batch(
    model: CDM,
    images: Tensor,
    labels: Tensor,
    alpha_bar: Tensor,
    cfg: ClaridConfig,
    seeds: Tensor,
    progress: bool = False,
) -> dict[str, Tensor]:
    """CLARID and its controls for a batch (see the module docstring).

    The images are encoded into the model's diffusion space (:meth:`~paperlib.models.CDM.encode`: the
    identity for pixel UNets, the VAE for the latent DiT) on the model's device; the results come back on the
    CPU, decoded into images.

    Args:
        model: The CDM (``eps_theta`` and ``features``).
        images: ``[B, 3, H, W]`` uint8 images, ``B >= 1``.
        labels: ``[B]`` integer classes in ``0..num_classes - 1`` (not the null class).
        alpha_bar: ``[T + 1]`` schedule of the model.
        cfg: Hyperparameters.
        seeds: ``[B]`` integer per-image seeds (e.g. dataset indices) for the random starts and controls.
        progress: tqdm bar over the images' Jacobians.

    Returns:
        ``sigma [B, K]``, ``k_star [B]``, ``iterations [B]``, ``clarep [B, *latent_shape]`` (float16) and one
        ``img.<variant> [B, 3, H, W]`` uint8 per :meth:`ClaridConfig.variants`.

    Raises:
        ValueError: If ``images``, ``labels`` or ``seeds`` are malformed, a label is not a real class, or
            ``cfg.layer`` is not a layer of ``model`` (all checked before the inversion).
    """
    y, x_t, V, sigma, k_star, iters = invert_with_directions(model, images, labels, alpha_bar, cfg, seeds, progress)
    dev = x_t.device
    n = x_t[0].numel()

    def keep_first(k: Tensor) -> Tensor:
        return (torch.arange(cfg.K) < k[:, None]).float()[:, None, :].to(dev)

    def decode(z: Tensor, w: float = 1.0) -> Tensor:
        return _images(model, ddim_decode(model, z, y, alpha_bar, cfg.t_star, 0, cfg.num_steps, w,
                                          model.null_class, clip_x0=clips_x0(model, cfg.clip_x0)))

    clarep = project_out(x_t, V * keep_first(k_star))
    R = torch.stack([_random_directions(n, cfg.K, int(s) + cfg.seed + 7919) for s in seeds]).to(dev)
    out = {
        "sigma": sigma,
        "k_star": k_star,
        "iterations": iters,
        "clarep": clarep.half().cpu(),
        "img.reconstruction": decode(x_t),
        "img.clarid": decode(clarep, cfg.guidance_scale),
        "img.random": decode(project_out(x_t, R * keep_first(k_star)), cfg.guidance_scale),
    }
    for w in cfg.cfg_scales:
        out[f"img.cfg{w:g}"] = decode(x_t, w)
    for k in cfg.fixed_ks:
        out[f"img.k{k}"] = decode(project_out(x_t, V * keep_first(torch.full_like(k_star, k))), cfg.guidance_scale)
    return out


def clarid_dataset(
    model: CDM,
    model_key: str,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    alpha_bar: Tensor,
    cfg: ClaridConfig,
    chunk_size: int = 50,
    publish: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Tensor], dict]:
    """:func:`clarid_batch` over ``images[indices]``, chunk by chunk, resumable, merged into one artifact.

    Args:
        model: The CDM.
        model_key: Identifies the CDM in the cache key (its manifest ``key``).
        images: ``[N, 3, H, W]`` uint8 dataset.
        labels: ``[N]`` classes.
        indices: ``[M]`` rows to run on (e.g. a class-stratified subset, recorded in the artifact).
        alpha_bar: ``[T + 1]`` schedule.
        cfg: Hyperparameters.
        chunk_size: Images per cached chunk.
        publish: Save the merged artifact, and the chunks until then, into ``artifacts/`` (the published book).
        progress: tqdm bar over chunks.

    Returns:
        ``(tensors, manifest)``: :func:`clarid_batch`'s outputs for all ``M`` images plus ``indices``,
        ``labels`` and per-image ``seconds``.
    """
    _check_run_inputs(model, images, labels, cfg)
    indices = check_indices("indices", indices, len(images))
    config = {"model": model_key, "clarid": cfg.to_dict(), "indices_sha": config_key(indices.tolist())}

    def chunk(start: int, stop: int) -> dict[str, Tensor]:
        idx = indices[start:stop]
        tic = time.perf_counter()
        part = clarid_batch(model, images[idx], labels[idx], alpha_bar, cfg, idx)
        part["seconds"] = torch.full((len(idx),), (time.perf_counter() - tic) / len(idx))
        return part

    provenance = {"data": fingerprint(images, labels)}
    hint = "The run indexes other images than the ones given here; pass the images it was made from."
    return load_or_compute_chunked(
        STAGE, config, len(indices), chunk_size, chunk,
        finish=lambda merged: {**merged, "indices": indices, "labels": labels[indices]}, version=STAGE_VERSION,
        publish=publish, verbose=progress, provenance=provenance, hint=hint,
        desc=f"CLARID ({len(indices)} images)")


def decode_k_sweep(
    model: CDM,
    image: Tensor,
    label: int,
    alpha_bar: Tensor,
    cfg: ClaridConfig,
    ks: list[int],
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """One image with ``k = 0, ...`` extraneous directions removed (App. H.2, Figs. 21-22).

    Args:
        model: The CDM.
        image: ``[3, H, W]`` uint8 image.
        label: Its class.
        alpha_bar: ``[T + 1]`` schedule.
        cfg: Hyperparameters (``t_star``, ``K``, ``layer``, ...).
        ks: Numbers of directions to remove (``0 <= k <= K``).
        seed: Seed of the iteration's random start.

    Returns:
        ``(images [len(ks), 3, H, W] uint8, sigma [K])``.

    Raises:
        ValueError: If ``ks`` is empty or holds non-integers outside ``0..K``, ``image`` is not one uint8 image,
            ``label`` is not a real class, or ``cfg.layer`` is not a layer of ``model``.
    """
    if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= cfg.K for k in ks):
        raise ValueError(f"ks must lie in 0..K = 0..{cfg.K} (a non-empty list of integers), got {ks}")
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image must be one torch.uint8 image of shape [3, H, W], got {describe(image)}")
    y = _check_run_inputs(model, image[None], torch.tensor([check_int("label", label)]), cfg, "label")
    dev = model_device(model)
    y = y.to(dev)
    x0 = model.encode(to_model_range(image[None]).to(dev))
    x_t = ddim_invert(model, x0, y, alpha_bar, cfg.t_star, num_steps=cfg.num_steps)
    V, sigma = extraneous_directions(jacobian_target(model, cfg, y), x_t[0], cfg.K, cfg.method, tol=cfg.tol,
                                     max_iter=cfg.max_iter, chunk_size=model.jacobian_chunk_size,
                                     generator=seed + cfg.seed)
    z = torch.stack([project_out(x_t[0], V[:, :k]) for k in ks])
    out = ddim_decode(model, z, y.expand(len(ks)), alpha_bar, cfg.t_star, 0, cfg.num_steps, cfg.guidance_scale,
                      model.null_class, clip_x0=clips_x0(model, cfg.clip_x0))
    return _images(model, out), sigma.cpu()


def book_clarid_run(
    cdm: BookCDM, profile: str, dataset: str, cfg: ClaridConfig | None = None, n_images: int | None = None,
    seed: int = 0, progress: bool = True,
) -> tuple[dict[str, Tensor], ClaridConfig]:
    """The chapters' CLARID run of ``dataset``: with ``cfg`` and ``n_images`` given (chapter 3), run it and
    record both for the next chapters; without, reuse the recorded run (chapters 4-5).

    The images are a class-stratified random subset of the training set (spec §12 #20), ``seed``-fixed.

    Returns:
        ``(tensors, cfg)``: :func:`clarid_dataset`'s outputs and the configuration used.
    """
    from paperlib.data import stratified_subset
    from paperlib.selection import load_choice, record_choice

    if cfg is None:
        spec = load_choice(profile, dataset, "clarid")
        cfg, n_images, seed = ClaridConfig.from_dict(spec["config"]), spec["n_images"], spec["seed"]
    elif n_images is None:
        raise ValueError("n_images must be given together with cfg")
    else:
        record_choice(profile, dataset, "clarid", {"config": cfg.to_dict(), "n_images": n_images, "seed": seed},
                      "03_evr_elbow")
    subset = stratified_subset(cdm.labels, n=n_images, seed=seed)
    tensors, _ = clarid_dataset(cdm.model, cdm.manifest["key"], cdm.images, cdm.labels, subset, cdm.alpha_bar, cfg,
                                publish=profile == "full", progress=progress)
    return tensors, cfg


def canonical_features(
    cdm: BookCDM, run: dict[str, Tensor], cfg: ClaridConfig, layer: str, t: int, num_steps: int = 100,
    publish: bool = False, progress: bool = True, condition: str = "class",
) -> tuple[dict[str, Tensor], dict]:
    """Canonical Features (§3.7) of a CLARID run, and the same features of its CFG samples and originals.

    Each is ``avgpool f_{l_f,t_f}`` at the DDIM inversion of the image to ``t_f``
    (:func:`paperlib.features.image_features`), one rule for all three.

    Args:
        condition: ``"class"``: inverted and featurised under the image's label (the paper's
            ``f_{l,t}(x, c)``); ``"null"``: under the null class, features that see only the image [O].

    Returns:
        ``(tensors, manifest)`` with ``canonical``, ``cfg`` (first CFG scale), ``original`` ``[M, C_l]``,
        and the run's ``indices`` and ``labels``.
    """
    from paperlib.features import image_features

    config = {"model": cdm.manifest["key"], "clarid": cfg.to_dict(), "indices_sha": config_key(run["indices"].tolist()),
              "layer": layer, "t": int(t), "num_steps": num_steps}
    if condition not in ("class", "null"):
        raise ValueError(f"condition must be 'class' or 'null', got {condition!r}")
    if condition == "null":
        config["condition"] = "null"

    def compute() -> dict[str, Tensor]:
        labels = run["labels"]
        cond = labels if condition == "class" else torch.full_like(labels, cdm.model.null_class)
        sets = {"canonical": run["img.clarid"], "cfg": run[f"img.cfg{cfg.cfg_scales[0]:g}"],
                "original": cdm.images[run["indices"]]}
        out = {k: image_features(cdm.model, v, cond, cdm.alpha_bar, int(t), layer, num_steps, progress=progress)
               for k, v in sets.items()}
        return {**out, "indices": run["indices"], "labels": labels}

    return load_or_compute("canonical_features", config, compute, 1, publish, verbose=progress,
                           provenance={"data": cdm.manifest["data"]})
