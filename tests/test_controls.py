"""Matched control directions: orthonormal, in the right subspace, reproducible."""

import math

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from paperlib.clarid import project_out
from paperlib.controls import (
    control_directions,
    energy_fraction,
    isotropic_directions,
    lowfreq_basis,
    random_orthonormal,
    span_directions,
)


def _orthonormal(Q, atol=1e-5):
    torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[1]), atol=atol, rtol=0)


def test_random_orthonormal_is_orthonormal_and_seeded():
    Q = random_orthonormal(50, 7, 3)
    _orthonormal(Q)
    assert torch.equal(Q, random_orthonormal(50, 7, 3))
    assert not torch.allclose(Q, random_orthonormal(50, 7, 4))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(Q, random_orthonormal(50, 7, g))
    with pytest.raises(ValueError, match="k"):
        random_orthonormal(5, 6, 0)


def test_control_draws_are_nested_across_k():
    # the k = 3 control removes three of the k = 8 control's directions, in every family
    torch.testing.assert_close(random_orthonormal(50, 8, 3)[:, :3], random_orthonormal(50, 3, 3), atol=1e-6, rtol=0)
    V = random_orthonormal(30, 6, 0)
    torch.testing.assert_close(span_directions(V, 5, 1)[:, :2], span_directions(V, 2, 1), atol=1e-6, rtol=0)
    B = lowfreq_basis(4, 8, 2)
    torch.testing.assert_close(control_directions("lowfreq", 9, 2, basis=B)[:, :4],
                               control_directions("lowfreq", 4, 2, basis=B), atol=1e-6, rtol=0)


def test_isotropic_directions_are_haar_like():
    # E ||P_span(Q) e_1||^2 = k / n for Haar-random subspaces: averaged over seeds.
    n, k = 40, 5
    shares = [isotropic_directions(n, k, s)[0].square().sum().item() for s in range(400)]
    assert abs(np.mean(shares) - k / n) < 0.02


def test_span_directions_lie_in_span():
    V = random_orthonormal(30, 6, 0)
    D = span_directions(V, 4, 1)
    _orthonormal(D)
    torch.testing.assert_close(V @ (V.T @ D), D, atol=1e-5, rtol=0)  # no component outside span(V)
    # k = K spans the whole of span(V): the same projection as V itself.
    full = span_directions(V, 6, 2)
    x = torch.randn(30, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(project_out(x, full), project_out(x, V), atol=1e-5, rtol=0)


def test_lowfreq_basis_is_the_low_dct_subspace():
    C, H, f = 3, 8, 2
    B = lowfreq_basis(C, H, f)
    assert B.shape == (C * H * H, C * f * f)
    _orthonormal(B)
    # A random image projected onto the basis keeps exactly its low DCT coefficients of every channel.
    x = torch.randn(C, H, H, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proj = (B.double() @ (B.double().T @ x.flatten())).reshape(C, H, H).numpy()
    for c in range(C):
        want, got = dctn(x[c].numpy(), norm="ortho"), dctn(proj[c], norm="ortho")
        np.testing.assert_allclose(got[:f, :f], want[:f, :f], atol=1e-6)
        got[:f, :f] = 0
        np.testing.assert_allclose(got, 0, atol=1e-6)
    # n_freq = 1: the per-channel mean.
    B1 = lowfreq_basis(C, H, 1)
    np.testing.assert_allclose(B1[: H * H, 0].numpy(), 1 / H, atol=1e-6)


def test_energy_fraction_and_control_directions():
    B = lowfreq_basis(3, 8, 2)
    D = control_directions("lowfreq", 5, 0, shape=(3, 8, 8), n_freq=2)
    _orthonormal(D)
    torch.testing.assert_close(energy_fraction(D, B), torch.ones(5), atol=1e-5, rtol=0)
    R = control_directions("isotropic", 5, 0, shape=(3, 8, 8))
    frac = energy_fraction(R, B)
    assert frac.shape == (5,) and (frac < 0.5).all()  # 12 of 192 dims: about 1/16 each
    batched = energy_fraction(torch.stack([D, R]), B)
    assert batched.shape == (2, 5) and torch.allclose(batched[1], frac)
    with pytest.raises(ValueError, match="family must be"):
        control_directions("foo", 1, 0, shape=(3, 8, 8))
    with pytest.raises(ValueError, match="needs V"):
        control_directions("span", 1, 0, shape=(3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        control_directions("lowfreq", 1, 0)
    assert math.isclose(control_directions("isotropic", 2, 0, V=torch.eye(192)[:, :3]).shape[0], 192)
