"""CaDistill losses against direct loop computations of Eqs. 3, 4, 12 and 5."""

import math

import pytest
import torch
import torch.nn.functional as F

from paperlib.distill import (
    DistillWeights,
    align_loss,
    cadistill_loss,
    cka_loss,
    linear_cka,
    separation_loss,
)


def _batch(b=12, d=7, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(b, d, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (b,), generator=g))


def _align_ref(h, hc, y, tau):
    z, zc = F.normalize(h, dim=1), F.normalize(hc, dim=1)
    total = 0.0
    for i in range(len(y)):
        denom = sum(math.exp(float(z[i] @ zc[a]) / tau) for a in range(len(y)))
        pos = [p for p in range(len(y)) if y[p] == y[i]]
        total += -sum(math.log(math.exp(float(z[i] @ zc[p]) / tau) / denom) for p in pos) / len(pos)
    return total / len(y)


def _sep_ref(hc, y, tau):
    zc = F.normalize(hc, dim=1)
    b, total = len(y), 0.0
    for i in range(b):
        others = [a for a in range(b) if a != i]
        denom = sum(math.exp(float(zc[i] @ zc[a]) / tau) for a in others)
        pos = [p for p in others if y[p] == y[i]]
        if pos:
            total += -sum(math.log(math.exp(float(zc[i] @ zc[p]) / tau) / denom) for p in pos) / len(pos)
        else:  # Eq. 12
            total += math.log(denom)
    return total / b


def _cka_ref(x, y):
    b = x.shape[0]
    c = torch.eye(b, dtype=torch.float64) - torch.ones(b, b, dtype=torch.float64) / b
    k, l_ = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, bb: torch.trace(a @ c @ bb @ c)  # noqa: E731
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_align_loss_matches_the_loop(tau):
    h, hc, y = _batch()
    assert float(align_loss(h, hc, y, tau)) == pytest.approx(_align_ref(h, hc, y, tau), rel=1e-5)


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_separation_loss_matches_the_loop(tau):
    _, hc, y = _batch()
    assert float(separation_loss(hc, y, tau)) == pytest.approx(_sep_ref(hc, y, tau), rel=1e-5)


def test_separation_loss_uses_eq12_where_supcon_is_nan():
    _, hc, _ = _batch(b=6)
    y = torch.tensor([0, 0, 1, 2, 3, 3])  # classes 1 and 2 have a single Canonical Sample
    loss = separation_loss(hc.float().requires_grad_(), y)
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(_sep_ref(hc, y, 0.1), rel=1e-4)
    loss.backward()
    # SupContrast's reference divides by the positive count: NaN for those anchors.
    zc = F.normalize(hc, dim=1)
    logits = (zc @ zc.T / 0.1).fill_diagonal_(-1e9)
    mask = ((y[:, None] == y[None]) & ~torch.eye(6, dtype=torch.bool)).double()
    supcon = -((mask * torch.log_softmax(logits, 1)).sum(1) / mask.sum(1))
    assert torch.isnan(supcon).any()
    all_single = separation_loss(hc, torch.arange(6))
    assert float(all_single) == pytest.approx(_sep_ref(hc, torch.arange(6), 0.1), rel=1e-6)
    assert float(separation_loss(hc[:1], y[:1])) == 0.0


def test_linear_cka_matches_hsic_and_its_invariances():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 6, generator=g), torch.randn(20, 9, generator=g)
    y = y + x @ torch.randn(6, 9, generator=g)
    assert float(linear_cka(x, y)) == pytest.approx(_cka_ref(x, y), rel=1e-5)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=g))
    assert float(linear_cka(x, 3.7 * y @ q)) == pytest.approx(float(linear_cka(x, y)), rel=1e-5)
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(linear_cka(x + 5.0, y)) == pytest.approx(float(linear_cka(x, y)), rel=1e-4)


def test_cka_is_finite_for_small_batches_and_constant_features():
    x = torch.randn(2, 4, requires_grad=True)
    const = torch.ones(2, 5)
    for a, b in ((x, torch.randn(2, 3)), (x, const)):
        loss = cka_loss(a, None, b)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert float(linear_cka(torch.ones(4, 3), torch.randn(4, 2))) == 0.0


def test_cka_loss_has_both_terms_and_no_teacher_gradient():
    h, hc, _ = _batch()
    h.requires_grad_()
    f = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    both = cka_loss(h, hc, f)
    want = 2 - _cka_ref(h.detach(), f.detach()) - _cka_ref(hc, f.detach())
    assert float(both.detach()) == pytest.approx(want, rel=1e-5)
    both.backward()
    assert f.grad is None


def test_total_loss_is_the_weighted_sum_and_skips_what_is_absent():
    h, hc, y = _batch()
    logits = torch.randn(12, 3, dtype=torch.float64)
    f = torch.randn(12, 5, dtype=torch.float64)
    w = DistillWeights(align=0.3, sep=0.7, cka=2.0, tau=0.2)
    out = cadistill_loss(logits, y, h, hc, f, w)
    want = (F.cross_entropy(logits, y) + 0.3 * align_loss(h, hc, y, 0.2) + 0.7 * separation_loss(hc, y, 0.2)
            + 2.0 * cka_loss(h, hc, f))
    assert float(out["loss"]) == pytest.approx(float(want), rel=1e-6)
    vanilla = cadistill_loss(logits, y, h, None, None, w)
    assert float(vanilla["loss"]) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    dm = cadistill_loss(logits, y, h, None, f, w)
    assert float(dm["cka"]) == pytest.approx(1 - _cka_ref(h, f), rel=1e-5) and float(dm["align"]) == 0.0


def test_bad_input_is_refused():
    h, hc, y = _batch()
    with pytest.raises(ValueError, match="h_canon must have 12 rows"):
        align_loss(h, hc[:5], y)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        separation_loss(hc, y.float())
    with pytest.raises(ValueError, match="tau must be > 0"):
        align_loss(h, hc, y, tau=0.0)
    with pytest.raises(ValueError, match="must be finite"):
        linear_cka(h * float("nan"), hc)
    with pytest.raises(ValueError, match="lambda sep must be"):
        DistillWeights(sep=-1.0)
