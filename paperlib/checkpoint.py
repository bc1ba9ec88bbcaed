"""Resumable training state as flat tensor dicts (what :func:`paperlib.cache.save_artifact` stores).

An optimizer's state becomes ``opt.<param index>.<name>`` tensors plus its JSON-able ``param_groups``;
a module's state is kept under a prefix (``model.``, ``ema.``) and recovered with :func:`strip_prefix`.
Used by the CDM trainer (:mod:`paperlib.train`) and the classifiers (:mod:`paperlib.classifiers`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    """``(tensors, param_groups)``: the optimizer's per-parameter state as ``opt.<i>.<name>`` tensors."""
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": torch.as_tensor(v) for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def unflatten_optimizer(tensors: dict[str, Tensor], groups: list) -> dict:
    """The ``state_dict`` :func:`flatten_optimizer` took apart (other keys of ``tensors`` are ignored)."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": groups}


def strip_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` whose name starts with ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
