"""Boundary checks shared by paperlib's public entry points (private helper).

Each check raises ``ValueError`` whose message names the parameter, the value received and what is allowed.
The checks are meant to run once per call of an entry point, never inside a per-step loop; each costs at
most one pass over the tensor (``isfinite``, ``aminmax``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

_KINDS = ("floating", "integer")


def describe(x: Any) -> str:
    """Short description of a value for an error message: ``dtype (shape)`` for tensors."""
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"[:200]


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    dtype: str | torch.dtype | None = None,
    nonempty: bool = False,
    finite: bool = False,
    value_range: tuple[float, float] | None = None,
    tol: float = 0.0,
    range_note: str = "",
) -> Tensor:
    """Check a tensor argument and return it unchanged.

    Args:
        name: Parameter name used in the message.
        x: The value received.
        ndim: Exact number of dimensions required.
        min_ndim: Minimum number of dimensions.
        dtype: ``"floating"``, ``"integer"`` (excluding bool) or an exact ``torch.dtype``.
        nonempty: Require a non-empty batch (``x.shape[0] >= 1``) and at least one element.
        finite: Reject NaN and +-inf.
        value_range: ``(lo, hi)`` the values must lie in, up to ``tol``.
        tol: Slack allowed outside ``value_range``.
        range_note: Appended to the range message (e.g. what the range means).

    Returns:
        ``x``.

    Raises:
        ValueError: If ``x`` is not a tensor or fails a check.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {describe(x)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            ok, allowed = x.dtype == dtype, str(dtype)
        elif dtype == "floating":
            ok, allowed = x.dtype.is_floating_point, "a floating dtype (float16, bfloat16, float32, float64)"
        elif dtype == "integer":
            ok, allowed = _is_integer_dtype(x.dtype), "an integer dtype (e.g. torch.int64)"
        else:
            raise ValueError(f"dtype must be a torch.dtype or one of {_KINDS}, got {dtype!r}")
        if not ok:
            raise ValueError(f"{name} must have {allowed}, got {x.dtype}")
    if nonempty and (x.ndim == 0 or x.shape[0] == 0 or x.numel() == 0):
        raise ValueError(f"{name} must hold at least one sample (batch size >= 1), got shape {tuple(x.shape)}")
    if finite and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s) among {x.numel()}")
    if value_range is not None and x.numel():
        lo, hi = value_range
        mn, mx = (float(v) for v in torch.aminmax(x.detach()))
        if mn < lo - tol or mx > hi + tol:
            note = f" ({range_note})" if range_note else ""
            raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]{note}, got values in [{mn:g}, {mx:g}]")
    return x


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Check an integer argument (a Python/NumPy integer or a 0-d integer tensor; not a bool or a float).

    Args:
        name: Parameter name used in the message.
        value: The value received.
        low: Smallest allowed value.
        high: Largest allowed value.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: If ``value`` is not an integer or lies outside ``[low, high]``.
    """
    if isinstance(value, Tensor) and value.ndim == 0 and _is_integer_dtype(value.dtype):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {describe(value)}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        allowed = f">= {low}" if high is None else f"<= {high}" if low is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {allowed}, got {v}")
    return v


def check_labels(
    name: str,
    y: Any,
    n: int | None = None,
    num_classes: int | None = None,
    allow_null: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Check class labels and return them as an int64 tensor of shape ``[n]`` (a scalar is broadcast).

    Args:
        name: Parameter name used in the message.
        y: Labels: an integer tensor, array-like or scalar.
        n: Batch size the labels must match (``None``: any 1-D length).
        num_classes: Number of real classes; ``None`` skips the range check.
        allow_null: Also accept ``num_classes`` itself, the null class of classifier-free guidance.
        device: Device of the returned tensor.

    Returns:
        ``[n]`` int64 labels.

    Raises:
        ValueError: If the labels are not integers, have the wrong shape or lie outside the allowed range.
    """
    if not isinstance(y, Tensor):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be integer class labels, got {describe(y)}") from err
    if not _is_integer_dtype(y.dtype):
        example = f" (e.g. {y.flatten()[0].item()!r})" if y.numel() else ""
        raise ValueError(f"{name} must be integer class labels (an integer dtype, e.g. torch.int64), "
                         f"got {y.dtype}{example}")
    if y.ndim == 0 and n is not None:
        y = y.expand(n)
    if y.ndim != 1 or (n is not None and len(y) != n):
        want = f"[B] = [{n}]" if n is not None else "[B]"
        raise ValueError(f"{name} must have shape {want} (or be a scalar), got {tuple(y.shape)}")
    if num_classes is not None and y.numel():
        top = num_classes if allow_null else num_classes - 1
        bad = (y < 0) | (y > top)
        if bool(bad.any()):
            got = sorted(set(y[bad].tolist()))[:5]
            if allow_null:
                allowed = f"0..{top} (0..{num_classes - 1} real classes, {num_classes} = the null class)"
            else:
                allowed = f"0..{top} (real classes; the null class {num_classes} is not allowed here)"
            raise ValueError(f"{name} must be in {allowed}, got {got}")
    return y.to(device=device, dtype=torch.long) if device is not None else y.long()


def check_indices(name: str, indices: Any, n: int) -> Tensor:
    """Row indices into a dataset of ``n`` rows: a non-empty 1-D integer tensor (or sequence) in ``0..n - 1``.

    Returns:
        The indices as int64.
    """
    indices = torch.as_tensor(indices)
    check_tensor(name, indices, dtype="integer")
    indices = indices.long()
    if indices.ndim != 1 or len(indices) == 0 or indices.min() < 0 or indices.max() >= n:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of rows in 0..{n - 1}, got {describe(indices)}")
    return indices
