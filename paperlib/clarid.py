"""CLARID: Canonical LAtent Representation IDentifier (paper §3.2, Eqs. 1-2, Algorithm 1).

Pipeline for one sample ``x_0`` of class ``c``:

1. DDIM-invert ``x_0`` to ``t*`` (:func:`paperlib.diffusion.ddim_invert`);
2. take the Jacobian ``J = d f_{l,t*}(x, c) / dx`` of an internal CDM feature at ``x_{t*}`` (Eq. 1) and its
   top right singular vectors, the *extraneous directions* (:func:`extraneous_directions`);
3. choose ``k*`` at the elbow of the explained-variance curve (:func:`explained_variance_ratio`,
   :func:`elbow_index`);
4. project them out, ``x~ = (I - V_k V_k^T) x_{t*}`` (Eq. 2, :func:`project_out`): the CLARep;
5. DDIM-decode the CLARep with CFG after the projection: the Canonical Sample.

A ``feature_fn`` maps a batch ``[B, *D]`` to features ``[B, *F]`` and must treat samples independently
(no batch statistics): the Jacobian products below evaluate it on ``r`` copies of one sample at once.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from paperlib.diffusion import DATA_RANGE_TOL, EpsModel, ddim_decode, ddim_invert
from paperlib.progress import tqdm
from paperlib.validate import check_int, check_labels, check_tensor

FeatureFn = Callable[[Tensor], Tensor]
FeatureModel = Callable[[Tensor, Tensor, Tensor], Tensor]


@contextlib.contextmanager
def autodiff_safe_attention() -> Iterator[None]:
    """Route scaled-dot-product attention to the math kernel.

    Forward-mode AD (``torch.func.jvp``) is not implemented for the fused CPU attention kernels that
    diffusers' attention processors call; the math backend is differentiable in both modes.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _chunks(n: int, size: int | None) -> list[slice]:
    size = n if size is None else max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def jvp_columns(feature_fn: FeatureFn, x: Tensor, tangents: Tensor, chunk_size: int | None = None) -> Tensor:
    """Jacobian-vector products ``J t_j`` for many tangents at one point.

    Args:
        feature_fn: Batched feature map ``[B, *D] -> [B, *F]``.
        x: ``[*D]`` the point of linearisation.
        tangents: ``[r, n]`` tangents (``n = prod(D)``).
        chunk_size: Tangents per forward-mode pass (``None``: all at once).

    Returns:
        ``[r, m]`` with row ``j`` equal to ``J @ tangents[j]`` (``m = prod(F)``).
    """
    out = []
    with autodiff_safe_attention():
        for sl in _chunks(len(tangents), chunk_size):
            tan = tangents[sl].reshape(-1, *x.shape).to(x.dtype)
            primal = x.unsqueeze(0).expand_as(tan).contiguous()
            _, jv = torch.func.jvp(feature_fn, (primal,), (tan,))
            out.append(jv.reshape(len(tan), -1).detach())
    return torch.cat(out)


def vjp_rows(feature_fn: FeatureFn, x: Tensor, cotangents: Tensor, chunk_size: int | None = None) -> Tensor:
    """Vector-Jacobian products ``J^T u_j`` for many cotangents at one point.

    Args:
        feature_fn: Batched feature map ``[B, *D] -> [B, *F]``.
        x: ``[*D]`` the point of linearisation.
        cotangents: ``[r, m]`` cotangents.
        chunk_size: Cotangents per reverse-mode pass (``None``: all at once).

    Returns:
        ``[r, n]`` with row ``j`` equal to ``J^T @ cotangents[j]``.
    """
    out = []
    with autodiff_safe_attention():
        for sl in _chunks(len(cotangents), chunk_size):
            r = sl.stop - sl.start
            primal = x.unsqueeze(0).expand(r, *x.shape).contiguous()
            f, vjp_fn = torch.func.vjp(feature_fn, primal)
            (g,) = vjp_fn(cotangents[sl].reshape(f.shape).to(f.dtype))
            out.append(g.reshape(r, -1).detach())
    return torch.cat(out)


