import math

import pytest
import torch
import torch.nn.functional as F

from paperlib.clarid import (
    clarid,
    elbow_index,
    explained_variance_ratio,
    extraneous_directions,
    jacobian,
    project_out,
)
from paperlib.toy import NULL_CLASS, toy_alpha_bar


def nonlinear_map(n: int = 24, m: int = 40, seed: int = 0):
    """f(x) = tanh(A x + b) with a decaying spectrum of A (a gap between the top singular values)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64)).Q
    Vt = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q.T
    A = U @ torch.diag(2.0 * 0.7 ** torch.arange(n, dtype=torch.float64)) @ Vt
    b = 0.1 * torch.randn(m, generator=g, dtype=torch.float64)
    x = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return (lambda z: torch.tanh(z @ A.T + b)), x


def sin_largest_angle(V1, V2):
    return torch.linalg.matrix_norm(V1 - V2 @ (V2.T @ V1), ord=2).item()


def test_jacobian_matches_jacrev():
    f, x = nonlinear_map()
    J = jacobian(f, x, chunk_size=7)
    J_ref = torch.func.jacrev(lambda z: f(z[None])[0])(x)
    assert torch.allclose(J, J_ref, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5])
def test_subspace_matches_svd(k):
    f, x = nonlinear_map()
    J = torch.func.jacrev(lambda z: f(z[None])[0])(x)
    _, S, Vh = torch.linalg.svd(J)
    V, sigma, info = extraneous_directions(f, x, k, "subspace", tol=1e-8, generator=0, return_info=True)
    assert torch.allclose(sigma, S[:k], rtol=1e-6)
    assert sin_largest_angle(V, Vh[:k].T) < 1e-6
    assert torch.allclose(V.T @ V, torch.eye(k, dtype=V.dtype), atol=1e-10)
    assert info["iterations"] < 100
    Ve, Se = extraneous_directions(f, x, k, "exact")
    assert torch.allclose(Se, S[:k]) and sin_largest_angle(Ve, Vh[:k].T) < 1e-10


def test_subspace_is_seeded():
    f, x = nonlinear_map(seed=3)
    a = extraneous_directions(f, x, 3, generator=5, tol=1e-2)
    b = extraneous_directions(f, x, 3, generator=torch.Generator().manual_seed(5), tol=1e-2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_image_shaped_input_through_attention():
    """jvp through scaled-dot-product attention on CPU needs the math kernel; the routine sets it."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, 8, generator=g)

    def f(z):  # [B, 3, 4, 4] -> self-attention over the 16 pixels
        tokens = z.flatten(2).transpose(1, 2)  # [B, 16, 3]
        q, k, v = (tokens @ W[i] for i in range(3))
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None]).flatten(1)

    x = torch.randn(3, 4, 4, generator=g)
    V, sigma = extraneous_directions(f, x, 4, "subspace", tol=1e-5, generator=0)
    Ve, Se = extraneous_directions(f, x, 4, "exact")
    assert V.shape == (48, 4)
    assert torch.allclose(sigma, Se, rtol=1e-3)


