"""Strict state-dict loading: every load checks key coverage, shapes and finiteness and fails loudly.

The published code loads everything with strict=False, so a wrong prefix or file silently leaves a
network untrained (OTAvatar issues #6, #10). Here a load either takes every parameter or raises a
`WeightsError` that lists the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

DDP_PREFIX = "module."


class WeightsError(ValueError):
    """A weights file or state dict does not fit the model it is loaded into."""


def as_tensor(value: Any, key: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return torch.from_numpy(np.array(value, copy=True))
    raise WeightsError(f"{key}: expected a tensor or numpy array, got {type(value).__name__}")


def strip_prefix(state: Mapping[str, Any], prefix: str = DDP_PREFIX) -> dict[str, Any]:
    """Remove a DistributedDataParallel `module.` prefix when every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def torch_load_reason(error: BaseException) -> str:
    """The informative part of a `torch.load(weights_only=True)` failure.

    torch wraps the reason (e.g. "unsupported GLOBAL posix.system") in paragraphs that suggest retrying with
    weights_only=False, which is exactly what must not be done with an untrusted checkpoint; keep only the reason.
    """
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    parts = [" ".join(p.split()) for p in str(error).split("\n\n")]
    parts = [p.replace("WeightsUnpickler error:", "").strip() for p in parts if p and not p.startswith(boilerplate)]
    parts = [p for p in parts if p]
    return f"{type(error).__name__}: {'; '.join(parts) if parts else str(error).strip() or 'no details'}"


def _summarise(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_strict(module: nn.Module, state: Mapping[str, Any], *, what: str,
                ignore: Iterable[str] = ()) -> None:
    """Copy `state` into `module`'s persistent parameters and buffers, or raise listing every problem.

    `ignore` names keys that may be present in `state` without a counterpart in the module.
    """
    expected = module.state_dict()
    ignore = set(ignore)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k not in ignore]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    converted: dict[str, torch.Tensor] = {}
    bad_shapes, non_finite = [], []
    for key, target in expected.items():
        if key not in state:
            continue
        value = as_tensor(state[key], key)
        if tuple(value.shape) != tuple(target.shape):
            bad_shapes.append(f"{key} (file {list(value.shape)}, model {list(target.shape)})")
            continue
        if not value.is_floating_point():
            bad_shapes.append(f"{key} (dtype {value.dtype}, expected floating point)")
            continue
        if not torch.isfinite(value).all():
            non_finite.append(key)
        converted[key] = value.to(dtype=target.dtype)
    if bad_shapes:
        problems.append(f"shape mismatches: {_summarise(bad_shapes)}")
    if non_finite:
        problems.append(f"non-finite values in: {_summarise(non_finite)}")
    if problems:
        raise WeightsError(f"cannot load {what}: " + "; ".join(problems))
    module.load_state_dict(converted, strict=True)
