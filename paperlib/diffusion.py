"""Noise schedule and deterministic DDIM sampling, inversion and decoding (paper App. B, Eqs. 7-10).

Conventions (shared by every chapter):

- ``alpha_bar`` has length ``T + 1``; ``alpha_bar[0] = 1`` is clean data and ``alpha_bar[t]`` is
  :math:`\\bar\\alpha_t = \\prod_{s=1}^{t} (1 - \\beta_s)` for ``t = 1..T``.
- A DDIM grid of ``num_steps`` steps is ``{0, T/num_steps, ..., T}`` (``num_steps + 1`` points); every time
  handed to :func:`ddim_invert` / :func:`ddim_decode` must lie on it.
- An ``eps_model`` is any callable ``eps_model(x_t, t, y) -> eps`` with ``x_t`` of shape ``[B, *D]``,
  ``t`` and ``y`` integer tensors of shape ``[B]``, returning a tensor of shape ``[B, *D]``. The null
  label used by classifier-free guidance is passed as ``null_class``.

The inversion loop is written here rather than taken from diffusers' ``DDIMInverseScheduler``, whose
time indexing is off by one step against its forward scheduler.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from paperlib.progress import tqdm
from paperlib.validate import check_int, check_labels, check_tensor

EpsModel = Callable[[Tensor, Tensor, Tensor], Tensor]

DATA_RANGE_TOL = 1e-3
"""Slack allowed outside an eps_model's ``data_range`` for the clean samples handed to :func:`ddim_invert`."""


def linear_beta_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear variance schedule of DDPM (Ho et al. 2020), the one DiT/ADM use.

    Args:
        T: Number of diffusion steps.
        beta_start: :math:`\\beta_1`.
        beta_end: :math:`\\beta_T`.

    Returns:
        ``betas`` of shape ``[T]`` (float64), ``betas[t - 1]`` = :math:`\\beta_t`.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
        )
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def alpha_bar(betas: Tensor) -> Tensor:
    """Cumulative signal rate :math:`\\bar\\alpha_t = \\prod_{s \\le t} (1-\\beta_s)` (Eq. 7); ``alpha_bar[0] = 1``.

    Args:
        betas: ``[T]`` variance schedule.

    Returns:
        ``[T + 1]`` float64 tensor.

    Raises:
        ValueError: If ``betas`` is not a non-empty 1-D tensor of finite values in ``(0, 1)``.
    """
    if betas.ndim != 1 or len(betas) == 0:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas < 1)).all()):  # NaN fails too
        raise ValueError(f"betas must have values in (0, 1), got values in [{float(betas.min()):g}, "
                         f"{float(betas.max()):g}]")
    one = torch.ones(1, dtype=torch.float64)
    return torch.cat([one, torch.cumprod(1.0 - betas.double(), dim=0)])


def q_sample(x0: Tensor, t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """Forward process :math:`x_t = \\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon` (Eq. 7).

    Args:
        x0: ``[B, *D]`` clean samples.
        t: ``[B]`` integer times in ``0..T``.
        eps: ``[B, *D]`` standard normal noise.
        alpha_bar: ``[T + 1]`` schedule from :func:`alpha_bar`.

    Returns:
        ``[B, *D]`` noisy samples.

    Raises:
        ValueError: If ``t`` is not an integer tensor in ``0..T`` or ``eps`` differs from ``x0`` in shape.
    """
    T = len(alpha_bar) - 1
    check_tensor("t", t, dtype="integer")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > T):
        raise ValueError(f"t must be in 0..T = 0..{T}, got values in {int(t.min())}..{int(t.max())}")
    if eps.shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    ab = _bcast(alpha_bar.to(x0.device)[t].to(x0.dtype), x0)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps


def predict_x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """DDIM :math:`\\hat x_0 = (x_t - \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon)/\\sqrt{\\bar\\alpha_t}` (Eq. 10)."""
    ab = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()


