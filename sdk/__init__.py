"""otavatar: one portrait photo to a 3D talking-face avatar (OTAvatar / EG3D).

    import otavatar
    avatar = otavatar.Avatar.from_portrait("me.jpg")
    avatar.render(otavatar.motion.talk(seconds=4)).save("talk.mp4")

`import otavatar` stays light: it imports no torch, triton, onnxruntime or grpc. Submodules and the SDK classes
load on first use (`otavatar.Avatar` and `otavatar.Model` import torch; `otavatar.motion`, `otavatar.camera`,
`otavatar.coeffs` and `otavatar.media` do not).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = ("camera", "coeffs", "config", "kernels", "models", "weights", "export", "synthetic", "motion",
               "media", "inversion")
# attribute -> the submodule that defines it
_ATTRIBUTES = {"Avatar": "avatar", "RenderResult": "avatar", "AvatarError": "avatar", "Model": "model"}

if TYPE_CHECKING:
    from otavatar.avatar import Avatar, AvatarError, RenderResult  # noqa: F401
    from otavatar.model import Model  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otavatar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES, *_ATTRIBUTES})
