"""otavatar: one portrait photo to a 3D talking-face avatar (OTAvatar / EG3D).

`import otavatar` stays light: it imports no torch, triton, onnxruntime or grpc. Submodules load on
first use (`otavatar.models`, `otavatar.camera`, `otavatar.coeffs`, `otavatar.weights`, ...).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("camera", "coeffs", "config", "kernels", "models", "weights", "export", "synthetic")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'otavatar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