def ddim_grid(T: int, num_steps: int) -> Tensor:
    """The shared DDIM time grid ``{0, T/num_steps, ..., T}`` (``[num_steps + 1]`` int64).

    Raises:
        ValueError: If ``T`` or ``num_steps`` is not an integer, or ``num_steps`` does not divide ``T``.
    """
    T, num_steps = check_int("T", T, 1), check_int("num_steps", num_steps)
    if num_steps < 1 or T % num_steps != 0:
        raise ValueError(f"num_steps must be >= 1 and divide T={T}, got num_steps={num_steps}")
    return torch.arange(0, T + 1, T // num_steps, dtype=torch.long)


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _grid_index(t: int, grid: Tensor, name: str) -> int:
    t = check_int(name, t)  # 600.5 must not become 600
    hits = (grid == t).nonzero()
    if len(hits) == 0:
        step = int(grid[1] - grid[0])
        raise ValueError(f"{name}={t} is not on the DDIM grid 0..{int(grid[-1])} with step {step}")
    return int(hits[0])


def _check_labels(y: Tensor, x: Tensor) -> Tensor:
    # Integer dtype and shape only: the valid range is the eps_model's (e.g. ClassConditionalUNet checks it).
    return check_labels("y", y, x.shape[0], device=x.device)


def _check_alpha_bar(alpha_bar: Tensor) -> None:
    check_tensor("alpha_bar", alpha_bar, ndim=1, finite=True, value_range=(0.0, 1.0))
    if len(alpha_bar) < 2:
        raise ValueError(f"alpha_bar must be a [T + 1] schedule with T >= 1, got shape {tuple(alpha_bar.shape)}")


def _check_inputs(eps_model: EpsModel, name: str, x: Tensor, alpha_bar: Tensor, guidance_scale: float,
                  null_class: int | None, clean: bool = False, data_range: tuple[float, float] | None = None) -> None:
    """Entry checks of the DDIM loops, once per call (never per step). ``clean``: ``x`` holds clean samples,
    checked against ``data_range`` (default: the ``eps_model``'s ``data_range`` attribute, if any)."""
    _check_alpha_bar(alpha_bar)
    check_tensor(name, x, min_ndim=1, dtype="floating", nonempty=True, finite=True)
    if clean and data_range is None:
        data_range = getattr(eps_model, "data_range", None)
    if clean and data_range is not None:
        check_tensor(name, x, value_range=tuple(data_range), tol=DATA_RANGE_TOL,
                     range_note=f"the model's data range, tolerance {DATA_RANGE_TOL:g}; map images with "
                                "paperlib.data.to_model_range")
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
    if guidance_scale != 1.0 and null_class is None:
        raise ValueError(f"guidance_scale={guidance_scale} != 1 needs a null_class (the model's unconditional label)")
    if null_class is not None:
        check_int("null_class", null_class, 0)


def guided_eps(
    eps_model: EpsModel,
    x_t: Tensor,
    t: int,
    y: Tensor,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
) -> Tensor:
    """Noise prediction with classifier-free guidance.

    :math:`\\tilde\\epsilon = \\epsilon(x_t,t,\\varnothing) + w(\\epsilon(x_t,t,c) - \\epsilon(x_t,t,\\varnothing))`;
    ``w = 1`` is the plain conditional model (no unconditional pass is made).

    Args:
        eps_model: Noise predictor (see module docstring).
        x_t: ``[B, *D]`` noisy samples at time ``t``.
        t: Integer time.
        y: ``[B]`` class labels.
        guidance_scale: CFG scale ``w``.
        null_class: Label of the unconditional branch; required when ``w != 1``.

    Returns:
        ``[B, *D]`` guided noise prediction.
    """
    tt = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
    if guidance_scale == 1.0:
        return eps_model(x_t, tt, y)
    if null_class is None:
        raise ValueError(f"guidance_scale={guidance_scale} != 1 needs a null_class (the model's unconditional label)")
    both = eps_model(torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, null_class)]))
    eps_c, eps_u = both.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def ddim_step(x: Tensor, eps: Tensor, alpha_bar_from: Tensor | float, alpha_bar_to: Tensor | float,
              clip_x0: bool = False) -> Tensor:
    """One deterministic DDIM update (Eq. 10, ``eta = 0``), valid in both directions.

    :math:`x_{to} = \\sqrt{\\bar\\alpha_{to}}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_{to}}\\,\\epsilon`, with
    :math:`\\hat x_0` from ``x`` at ``alpha_bar_from``. ``clip_x0`` clamps :math:`\\hat x_0` to ``[-1, 1]`` and
    re-derives :math:`\\epsilon` from it (diffusers' ``clip_sample``): standard for pixel models when decoding,
    never used for inversion, which it would make inexact.
    """
    x0 = predict_x0_from_eps(x, eps, alpha_bar_from)
    if clip_x0:
        ab_from = torch.as_tensor(alpha_bar_from, dtype=x.dtype, device=x.device)
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - ab_from.sqrt() * x0) / (1.0 - ab_from).sqrt()
    ab_to = torch.as_tensor(alpha_bar_to, dtype=x.dtype, device=x.device)
    return ab_to.sqrt() * x0 + (1.0 - ab_to).sqrt() * eps


