"""CaDistill's losses (paper §4, Eqs. 3–6 and 12; spec §8).

A student ``g_φ`` sees a batch of training images ``x_i`` (labels ``y_i``) and, for each ``i``, a Canonical
Sample ``x̃_i`` drawn at random from the pool of class ``y_i``, with its pre-computed Canonical Feature
``f̃_i`` (frozen CDM, no teacher forward pass during training). With student features ``h_i = g_φ(x_i)``,
``h̃_i = g_φ(x̃_i)`` and ``z = h / ‖h‖``:

- :func:`align_loss` (Eq. 3): SupCon with training images as anchors and the batch's Canonical Samples as
  positives (same class) and negatives (other classes);
- :func:`separation_loss` (Eq. 4, with the Eq. 12 fallback): SupCon among the Canonical Samples; an anchor
  without a same-class partner keeps only the push-away term (where SupCon's reference code returns NaN);
- :func:`cka_loss` (Eq. 5): ``(1 − CKA(H, F)) + (1 − CKA(H̃, F))`` with linear, centred CKA
  (:func:`linear_cka`, the biased HSIC estimator of Kornblith et al. 2019);
- :func:`cadistill_loss` (Eq. 6): cross-entropy on the training images plus the λ-weighted sum.

The paper's τ and λ values are lost; :class:`DistillWeights` holds ours (spec §8.4, §8.6, tagged [O]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DistillWeights",
    "LAMBDA_GRID",
    "align_loss",
    "cadistill_loss",
    "cka_loss",
    "linear_cka",
    "separation_loss",
]


def _o(default, note: str):
    return field(default=default, metadata={"tag": "O", "note": note})


@dataclass(frozen=True)
class DistillWeights:
    """Weights of Eq. 6 and the temperature of Eqs. 3–4 (the paper's values are lost: all ours, [O]).

    Attributes:
        align: λ_align of L_align (Eq. 3).
        sep: λ_sep of L_sep (Eq. 4).
        cka: λ_CKA of L_CKA (Eq. 5).
        tau: SupCon temperature τ (SupContrast's README uses 0.1, its class default 0.07).
    """

    align: float = _o(0.5, "λ_align (spec §8.6 default)")
    sep: float = _o(0.5, "λ_sep (spec §8.6 default)")
    cka: float = _o(1.0, "λ_CKA (spec §8.6 default)")
    tau: float = _o(0.1, "τ (spec §8.4)")

    def __post_init__(self) -> None:
        for name in ("align", "sep", "cka"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"lambda {name} must be a number >= 0, got {v!r}")
        if not isinstance(self.tau, (int, float)) or not self.tau > 0:
            raise ValueError(f"tau must be a number > 0, got {self.tau!r}")

    def to_dict(self) -> dict:
        return asdict(self)


LAMBDA_GRID: dict[str, tuple[float, ...]] = {"align": (0.1, 0.5, 1.0), "sep": (0.1, 0.5, 1.0),
                                              "cka": (0.5, 1.0, 2.0)}
"""The CIFAR-10 grid of spec §8.6 [O] (the paper grid-searched CIFAR-10 but its grid is lost)."""


def _check_features(name: str, x: Tensor, n: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [B, d], got {desc}")
    if x.shape[0] < 1 or (n is not None and x.shape[0] != n):
        raise ValueError(f"{name} must have {n if n is not None else '>= 1'} rows, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")


def _check_labels(labels: Tensor, n: int) -> None:
    bad_dtype = not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool
    if bad_dtype or labels.shape != (n,):
        desc = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor [{n}], got {desc}")


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def align_loss(h: Tensor, h_canon: Tensor, labels: Tensor, tau: float = 0.1) -> Tensor:
    """Eq. 3: pull each training image's feature toward all same-class Canonical Samples of the batch.

    ``L = −(1/B) Σ_i (1/|P(i)|) Σ_{p∈P(i)} log softmax_a(z_i · z̃_a / τ)_p``, ``P(i) = {p : y_p = y_i}``
    (never empty: ``x̃_i`` has label ``y_i``).

    Args:
        h: ``[B, d]`` student features of the training images (L2-normalised here).
        h_canon: ``[B, d]`` student features of the Canonical Samples, row ``i`` of class ``labels[i]``.
        labels: ``[B]`` integer classes.
        tau: Temperature τ.

    Returns:
        Scalar loss.
    """
    _check_features("h", h)
    n = h.shape[0]
    _check_features("h_canon", h_canon, n)
    _check_labels(labels, n)
    _check_tau(tau)
    z, zc = F.normalize(h.float(), dim=1), F.normalize(h_canon.float(), dim=1)
    log_prob = torch.log_softmax(z @ zc.T / tau, dim=1)  # [B anchors, B canonical]
    pos = (labels[:, None] == labels[None, :]).float()
    return -((pos * log_prob).sum(1) / pos.sum(1)).mean()


def separation_loss(h_canon: Tensor, labels: Tensor, tau: float = 0.1) -> Tensor:
    """Eq. 4 with the Eq. 12 fallback: SupCon among the batch's Canonical Samples.

    For anchor ``i`` with positives ``P(i)∖{i}`` (other Canonical Samples of its class) and the
    contrast set ``A(i) = {a ≠ i}``: ``ℓ_i = −mean_{p} log( exp(s_ip) / Σ_{a∈A(i)} exp(s_ia) )`` with
    ``s = z̃ z̃ᵀ / τ``; when ``P(i)∖{i}`` is empty (Eq. 12) ``ℓ_i = log Σ_{a∈A(i)} exp(s_ia)``, the
    push-away term alone. A batch of one sample has no contrast set: its loss is 0.

    Args:
        h_canon: ``[B, d]`` student features of the Canonical Samples.
        labels: ``[B]`` integer classes.
        tau: Temperature τ.

    Returns:
        Scalar loss ``(1/B) Σ_i ℓ_i`` (finite for any labels).
    """
    _check_features("h_canon", h_canon)
    n = h_canon.shape[0]
    _check_labels(labels, n)
    _check_tau(tau)
    if n == 1:
        return h_canon.sum() * 0.0
    zc = F.normalize(h_canon.float(), dim=1)
    eye = torch.eye(n, dtype=torch.bool, device=zc.device)
    s = (zc @ zc.T / tau).masked_fill(eye, float("-inf"))
    log_denom = torch.logsumexp(s, dim=1)  # over a != i
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    pos_logit = torch.where(pos, s, torch.zeros_like(s)).sum(1) / n_pos.clamp(min=1)
    ell = torch.where(n_pos > 0, log_denom - pos_logit, log_denom)
    return ell.mean()


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Linear, centred CKA of two feature matrices with rows aligned (Kornblith et al. 2019).

    ``CKA(X, Y) = ‖Y_cᵀ X_c‖_F² / (‖X_cᵀ X_c‖_F ‖Y_cᵀ Y_c‖_F + eps)``, ``X_c = X − mean_rows(X)``; in
    float32 or wider. Invariant to orthogonal transforms and isotropic scaling of either side; 0 when a
    side is constant (then the numerator is 0 too).

    Args:
        x: ``[B, d_x]``.
        y: ``[B, d_y]``.
        eps: Added to the denominator.

    Returns:
        Scalar in ``[0, 1]``.
    """
    _check_features("x", x)
    _check_features("y", y, x.shape[0])
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    xc = x.to(dtype) - x.to(dtype).mean(0, keepdim=True)
    yc = y.to(dtype) - y.to(dtype).mean(0, keepdim=True)
    # Gram forms (B x B): cheaper than d x d for the wide features of a batch.
    kx, ky = xc @ xc.T, yc @ yc.T
    num = (kx * ky).sum()
    return num / (kx.norm() * ky.norm() + eps)


def cka_loss(h: Tensor, h_canon: Tensor | None, f: Tensor, eps: float = 1e-8) -> Tensor:
    """Eq. 5: ``(1 − CKA(H, F)) + (1 − CKA(H̃, F))``; DMDistill uses the first term alone (``h_canon=None``).

    Args:
        h: ``[B, d_s]`` student features of the training images.
        h_canon: ``[B, d_s]`` student features of the Canonical Samples, or ``None``.
        f: ``[B, d_t]`` teacher features, row ``i`` matched to row ``i`` (no gradient flows into them).
        eps: See :func:`linear_cka`.

    Returns:
        Scalar loss.
    """
    f = f.detach()
    loss = 1 - linear_cka(h, f, eps)
    if h_canon is not None:
        loss = loss + 1 - linear_cka(h_canon, f, eps)
    return loss


def cadistill_loss(
    logits: Tensor,
    labels: Tensor,
    h: Tensor,
    h_canon: Tensor | None,
    f: Tensor | None,
    weights: DistillWeights = DistillWeights(),
) -> dict[str, Tensor]:
    """Eq. 6: ``L = CE(g(x), y) + λ_align L_align + λ_sep L_sep + λ_CKA L_CKA``.

    A term whose λ is 0 or whose inputs are ``None`` is skipped (Vanilla: ``h_canon = f = None``;
    DMDistill: ``h_canon = None`` and ``f`` the CDM features of the training images themselves).

    Args:
        logits: ``[B, C]`` student logits of the training images (CE on training images only).
        labels: ``[B]`` classes.
        h: ``[B, d_s]`` student features of the training images.
        h_canon: ``[B, d_s]`` student features of the drawn Canonical Samples (class ``labels``), or ``None``.
        f: ``[B, d_t]`` teacher features matched to the rows, or ``None``.
        weights: λs and τ.

    Returns:
        ``{"loss", "ce", "align", "sep", "cka"}``: the total and each unweighted term (0 when skipped;
        detach before logging).
    """
    _check_labels(labels, logits.shape[0])
    zero = logits.sum() * 0.0
    terms = {"ce": F.cross_entropy(logits.float(), labels), "align": zero, "sep": zero, "cka": zero}
    if h_canon is not None and weights.align > 0:
        terms["align"] = align_loss(h, h_canon, labels, weights.tau)
    if h_canon is not None and weights.sep > 0:
        terms["sep"] = separation_loss(h_canon, labels, weights.tau)
    if f is not None and weights.cka > 0:
        terms["cka"] = cka_loss(h, h_canon, f)
    total = terms["ce"] + weights.align * terms["align"] + weights.sep * terms["sep"] + weights.cka * terms["cka"]
    return {"loss": total, **terms}