def jacobian(feature_fn: FeatureFn, x: Tensor, chunk_size: int | None = 256) -> Tensor:
    """The full Jacobian of ``feature_fn`` at one point (Eq. 1), one forward-mode pass per column chunk.

    Args:
        feature_fn: Batched feature map ``[B, *D] -> [B, *F]``.
        x: ``[*D]`` the point of linearisation.
        chunk_size: Columns per pass.

    Returns:
        ``J`` of shape ``[m, n]``.
    """
    n = x.numel()
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    return jvp_columns(feature_fn, x, eye, chunk_size).T


def _subspace_residual(V_new: Tensor, V_old: Tensor) -> float:
    """``sin`` of the largest principal angle between span(V_new) and span(V_old) (orthonormal columns)."""
    return float(torch.linalg.matrix_norm(V_new - V_old @ (V_old.T @ V_new), ord=2))


METHODS = ("exact", "subspace", "krylov")


def extraneous_directions(
    feature_fn: FeatureFn,
    x: Tensor,
    k: int,
    method: str = "subspace",
    *,
    oversample: int = 4,
    max_iter: int = 100,
    min_iter: int = 3,
    tol: float = 1e-3,
    chunk_size: int | None = None,
    generator: torch.Generator | int | None = None,
    return_info: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, float]]:
    """Top-``k`` right singular vectors and values of ``J = d feature_fn / dx`` at ``x`` (paper §3.2, Eq. 1).

    These are the unit directions that change the CDM feature most (``||J v||``): the *extraneous
    directions*. Two methods:

    - ``"exact"``: form ``J`` (``n`` JVPs) and call ``torch.linalg.svd``; for small ``n``.
    - ``"subspace"``: matrix-free block power (subspace) iteration on ``J^T J`` as in Park et al. (2023):
      ``W = J^T (J V)`` by ``r`` JVPs and ``r`` VJPs, ``V <- left singular vectors of W``; stop when the
      sine of the largest principal angle between successive top-``k`` subspaces falls below ``tol``.
      A final Rayleigh-Ritz step (``svd(J V)``) orders the vectors and gives ``sigma_i = ||J v_i||``.
      ``r = k + oversample`` (Halko et al. 2011) speeds up convergence when ``sigma_k ~ sigma_{k+1}``.
    - ``"krylov"`` (ours): block Krylov iteration from the same products, with Rayleigh-Ritz on the whole
      Krylov space ``span(V_0, A V_0, A^2 V_0, ...)``, ``A = J^T J``; far fewer steps when the top singular
      values are close (as for CDM features), and the subspace-change test is then trustworthy. The
      basis costs ``n x (steps * r)`` and ``m x (steps * r)`` memory.

    Args:
        feature_fn: Batched feature map ``[B, *D] -> [B, *F]`` (e.g. the mid-block activation at ``t*``
            with the class fixed).
        x: ``[*D]`` the inverted latent ``x_{t*}`` of one sample.
        k: Number of directions, ``1 <= k <= n``.
        method: ``"exact"``, ``"subspace"`` or ``"krylov"``.
        oversample: Extra iteration vectors (block size ``k + oversample``; iterative methods).
        max_iter: Iteration cap (iterative methods).
        min_iter: Iterations run before testing convergence (iterative methods).
        tol: Convergence threshold on the sine of the largest angle between successive top-``k`` subspaces.
        chunk_size: Products per autodiff pass (memory knob).
        generator: Seed or generator of the random start (iterative methods).
        return_info: Also return ``{"iterations", "residual"}``.

    Returns:
        ``(V, sigma)``: ``V`` of shape ``[n, k]`` with orthonormal columns and ``sigma`` of shape ``[k]``,
        non-increasing. Signs of the ``v_i`` are arbitrary (irrelevant to a projection).

    Raises:
        ValueError: If ``x`` is not a finite floating tensor, ``k`` is outside ``1..n``, or a setting is invalid.
    """
    check_tensor("x", x, dtype="floating", finite=True)
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n = 1..{n} (the input dimension), got k={k}")
    if method == "exact":
        J = jacobian(feature_fn, x, chunk_size or 256)
        full = k > min(J.shape)
        _, S, Vh = torch.linalg.svd(J, full_matrices=full)
        sigma = torch.zeros(k, dtype=S.dtype, device=S.device)
        sigma[: min(k, len(S))] = S[:k]
        V, info = Vh[:k].T.contiguous(), {"iterations": 0.0, "residual": 0.0}
    elif method == "subspace":
        if max_iter < 1 or min_iter < 1 or tol <= 0:
            raise ValueError(f"need max_iter >= 1, min_iter >= 1, tol > 0; got {max_iter}, {min_iter}, {tol}")
        r = min(n, k + max(0, oversample))
        gen = _as_generator(generator)
        Q = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64)).Q.to(x.dtype).to(x.device)
        residual, it = float("inf"), 0
        for it in range(1, max_iter + 1):
            JQ = jvp_columns(feature_fn, x, Q.T, chunk_size)            # [r, m]
            W = vjp_rows(feature_fn, x, JQ, chunk_size).T                # [n, r] = J^T J Q
            Q_new = torch.linalg.svd(W, full_matrices=False).U          # ordered by sigma^2 estimates
            residual = _subspace_residual(Q_new[:, :k], Q[:, :k])
            Q = Q_new
            if it >= min_iter and residual < tol:
                break
        # Rayleigh-Ritz: exact ordering and sigma_i = ||J v_i|| within the converged subspace.
        B = jvp_columns(feature_fn, x, Q.T, chunk_size).T               # [m, r]
        _, S, Hh = torch.linalg.svd(B, full_matrices=False)
        V, sigma = (Q @ Hh.T)[:, :k].contiguous(), S[:k]
        info = {"iterations": float(it), "residual": residual}
    elif method == "krylov":
        if max_iter < 1 or min_iter < 1 or tol <= 0:
            raise ValueError(f"need max_iter >= 1, min_iter >= 1, tol > 0; got {max_iter}, {min_iter}, {tol}")
        V, sigma, info = _block_krylov(feature_fn, x, k, min(n, k + max(0, oversample)), max_iter, min_iter, tol,
                                       chunk_size, _as_generator(generator))
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return (V, sigma, info) if return_info else (V, sigma)


