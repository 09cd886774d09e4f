"""Backend selection for the ops in `otavatar.kernels` (DESIGN.md section 4).

Order: explicit `backend=` argument > `OTAVATAR_KERNEL_BACKEND` (auto|triton|torch) > auto.
Auto picks Triton for CUDA tensors (and on CPU when TRITON_INTERPRET=1 was set before import),
the torch reference otherwise. An automatic pick that fails falls back to torch with one warning;
an explicit pick raises.
"""
from __future__ import annotations

import importlib
import os
import warnings
from typing import Any, Callable

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "OTAVATAR_KERNEL_BACKEND"
_warned: set[str] = set()


def requested_backend(backend: str | None) -> str:
    choice = backend if backend is not None else os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in BACKENDS:
        source = "backend argument" if backend is not None else ENV_VAR
        raise ValueError(f"unknown kernel backend {choice!r} from {source}; valid: {', '.join(BACKENDS)}")
    return choice


def triton_module() -> Any | None:
    """`otavatar.kernels.triton` if Triton and its kernels import, else None."""
    try:
        return importlib.import_module("otavatar.kernels.triton")
    except ImportError:
        return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def dispatch(op: str, device_type: str, backend: str | None, reference: Callable, call: Callable[[Any], Any]):
    """Run `op` on the chosen backend. `call(fn)` invokes an implementation; `reference` is the torch one."""
    choice = requested_backend(backend)
    if choice == "torch":
        return call(reference)
    explicit = choice == "triton"
    wants_triton = explicit or device_type == "cuda" or (device_type == "cpu" and _interpreting())
    if not wants_triton:
        return call(reference)
    module = triton_module()
    impl = getattr(module, op, None) if module is not None else None
    if impl is None:
        if explicit:
            raise RuntimeError(f"kernel backend 'triton' was requested for {op}, but no Triton implementation "
                               f"is available (is the `triton` package installed?)")
        return call(reference)
    if device_type == "cpu" and not _interpreting():
        if explicit:
            raise RuntimeError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before import); "
                               f"{op} got CPU tensors")
        return call(reference)
    try:
        return call(impl)
    except Exception as error:  # noqa: BLE001 - automatic choice: fall back once, loudly
        if explicit:
            raise
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"Triton {op} failed ({error!r}); falling back to the torch reference", RuntimeWarning,
                          stacklevel=3)
        return call(reference)