def _run(
    eps_model: EpsModel,
    x: Tensor,
    y: Tensor,
    alpha_bar: Tensor,
    times: list[int],
    guidance_scale: float,
    null_class: int | None,
    progress: bool,
    return_trajectory: bool,
    desc: str,
    clip_x0: bool = False,
) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
    y = _check_labels(y, x)
    ab = alpha_bar.to(x.device)
    traj = {times[0]: x}
    for t_from, t_to in tqdm(list(zip(times[:-1], times[1:])), desc=desc, disable=not progress, leave=False):
        # Decoding evaluates eps at the noisier end; inversion (upward) at the current, cleaner end.
        eps = guided_eps(eps_model, x, t_from, y, guidance_scale, null_class)
        x = ddim_step(x, eps, ab[t_from].to(x.dtype), ab[t_to].to(x.dtype), clip_x0)
        if return_trajectory:
            traj[t_to] = x
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def ddim_invert(
    eps_model: EpsModel,
    x: Tensor,
    y: Tensor,
    alpha_bar: Tensor,
    t_to: int,
    t_from: int = 0,
    num_steps: int = 100,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    *,
    data_range: tuple[float, float] | None = None,
) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
    """Deterministic conditional DDIM inversion :math:`F_{inv}` from ``t_from`` up to ``t_to`` (paper §3.1).

    Each step from ``s`` to the next grid time ``t > s`` evaluates :math:`\\epsilon_\\theta(x_s, s, c)`
    and applies the DDIM update (Eq. 10) upward. No guidance by default: CFG during inversion breaks
    reconstruction, and the paper applies CFG only after projection.

    Args:
        eps_model: Noise predictor ``eps_model(x_t, t, y)``.
        x: ``[B, *D]`` samples at time ``t_from`` (``t_from = 0``: clean data).
        y: ``[B]`` class labels (the condition ``c``).
        alpha_bar: ``[T + 1]`` schedule.
        t_to: Target grid time ``t*`` (``t_from < t_to <= T``).
        t_from: Start grid time.
        num_steps: Steps of the full DDIM grid over ``[0, T]`` (the paper: 100).
        guidance_scale: CFG scale during inversion (default 1: none).
        null_class: Unconditional label, needed when ``guidance_scale != 1``.
        progress: Show a tqdm bar.
        return_trajectory: Also return ``{t: x_t}`` for every grid time visited.
        data_range: ``(lo, hi)`` the clean samples must lie in when ``t_from = 0`` (tolerance
            :data:`DATA_RANGE_TOL`); ``None``: the ``eps_model``'s ``data_range`` attribute if it has one
            (:class:`~paperlib.models.ClassConditionalUNet`: ``(-1, 1)``), else unchecked (toy data, VAE latents).
            Latents at ``t_from > 0`` can take any finite value and are only checked for finiteness.

    Returns:
        ``x_{t_to}`` of shape ``[B, *D]`` (and the trajectory if asked).

    Raises:
        ValueError: If ``x`` is empty, not floating, not finite, or (at ``t_from = 0``) outside ``data_range``;
            if ``y`` is not integer labels of shape ``[B]``; if a time is not an integer on the grid.
    """
    grid = ddim_grid(len(alpha_bar) - 1, num_steps)
    i0, i1 = _grid_index(t_from, grid, "t_from"), _grid_index(t_to, grid, "t_to")
    _check_inputs(eps_model, "x", x, alpha_bar, guidance_scale, null_class, clean=i0 == 0, data_range=data_range)
    if i1 <= i0:
        raise ValueError(f"ddim_invert needs t_from < t_to, got t_from={t_from}, t_to={t_to}")
    times = grid[i0 : i1 + 1].tolist()
    return _run(eps_model, x, y, alpha_bar, times, guidance_scale, null_class, progress, return_trajectory,
                "DDIM inversion")