def _orthogonalize(W: Tensor, Q: Tensor) -> Tensor:
    """Orthonormal basis of the part of ``span(W)`` orthogonal to ``span(Q)`` (two Gram-Schmidt passes)."""
    for _ in range(2):
        W = W - Q @ (Q.T @ W)
    B = torch.linalg.qr(W).Q
    return torch.linalg.qr(B - Q @ (Q.T @ B)).Q


def _block_krylov(
    feature_fn: FeatureFn, x: Tensor, k: int, r: int, max_iter: int, min_iter: int, tol: float,
    chunk_size: int | None, gen: torch.Generator | None,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Block Krylov iteration on ``J^T J`` with full reorthogonalization and Rayleigh-Ritz on the whole
    Krylov space (Musco & Musco 2015): the same products per step as subspace iteration (``r`` JVPs, ``r``
    VJPs), but convergence in ``O(1/sqrt(gap))`` steps instead of ``O(1/gap)`` when the spectrum is flat."""
    n = x.numel()
    B = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64)).Q.to(x.dtype).to(x.device)
    Qs: list[Tensor] = []
    JQs: list[Tensor] = []
    V_prev, residual, it = None, float("inf"), 0
    for it in range(1, max_iter + 1):
        JB = jvp_columns(feature_fn, x, B.T, chunk_size).T              # [m, r]
        Qs.append(B)
        JQs.append(JB)
        Q, JQ = torch.cat(Qs, 1), torch.cat(JQs, 1)
        _, S, Hh = torch.linalg.svd(JQ, full_matrices=False)            # Ritz pairs of J on span(Q)
        V, sigma = Q @ Hh[:k].T, S[:k]
        if V_prev is not None:
            residual = _subspace_residual(V, V_prev)
        V_prev = V
        if (it >= min_iter and residual < tol) or Q.shape[1] >= n:  # converged, or the space is full (exact)
            break
        W = vjp_rows(feature_fn, x, JB.T, chunk_size).T                  # [n, r] = J^T J B
        B = _orthogonalize(W, Q)[:, : n - Q.shape[1]]
    return V.contiguous(), sigma, {"iterations": float(it), "residual": residual}


def explained_variance_ratio(sigma: Tensor, squared: bool = True) -> Tensor:
    """Cumulative explained-variance ratio of the top-``K`` directions (paper §3.2.1, reconstructed).

    ``EVR_k = sum_{i<=k} sigma_i^2 / sum_{i<=K} sigma_i^2`` (``squared=False``: plain ``sigma_i``).

    Args:
        sigma: ``[..., K]`` non-negative singular values.
        squared: Use ``sigma^2`` (the standard meaning of explained variance; the spec's default).

    Returns:
        ``[..., K]`` non-decreasing, last entry 1.

    Raises:
        ValueError: If ``sigma`` is empty, not finite, negative or all zero.
    """
    check_tensor("sigma", sigma, finite=True)
    if sigma.ndim == 0 or sigma.shape[-1] == 0:
        raise ValueError(f"sigma must have at least one singular value on its last axis, got shape "
                         f"{tuple(sigma.shape)}")
    if (sigma < 0).any():
        raise ValueError(f"sigma must be non-negative, got min {float(sigma.min()):g}")
    w = sigma.double() ** 2 if squared else sigma.double()
    total = w.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("sigma must not be all zero")
    return (w.cumsum(-1) / total).to(sigma.dtype)


def elbow_index(evr: Tensor, tol: float = 1e-6) -> int:
    """Elbow of an EVR curve: the paper's Algorithm 1, as reconstructed in the spec (§5.2).

    The point of maximum vertical distance above the chord from ``(1, e_1)`` to ``(K, e_K)``; for a
    concave increasing curve this equals the offline Kneedle knee. With ``K <= 2`` or an (almost)
    linear curve there is no elbow and ``1`` is returned.

    The curve is evaluated in float64, and distances at or below ``tol * max|evr|`` (relative to the curve's
    scale, well above float32 rounding, ``~6e-8`` of it) count as "no elbow": a straight line gives ``1``
    whether it comes in float32 or float64.

    Args:
        evr: ``[K]`` non-decreasing EVR values in ``[0, 1]``.
        tol: Tolerance relative to the curve's scale (``>= 0``).

    Returns:
        ``k*`` in ``1..K``: the number of directions to remove.

    Raises:
        ValueError: If ``evr`` is not a non-empty, finite, non-decreasing 1-D curve in ``[0, 1]``.
    """
    evr = torch.as_tensor(evr, dtype=torch.float64)
    if evr.ndim != 1 or len(evr) == 0:
        raise ValueError(f"evr must be a non-empty 1-D curve, got shape {tuple(evr.shape)}")
    check_tensor("evr", evr, finite=True)
    if (evr.diff() < -1e-6).any() or evr.min() < -1e-6 or evr.max() > 1 + 1e-6:
        got = [round(v, 6) for v in evr.tolist()]
        raise ValueError(f"evr must be non-decreasing with values in [0, 1], got {got}"[:300])
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    K = len(evr)
    if K <= 2:
        return 1
    chord = evr[0] + (evr[-1] - evr[0]) * torch.arange(K, dtype=torch.float64) / (K - 1)
    d = evr - chord
    atol = tol * float(evr.abs().max())
    if d.max() <= atol:
        return 1
    return int(d.argmax()) + 1


def project_out(x: Tensor, V: Tensor) -> Tensor:
    """Remove the components of ``x`` along the columns of ``V``: ``(I - V V^T) x`` (Eq. 2).

    A linear projection onto the orthogonal complement of span(V) through the origin; the norm is not
    rescaled.

    Args:
        x: ``[*D]`` one latent, or ``[B, *D]`` a batch.
        V: ``[n, k]`` orthonormal columns (``n = prod(D)``), or ``[B, n, k]`` one basis per sample.

    Returns:
        The projected latent(s), same shape as ``x``.

    Raises:
        ValueError: If ``x`` or ``V`` is not finite, or their shapes do not match.
    """
    check_tensor("x", x, finite=True)
    check_tensor("V", V, finite=True)
    if V.ndim == 2:
        n = V.shape[0]
        if x.numel() % n or (x.numel() != n and x.reshape(-1, n).shape[0] != x.shape[0]):
            raise ValueError(f"x of shape {tuple(x.shape)} does not flatten to n={n} per sample")
        flat = x.reshape(-1, n)
        out = flat - (flat @ V) @ V.T
        return out.reshape(x.shape)
    if V.ndim == 3:
        B, n, _ = V.shape
        if x.shape[0] != B or x[0].numel() != n:
            raise ValueError(f"x must be [B={B}, *D] with prod(D)={n}, got {tuple(x.shape)}")
        flat = x.reshape(B, n, 1)
        out = flat - V @ (V.transpose(1, 2) @ flat)
        return out.reshape(x.shape)
    raise ValueError(f"V must be [n, k] or [B, n, k], got shape {tuple(V.shape)}")


@dataclass
class ClaridResult:
    """Outputs of :func:`clarid` for a batch of ``B`` samples.

    Attributes:
        x_t_star: ``[B, *D]`` inverted latents ``x_{t*}``.
        clarep: ``[B, *D]`` CLAReps ``(I - V_k* V_k*^T) x_{t*}``.
        canonical: ``[B, *D]`` decoded CLAReps, the Canonical Samples (CFG after projection).
        k_star: ``[B]`` directions removed per sample.
        sigma: ``[B, K]`` top-``K`` singular values.
        evr: ``[B, K]`` EVR curves.
        directions: ``[B, n, K]`` extraneous directions, if kept.
    """

    x_t_star: Tensor
    clarep: Tensor
    canonical: Tensor
    k_star: Tensor
    sigma: Tensor
    evr: Tensor
    directions: Tensor | None = None


def clarid(
    eps_model: EpsModel,
    feature_model: FeatureModel,
    x0: Tensor,
    y: Tensor,
    alpha_bar: Tensor,
    t_star: int,
    K: int,
    k: int | None = None,
    *,
    num_steps: int = 100,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    method: str = "subspace",
    squared_evr: bool = True,
    generator: torch.Generator | int | None = None,
    keep_directions: bool = False,
    progress: bool = True,
    data_range: tuple[float, float] | None = None,
    **direction_kwargs: object,
) -> ClaridResult:
    """Run CLARID on a batch: invert -> directions -> ``k*`` -> project -> decode (paper §3.2, Fig. 2).

    Args:
        eps_model: Noise predictor ``eps_model(x_t, t, y)``.
        feature_model: ``feature_model(x_t, t, y) -> [B, *F]``, the internal feature ``f_{l,t}``.
        x0: ``[B, *D]`` clean samples (VAE latents for latent models), in the model's ``data_range``.
        y: ``[B]`` integer labels of real classes; the CDM is conditioned on them throughout. With a known null
            class (``null_class``, or the ``eps_model``'s ``null_class`` attribute) they must lie in
            ``0..null_class - 1`` (the null class is the last label, as for every CDM of paperlib).
        alpha_bar: ``[T + 1]`` schedule.
        t_star: Inversion time ``t*`` (on the DDIM grid).
        K: Directions considered (the EVR horizon).
        k: Fixed number of directions to remove (``0..K``); ``None`` = adaptive ``k*`` from the elbow.
        num_steps: DDIM steps over ``[0, T]`` for inversion and decoding (the paper: 100).
        guidance_scale: CFG scale used when decoding the CLAReps (applied after projection).
        null_class: Unconditional label, needed for ``guidance_scale != 1``.
        method: ``"subspace"`` or ``"exact"`` (see :func:`extraneous_directions`).
        squared_evr: EVR from ``sigma^2`` (default) or ``sigma``.
        generator: Seed or generator for the subspace iteration's random starts.
        keep_directions: Keep ``V`` in the result (memory: ``B * n * K`` floats).
        progress: Show a tqdm bar over samples.
        data_range: ``(lo, hi)`` of the clean samples; ``None``: the ``eps_model``'s ``data_range`` attribute if
            it has one (:class:`~paperlib.models.ClassConditionalUNet`: ``(-1, 1)``), else unchecked.
        **direction_kwargs: Passed to :func:`extraneous_directions` (``tol``, ``max_iter``, ``chunk_size``...).

    Returns:
        A :class:`ClaridResult`.

    Raises:
        ValueError: If ``x0`` is empty, not floating, not finite or outside ``data_range``; if ``y`` is not
            integer labels of real classes; if ``K``, ``k``, ``method`` or the guidance settings are invalid
            (all checked before any inversion); or on the checks of :func:`paperlib.diffusion.ddim_invert`.
    """
    K = check_int("K", K, 1)
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= K):
        raise ValueError(f"k must be in 0..K = 0..{K} or None (adaptive), got k={k!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if guidance_scale != 1.0 and null_class is None:
        raise ValueError(f"guidance_scale={guidance_scale} != 1 needs a null_class (the model's unconditional label)")
    check_tensor("x0", x0, min_ndim=1, dtype="floating", nonempty=True, finite=True)
    data_range = data_range if data_range is not None else getattr(eps_model, "data_range", None)
    if data_range is not None:
        check_tensor("x0", x0, value_range=tuple(data_range), tol=DATA_RANGE_TOL,
                     range_note="the model's data range; map images with paperlib.data.to_model_range")
    if K > x0[0].numel():
        raise ValueError(f"K must be in 1..n = 1..{x0[0].numel()} (the sample dimension), got K={K}")
    null = null_class if null_class is not None else getattr(eps_model, "null_class", None)
    y = check_labels("y", y, x0.shape[0], num_classes=null, device=x0.device)
    gen = _as_generator(generator)
    x_t = ddim_invert(eps_model, x0, y, alpha_bar, t_star, num_steps=num_steps, data_range=data_range)
    Vs, sigmas, k_stars = [], [], []
    t_vec = torch.tensor([t_star], device=x0.device)
    for i in tqdm(range(x0.shape[0]), desc="extraneous directions", disable=not progress, leave=False):
        yi = y[i : i + 1]

        def feature_fn(z: Tensor, yi: Tensor = yi) -> Tensor:
            return feature_model(z, t_vec.expand(z.shape[0]), yi.expand(z.shape[0]))

        V, sigma = extraneous_directions(feature_fn, x_t[i], K, method, generator=gen, **direction_kwargs)
        evr = explained_variance_ratio(sigma, squared_evr)
        Vs.append(V)
        sigmas.append(sigma)
        k_stars.append(elbow_index(evr) if k is None else k)
    V = torch.stack(Vs)
    sigma = torch.stack(sigmas)
    k_star = torch.tensor(k_stars, dtype=torch.long)
    mask = (torch.arange(K) < k_star[:, None]).to(V.dtype).to(V.device)
    clarep = project_out(x_t, V * mask[:, None, :])
    canonical = ddim_decode(eps_model, clarep, y, alpha_bar, t_star, 0, num_steps, guidance_scale, null_class)
    return ClaridResult(
        x_t_star=x_t,
        clarep=clarep,
        canonical=canonical,
        k_star=k_star,
        sigma=sigma,
        evr=explained_variance_ratio(sigma, squared_evr),
        directions=V if keep_directions else None,
    )


def kstar_spread_verdict(k_star: Tensor, collapse: float = 0.9) -> str:
    """Verdict on App. H.2 / Fig. 24: the elbow ``k*`` does not collapse to one value over images.

    "does not" if every image has the same ``k*``; "partly" if one value covers more than ``collapse`` of
    them; "holds" otherwise.

    Args:
        k_star: ``[N]`` per-image elbows (``N >= 1``).
        collapse: Share of the most common value above which the distribution counts as collapsed.

    Raises:
        ValueError: for an empty ``k_star`` or ``collapse`` outside ``(0, 1]``.
    """
    k = torch.as_tensor(k_star).flatten()
    if len(k) == 0 or not 0 < collapse <= 1:
        raise ValueError(f"need a non-empty k_star and collapse in (0, 1], got {len(k)} values, {collapse}")
    _, counts = torch.unique(k, return_counts=True)
    if len(counts) == 1:
        return "does not"
    return "partly" if counts.max().item() / len(k) > collapse else "holds"


def kstar_growth_verdict(mean_k_star: dict[int, float]) -> str:
    """Verdict on App. H.2: a larger horizon ``K`` gives a larger ``k*``.

    Over the horizons in increasing order, the mean ``k*`` rising at every step: "holds"; higher at the
    largest horizon than at the smallest, but not at every step: "partly"; otherwise "does not".

    Args:
        mean_k_star: ``K -> mean k*`` over the same images (at least two horizons).

    Raises:
        ValueError: with fewer than two horizons.
    """
    if len(mean_k_star) < 2:
        raise ValueError(f"need at least two horizons, got {sorted(mean_k_star)}")
    means = [mean_k_star[K] for K in sorted(mean_k_star)]
    steps = [b - a for a, b in zip(means[:-1], means[1:])]
    if all(s > 0 for s in steps):
        return "holds"
    return "partly" if means[-1] > means[0] else "does not"