def test_bad_inputs():
    f, x = nonlinear_map()
    with pytest.raises(ValueError, match="k must be in 1..n"):
        extraneous_directions(f, x, 25)
    with pytest.raises(ValueError, match="k must be in 1..n"):
        extraneous_directions(f, x, 0)
    with pytest.raises(ValueError, match="method"):
        extraneous_directions(f, x, 2, "power")
    with pytest.raises(ValueError, match="non-decreasing"):
        elbow_index(torch.tensor([0.5, 0.4, 1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        explained_variance_ratio(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        project_out(torch.zeros(5), torch.zeros(4, 2))


def test_exact_pads_beyond_rank():
    A = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ A.T)

    x = torch.zeros(6, dtype=torch.float64)
    V, sigma = extraneous_directions(f, x, 5, "exact")
    assert V.shape == (6, 5) and torch.all(sigma[3:] == 0)
    assert torch.allclose(V.T @ V, torch.eye(5, dtype=V.dtype), atol=1e-10)


def test_projection_idempotent_and_orthogonal():
    g = torch.Generator().manual_seed(0)
    V = torch.linalg.qr(torch.randn(12, 3, generator=g)).Q
    x = torch.randn(4, 3, 2, 2, generator=g)
    p = project_out(x, V)
    assert p.shape == x.shape
    assert torch.allclose(p.reshape(4, 12) @ V, torch.zeros(4, 3), atol=1e-6)
    assert torch.allclose(project_out(p, V), p, atol=1e-6)
    # the removed part lies in span(V)
    r = (x - p).reshape(4, 12)
    assert torch.allclose(r @ V @ V.T, r, atol=1e-6)
    # batched bases agree with the per-sample projection
    Vb = torch.stack([torch.linalg.qr(torch.randn(12, 2, generator=g)).Q for _ in range(4)])
    pb = project_out(x, Vb)
    for i in range(4):
        assert torch.allclose(pb[i], project_out(x[i], Vb[i]), atol=1e-6)


def test_evr_monotone_and_normalised():
    sigma = torch.tensor([3.0, 2.0, 2.0, 0.5, 0.0])
    evr = explained_variance_ratio(sigma)
    assert torch.all(evr.diff() >= 0) and evr[-1] == pytest.approx(1.0)
    assert evr[0] == pytest.approx(9 / (9 + 4 + 4 + 0.25))
    assert explained_variance_ratio(sigma, squared=False)[0] == pytest.approx(3 / 7.5)
    batch = explained_variance_ratio(torch.rand(6, 10) + 0.1)
    assert batch.shape == (6, 10) and torch.allclose(batch[:, -1], torch.ones(6))


def test_elbow_on_synthetic_curves():
    K = 20
    k = torch.arange(1, K + 1, dtype=torch.float64)
    kink = torch.where(k <= 4, 0.2 * k, 0.8 + 0.2 * (k - 4) / (K - 4))
    assert elbow_index(kink) == 4
    assert elbow_index(k / K) == 1  # linear: no elbow
    assert elbow_index(torch.tensor([0.6, 1.0])) == 1  # K <= 2
    assert elbow_index(torch.ones(K)) == 1  # flat
    # a smooth concave curve: the same answer as Kneedle
    kneed = pytest.importorskip("kneed")
    for rate in (0.2, 0.4, 0.8):
        curve = (1 - torch.exp(-rate * k)) / (1 - math.exp(-rate * K))
        knee = kneed.KneeLocator(k.tolist(), curve.tolist(), curve="concave", direction="increasing").knee
        assert elbow_index(curve) == knee


def test_clarid_end_to_end_on_toy(toy_model, toy_cfg):
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) * 0.3 + torch.tensor([0.0, 1.0])
    y = torch.ones(16, dtype=torch.long)
    ab = toy_alpha_bar(toy_cfg)
    res = clarid(toy_model, toy_model.features, x, y, ab, 600, K=2, method="exact", keep_directions=True,
                 progress=False)
    assert res.canonical.shape == x.shape and res.k_star.tolist() == [1] * 16
    assert res.sigma.shape == (16, 2) and torch.all(res.sigma[:, 0] >= res.sigma[:, 1])
    v1 = res.directions[:, :, 0]
    assert torch.allclose((res.clarep * v1).sum(1), torch.zeros(16), atol=1e-5)
    # k = 0 removes nothing: decoding gives the plain reconstruction
    res0 = clarid(toy_model, toy_model.features, x, y, ab, 600, K=2, k=0, method="exact", progress=False)
    assert torch.allclose(res0.clarep, res0.x_t_star)
    sub = clarid(toy_model, toy_model.features, x, y, ab, 600, K=2, method="subspace", generator=0,
                 progress=False)
    assert torch.allclose(sub.canonical, res.canonical, atol=1e-3)
    with pytest.raises(ValueError, match="k must be in 0..K"):
        clarid(toy_model, toy_model.features, x, y, ab, 600, K=2, k=3)


def flat_spectrum_map(n: int = 200, seed: int = 0):
    """f(x) = tanh(A x) with slowly decaying singular values (ratio 0.98): hard for subspace iteration."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    Vt = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q.T
    A = U @ torch.diag(0.98 ** torch.arange(n, dtype=torch.float64)) @ Vt
    x = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return (lambda z: torch.tanh(z @ A.T)), x


@pytest.mark.parametrize("k", [1, 5])
def test_krylov_matches_svd(k):
    f, x = nonlinear_map()
    J = torch.func.jacrev(lambda z: f(z[None])[0])(x)
    _, S, Vh = torch.linalg.svd(J)
    V, sigma, info = extraneous_directions(f, x, k, "krylov", tol=1e-8, generator=0, return_info=True)
    assert torch.allclose(sigma, S[:k], rtol=1e-6)
    assert sin_largest_angle(V, Vh[:k].T) < 1e-6
    assert torch.allclose(V.T @ V, torch.eye(k, dtype=V.dtype), atol=1e-10)


def test_krylov_beats_subspace_on_a_flat_spectrum():
    f, x = flat_spectrum_map()
    J = torch.func.jacrev(lambda z: f(z[None])[0])(x)
    _, S, Vh = torch.linalg.svd(J)
    k = 8
    out = {m: extraneous_directions(f, x, k, m, tol=1e-3, max_iter=500, generator=0, return_info=True)
           for m in ("subspace", "krylov")}
    err = {m: (o[1] - S[:k]).abs().max().item() / S[0].item() for m, o in out.items()}
    its = {m: o[2]["iterations"] for m, o in out.items()}
    assert its["krylov"] * 3 <= its["subspace"], its  # the same products per step, far fewer steps
    assert err["krylov"] < 1e-8 < err["subspace"], err  # and, at the same tol, closer to the exact values
    assert sin_largest_angle(out["krylov"][0], Vh[:k].T) < 1e-4


def test_krylov_is_seeded_and_rejects_bad_settings():
    f, x = nonlinear_map(seed=3)
    a = extraneous_directions(f, x, 3, "krylov", generator=5, tol=1e-2)
    b = extraneous_directions(f, x, 3, "krylov", generator=torch.Generator().manual_seed(5), tol=1e-2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="tol > 0"):
        extraneous_directions(f, x, 3, "krylov", tol=0)
    with pytest.raises(ValueError, match="method must be one of"):
        extraneous_directions(f, x, 3, "lanczos")


def test_elbow_rejects_non_finite_curves():
    with pytest.raises(ValueError, match="evr must be finite, got 1 NaN/inf"):
        elbow_index([0.5, float("nan"), 0.9, 1.0])
    with pytest.raises(ValueError, match="sigma must be finite"):
        explained_variance_ratio(torch.tensor([1.0, float("nan")]))


def test_elbow_does_not_depend_on_the_dtype():
    """float32 rounding (~6e-8) must neither create an elbow on a straight line nor move a real one."""
    for lo, K in [(0.1, 10), (0.0, 20), (0.5, 7), (0.9, 50)]:
        line = torch.linspace(lo, 1, K, dtype=torch.float64)
        assert elbow_index(line.float()) == elbow_index(line) == 1, (lo, K)
    k = torch.arange(1, 21, dtype=torch.float64)
    kinks = (torch.where(k <= 4, 0.2 * k, 0.8 + 0.2 * (k - 4) / 16), (1 - torch.exp(-0.4 * k)) / (1 - math.exp(-8)))
    for kink in kinks:
        assert elbow_index(kink.float()) == elbow_index(kink) > 1
    sigma = torch.tensor([5.0, 3.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5], dtype=torch.float64)
    assert elbow_index(explained_variance_ratio(sigma.float())) == elbow_index(explained_variance_ratio(sigma)) == 2


def test_clarid_rejects_bad_inputs_before_inverting(toy_model, toy_cfg):
    from paperlib.models import CDMConfig, ClassConditionalUNet

    torch.manual_seed(0)
    unet = ClassConditionalUNet(CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8),
                                          attention_levels=(1,), norm_num_groups=4, attention_head_dim=8)).eval()
    ab = toy_alpha_bar(toy_cfg)
    images255 = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    y = torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"x0 must lie in \[-1, 1\] \(the model's data range.*got values in \[0, 2"):
        clarid(unet, unet.features, images255, y, ab, 500, K=2, num_steps=10, progress=False)
    x0 = images255 / 127.5 - 1
    with pytest.raises(ValueError, match=r"y must be in 0..2 \(real classes; the null class 3 is not allowed here\)"):
        clarid(unet, unet.features, x0, torch.tensor([0, 3]), ab, 500, K=2, num_steps=10, progress=False)
    with pytest.raises(ValueError, match=r"y must be integer class labels .*\(e.g. 2.7"):
        clarid(unet, unet.features, x0, torch.tensor([2.7, 1.0]), ab, 500, K=2, num_steps=10, progress=False)
    with pytest.raises(ValueError, match=r"x0 must hold at least one sample"):
        clarid(unet, unet.features, x0[:0], y[:0], ab, 500, K=2, num_steps=10, progress=False)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="x0 must be finite"):
        clarid(toy_model, toy_model.features, x.fill_(float("nan")), torch.ones(3, dtype=torch.long), ab, 600, K=2)
    x = torch.zeros(3, 2)
    yt = torch.ones(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"y must be in 0..1 \(real classes; the null class 2"):
        clarid(toy_model, toy_model.features, x, torch.full((3,), 2), ab, 600, K=2, null_class=2)
    with pytest.raises(ValueError, match=r"K must be in 1..n = 1..2"):
        clarid(toy_model, toy_model.features, x, yt, ab, 600, K=3)
    with pytest.raises(ValueError, match="method must be one of"):
        clarid(toy_model, toy_model.features, x, yt, ab, 600, K=2, method="power")
    with pytest.raises(ValueError, match="needs a null_class"):
        clarid(toy_model, toy_model.features, x, yt, ab, 600, K=2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="x must be finite"):
        project_out(torch.tensor([float("nan"), 0.0]), torch.eye(2)[:, :1])
    with pytest.raises(ValueError, match="x must be finite"):
        extraneous_directions(lambda z: z, torch.tensor([float("inf"), 0.0]), 1)


@pytest.mark.parametrize("method", ["exact", "subspace", "krylov"])
def test_clarid_leaves_the_global_rng_alone(toy_model, toy_cfg, method):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1)) * 0.3
    y = torch.ones(4, dtype=torch.long)
    torch.manual_seed(7)
    clarid(toy_model, toy_model.features, x, y, toy_alpha_bar(toy_cfg), 600, K=2, method=method, generator=3,
           guidance_scale=3.0, null_class=NULL_CLASS, progress=False)
    assert torch.equal(torch.random.get_rng_state(), torch.manual_seed(7).get_state())


def test_kstar_verdicts():
    from paperlib.clarid import kstar_growth_verdict, kstar_spread_verdict

    assert kstar_spread_verdict(torch.tensor([2, 3, 3, 5])) == "holds"
    assert kstar_spread_verdict(torch.tensor([3] * 19 + [4])) == "partly"  # the mode covers 95% > 90%
    assert kstar_spread_verdict(torch.tensor([3] * 9 + [4]), collapse=0.95) == "holds"
    assert kstar_spread_verdict(torch.tensor([1, 1, 1])) == "does not"
    with pytest.raises(ValueError, match="non-empty"):
        kstar_spread_verdict(torch.tensor([], dtype=torch.long))
    assert kstar_growth_verdict({20: 11.0, 5: 3.0, 10: 5.5}) == "holds"  # order of the keys does not matter
    assert kstar_growth_verdict({5: 3.0, 10: 5.5, 15: 5.4, 20: 11.0}) == "partly"
    assert kstar_growth_verdict({5: 3.0, 10: 3.0}) == "does not"
    with pytest.raises(ValueError, match="two horizons"):
        kstar_growth_verdict({5: 3.0})