@torch.no_grad()
def ddim_decode(
    eps_model: EpsModel,
    x_t: Tensor,
    y: Tensor,
    alpha_bar: Tensor,
    t_from: int,
    t_to: int = 0,
    num_steps: int = 100,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    clip_x0: bool = False,
) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
    """Deterministic DDIM decoding :math:`F_{dec}` from ``t_from`` down to ``t_to`` (Eq. 10).

    Args:
        eps_model: Noise predictor ``eps_model(x_t, t, y)``.
        x_t: ``[B, *D]`` latents at grid time ``t_from``.
        y: ``[B]`` class labels.
        alpha_bar: ``[T + 1]`` schedule.
        t_from: Start grid time (e.g. ``t*``, or ``T`` for sampling from noise).
        t_to: End grid time (``0``: clean data).
        num_steps: Steps of the full DDIM grid over ``[0, T]``.
        guidance_scale: CFG scale ``w`` (applied after CLARID's projection in the paper).
        null_class: Unconditional label, needed when ``guidance_scale != 1``.
        progress: Show a tqdm bar.
        return_trajectory: Also return ``{t: x_t}`` for every grid time visited.
        clip_x0: Clamp the predicted clean sample to ``[-1, 1]`` at every step (pixel models; see
            :func:`ddim_step`).

    Returns:
        ``x_{t_to}`` of shape ``[B, *D]`` (and the trajectory if asked).

    Raises:
        ValueError: If ``x_t`` is empty, not floating or not finite (a noisy latent may take any finite value);
            if ``y`` is not integer labels of shape ``[B]``; if a time is not an integer on the grid.
    """
    grid = ddim_grid(len(alpha_bar) - 1, num_steps)
    i0, i1 = _grid_index(t_from, grid, "t_from"), _grid_index(t_to, grid, "t_to")
    _check_inputs(eps_model, "x_t", x_t, alpha_bar, guidance_scale, null_class)
    if i1 >= i0:
        raise ValueError(f"ddim_decode needs t_from > t_to, got t_from={t_from}, t_to={t_to}")
    times = grid[i1 : i0 + 1].flip(0).tolist()
    return _run(eps_model, x_t, y, alpha_bar, times, guidance_scale, null_class, progress, return_trajectory,
                "DDIM decoding", clip_x0)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) < 1 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"shape must be (B, *D) with positive integer sizes, got {shape}")
    return tuple(int(s) for s in shape)


