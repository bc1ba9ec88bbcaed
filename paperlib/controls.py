"""Control directions for CLARID's projection, matched to the edit it makes (issue "matched controls").

CLARID removes the latent's component along its top-``k`` extraneous directions ``V_k`` (Eq. 2). Whether the
*choice* of those directions matters can only be told against projections of the same size that differ in
one respect (ours; the paper has no such control):

- ``span``: ``k`` random orthonormal directions inside ``span(V_K)``, the top-``K`` Jacobian subspace. Same
  gain scale as CLARID's; tests whether the order within the top-``K`` span matters.
- ``lowfreq``: ``k`` random orthonormal directions inside the coarse subspace of the lowest 2-D DCT
  frequencies of every channel (``channels * n_freq**2`` dimensions). Tests whether CLARID merely removes
  coarse colour and layout energy, where the top directions of a high-``t*`` Jacobian live.
- ``isotropic``: ``k`` Haar-random orthonormal directions of the whole latent (chapter 5's control).

Every family returns ``[n, k]`` orthonormal columns for :func:`paperlib.clarid.project_out`, drawn from its
own ``torch.Generator`` so a control is reproducible per image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.fft import idctn
from torch import Tensor

from paperlib.validate import check_int, check_tensor

CONTROLS = ("span", "lowfreq", "isotropic")
"""Control families, in the book's order (see the module docstring)."""


def _generator(generator: torch.Generator | int) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))


def random_orthonormal(n: int, k: int, generator: torch.Generator | int) -> Tensor:
    """``k`` Haar-random orthonormal vectors of ``R^n`` (QR of a Gaussian matrix, signs fixed by ``R``'s diagonal).

    The draws are nested: under one seed the first ``j`` vectors for ``k`` are those for ``k = j``, so a
    control's edits at growing ``k`` remove growing sets of directions, as CLARID's ``V_k`` do.

    Args:
        n: Dimension.
        k: Number of vectors, ``1 <= k <= n``.
        generator: Seed or CPU generator.

    Returns:
        ``[n, k]`` float32 with ``Q^T Q = I``.
    """
    check_int("n", n, 1)
    check_int("k", k, 1, n)
    gen = _generator(generator)
    # one draw per vector: torch fills a long tensor in blocks, so one [k, n] draw is not prefix-stable
    g = torch.stack([torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(k)], dim=1)
    q, r = torch.linalg.qr(g)
    return (q * torch.sign(torch.diagonal(r))).float()


def isotropic_directions(n: int, k: int, generator: torch.Generator | int) -> Tensor:
    """The isotropic control: ``k`` uniformly random orthonormal directions of the whole latent.

    Returns:
        ``[n, k]`` float32 orthonormal columns.
    """
    return random_orthonormal(n, k, generator)


def span_directions(V: Tensor, k: int, generator: torch.Generator | int) -> Tensor:
    """``k`` random orthonormal directions inside ``span(V)``: ``V Q`` with ``Q`` Haar-random ``[K, k]``.

    Args:
        V: ``[n, K]`` orthonormal columns (CLARID's top-``K`` extraneous directions).
        k: Number of directions, ``1 <= k <= K``.
        generator: Seed or CPU generator.

    Returns:
        ``[n, k]`` float32 orthonormal columns lying in ``span(V)``.
    """
    check_tensor("V", V, ndim=2, finite=True)
    Q = random_orthonormal(V.shape[1], k, generator)
    return (V.double() @ Q.double()).float()


def lowfreq_basis(channels: int, size: int, n_freq: int = 4) -> Tensor:
    """Orthonormal basis of the coarse subspace: per channel, the 2-D DCT-II atoms of frequencies
    ``(u, v)`` with ``u, v < n_freq`` (block-smooth colour and layout).

    Args:
        channels: Latent channels ``C``.
        size: Spatial side ``H = W``.
        n_freq: Frequencies kept per axis, ``1 <= n_freq <= size`` (``n_freq = 1``: per-channel means).

    Returns:
        ``[C * H * W, C * n_freq**2]`` float32 orthonormal columns, flattened like a ``[C, H, W]`` latent.
    """
    check_int("channels", channels, 1)
    check_int("size", size, 1)
    check_int("n_freq", n_freq, 1, size)
    atoms = []
    for u in range(n_freq):
        for v in range(n_freq):
            coef = np.zeros((size, size))
            coef[u, v] = 1.0
            atoms.append(idctn(coef, norm="ortho"))
    atoms = torch.from_numpy(np.stack(atoms).reshape(len(atoms), -1))  # [F, H*W], orthonormal rows
    n = size * size
    basis = torch.zeros(channels * n, channels * len(atoms), dtype=torch.float64)
    for c in range(channels):
        basis[c * n : (c + 1) * n, c * len(atoms) : (c + 1) * len(atoms)] = atoms.T
    return basis.float()


def lowfreq_directions(basis: Tensor, k: int, generator: torch.Generator | int) -> Tensor:
    """``k`` random orthonormal directions inside a coarse subspace (see :func:`lowfreq_basis`).

    Returns:
        ``[n, k]`` float32 orthonormal columns lying in ``span(basis)``.
    """
    return span_directions(basis, k, generator)


def control_directions(
    family: str, k: int, generator: torch.Generator | int, V: Tensor | None = None,
    shape: tuple[int, ...] | None = None, n_freq: int = 4, basis: Tensor | None = None,
) -> Tensor:
    """One control family by name (see :data:`CONTROLS`).

    Args:
        family: ``"span"`` (needs ``V``), ``"lowfreq"`` (needs ``shape = (C, H, W)`` or a precomputed
            ``basis``) or ``"isotropic"`` (needs ``shape`` or ``V``).
        k: Number of directions.
        generator: Seed or CPU generator.
        V: ``[n, K]`` CLARID's directions.
        shape: ``(C, H, W)`` of one latent.
        n_freq: Coarse frequencies per axis for ``"lowfreq"``.
        basis: Precomputed :func:`lowfreq_basis` (saves rebuilding it per image).

    Returns:
        ``[n, k]`` float32 orthonormal columns.

    Raises:
        ValueError: On an unknown family or a missing argument it needs.
    """
    if family not in CONTROLS:
        raise ValueError(f"family must be one of {CONTROLS}, got {family!r}")
    if family == "span":
        if V is None:
            raise ValueError("family 'span' needs V, CLARID's [n, K] directions")
        return span_directions(V, k, generator)
    if shape is None and (family == "lowfreq" and basis is None or family == "isotropic" and V is None):
        raise ValueError(f"family {family!r} needs the latent's shape (C, H, W)")
    if family == "isotropic":
        return isotropic_directions(V.shape[0] if V is not None else math.prod(shape), k, generator)
    if basis is None:
        C, H, W = shape
        if H != W:
            raise ValueError(f"lowfreq needs a square latent, got shape {shape}")
        basis = lowfreq_basis(C, H, n_freq)
    return lowfreq_directions(basis, k, generator)


def energy_fraction(V: Tensor, basis: Tensor) -> Tensor:
    """Share of each direction's energy inside ``span(basis)``: ``||B^T v_i||^2`` for unit ``v_i``.

    Args:
        V: ``[n, k]`` unit columns (or ``[B, n, k]``).
        basis: ``[n, m]`` orthonormal columns.

    Returns:
        ``[k]`` (or ``[B, k]``) fractions in ``[0, 1]``.
    """
    return (basis.T.double() @ V.double()).square().sum(-2).float()