def _noise(shape: tuple[int, ...], generator: torch.Generator | int | None, device: str | torch.device) -> Tensor:
    if isinstance(generator, int) or generator is None:
        generator = torch.Generator().manual_seed(0 if generator is None else generator)
    return torch.randn(shape, generator=generator).to(device)


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel,
    shape: tuple[int, ...],
    y: Tensor,
    alpha_bar: Tensor,
    generator: torch.Generator | int,
    num_steps: int = 100,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    clip_x0: bool = False,
) -> Tensor:
    """Sample from the CDM: ``x_T ~ N(0, I)`` (drawn on the CPU from ``generator``), then :func:`ddim_decode` to 0.

    Args:
        eps_model: Noise predictor.
        shape: ``(B, *D)`` output shape.
        y: ``[B]`` labels (``null_class`` everywhere for unconditional samples).
        alpha_bar: ``[T + 1]`` schedule.
        generator: ``torch.Generator`` or integer seed for ``x_T``.
        num_steps: DDIM steps.
        guidance_scale: CFG scale.
        null_class: Unconditional label.
        device: Where the model runs.
        progress: Show a tqdm bar.
        clip_x0: Clamp the predicted clean sample at every step (see :func:`ddim_step`).

    Returns:
        ``[B, *D]`` samples.

    Raises:
        ValueError: If ``shape`` has a non-positive size, or on the checks of :func:`ddim_decode`.
    """
    x_T = _noise(_check_shape(tuple(shape)), generator, device)
    T = len(alpha_bar) - 1
    return ddim_decode(eps_model, x_T, y, alpha_bar, T, 0, num_steps, guidance_scale, null_class, progress,
                       clip_x0=clip_x0)


@torch.no_grad()
def two_stage_sample(
    eps_model: EpsModel,
    shape: tuple[int, ...],
    y: Tensor,
    alpha_bar: Tensor,
    t_switch: int,
    null_class: int,
    generator: torch.Generator | int,
    num_steps: int = 50,
    guidance_scale: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    clip_x0: bool = False,
) -> Tensor:
    """Two-stage sampling used to choose ``t*`` (paper §3.2.1, App. H.1).

    Unconditional DDIM from ``T`` down to the switch time ``t_c`` (``eps(x_t, t, null)``), then
    conditional from ``t_c`` to 0 (``eps(x_t, t, c)``, CFG scale ``guidance_scale``, default none).
    ``t_switch = T`` is fully conditional sampling, ``t_switch = 0`` fully unconditional.

    Args:
        eps_model: Noise predictor.
        shape: ``(B, *D)`` output shape.
        y: ``[B]`` class labels used below ``t_switch``.
        alpha_bar: ``[T + 1]`` schedule.
        t_switch: Switch time ``t_c`` on the grid.
        null_class: Unconditional label.
        generator: ``torch.Generator`` or seed for ``x_T``.
        num_steps: DDIM steps (the paper: 50).
        guidance_scale: CFG scale of the conditional stage.
        device: Where the model runs.
        progress: Show a tqdm bar.
        clip_x0: Clamp the predicted clean sample at every step (see :func:`ddim_step`).

    Returns:
        ``[B, *D]`` samples.

    Raises:
        ValueError: If ``shape`` has a non-positive size, ``t_switch`` is off the grid, ``null_class`` is not an
            integer, or on the checks of :func:`ddim_decode`.
    """
    _check_alpha_bar(alpha_bar)
    T = len(alpha_bar) - 1
    grid = ddim_grid(T, num_steps)
    _grid_index(t_switch, grid, "t_switch")
    check_int("null_class", null_class, 0)
    x = _noise(_check_shape(tuple(shape)), generator, device)
    y = _check_labels(y, x)
    if t_switch < T:
        x = ddim_decode(eps_model, x, torch.full_like(y, null_class), alpha_bar, T, t_switch, num_steps,
                        progress=progress, clip_x0=clip_x0)
    if t_switch > 0:
        x = ddim_decode(eps_model, x, y, alpha_bar, t_switch, 0, num_steps, guidance_scale, null_class, progress,
                        clip_x0=clip_x0)
    return x
