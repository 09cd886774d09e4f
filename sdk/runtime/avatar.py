"""Avatars for the torch-free runtime: the latent of an `otavatar.Avatar` file, read with safetensors' numpy
backend, and the intrinsics correction in numpy (or cupy).

    latent = AvatarLatent.load("me.avatar")          # ws [num_ws,w_dim], intrinsics [18], camera, coeffs
    frames = engine.render_avatar(latent, windows, cameras).frames

numpy + safetensors only: this module must never import torch (tests/runtime checks it in a subprocess).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# the SDK's avatar file format (otavatar.avatar.AVATAR_FORMAT / AVATAR_FORMAT_VERSION; not imported from there
# because that module imports torch -- tests/runtime checks the two agree)
AVATAR_FORMAT = "otavatar-avatar"
AVATAR_FORMAT_VERSION = 1
_TENSORS = ("ws", "intrinsics", "camera", "coeffs")
_K = slice(16, 25)   # the flattened 3x3 intrinsics inside a 25-d EG3D label (16 extrinsics first)


class AvatarFileError(ValueError):
    """A file that is not a readable otavatar avatar, or an avatar that does not fit an Engine's model."""


@dataclass(frozen=True)
class AvatarLatent:
    """What the Engine needs of an Avatar: the identity code and the intrinsics correction (plus the portrait's
    camera and coefficients, and what ties it to the model that inverted it)."""

    ws: NDArray[np.float32] = field(repr=False)          # [num_ws, w_dim]
    intrinsics: NDArray[np.float32] = field(repr=False)  # [18]: 9 scales s, 9 offsets t (apply_intrinsics)
    camera: NDArray[np.float32] = field(repr=False)      # [25] the portrait's EG3D label
    coeffs: NDArray[np.float32] = field(repr=False)      # [70] the portrait's controller coefficients
    model_fingerprint: str | None = None                 # otavatar.Model.fingerprint of the inverting model
    generator_config: dict[str, Any] | None = None       # GeneratorConfig.to_dict() of that model
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, ndim in (("ws", 2), ("intrinsics", 1), ("camera", 1), ("coeffs", 1)):
            a = np.ascontiguousarray(getattr(self, name), dtype=np.float32)
            if a.ndim != ndim:
                raise ValueError(f"AvatarLatent.{name} must have {ndim} dimension(s), got shape {list(a.shape)}")
            if not np.isfinite(a).all():
                raise ValueError(f"AvatarLatent.{name} holds NaN or infinite values")
            object.__setattr__(self, name, a)
        for name, size in (("intrinsics", 18), ("camera", 25), ("coeffs", 70)):
            if getattr(self, name).shape != (size,):
                raise ValueError(f"AvatarLatent.{name} must be [{size}], got {list(getattr(self, name).shape)}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "AvatarLatent":
        """Read an avatar file written by `otavatar.Avatar.save` (no torch: safetensors' numpy backend)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"avatar file not found: {path}")
        try:
            with safe_open(str(path), framework="numpy") as f:
                header = dict(f.metadata() or {})
                if header.get("format") != AVATAR_FORMAT:
                    raise AvatarFileError(f"{path}: not an otavatar avatar file (header format "
                                          f"{header.get('format')!r}, expected {AVATAR_FORMAT!r})")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except AvatarFileError:
            raise
        except Exception as e:  # SafetensorError, OSError, bad header: all mean "not a readable avatar"
            raise AvatarFileError(f"{path}: not a readable avatar file ({type(e).__name__}: {e})") from None
        if header.get("format_version") != str(AVATAR_FORMAT_VERSION):
            raise AvatarFileError(f"{path}: avatar format version {header.get('format_version')!r}, but this "
                                  f"runtime reads version {AVATAR_FORMAT_VERSION}")
        missing = [k for k in _TENSORS if k not in tensors]
        if missing:
            raise AvatarFileError(f"{path}: missing tensors {missing}")
        try:
            config = json.loads(header["generator_config"]) if "generator_config" in header else None
            metadata = json.loads(header.get("metadata", "{}"))
        except ValueError as e:
            raise AvatarFileError(f"{path}: header JSON is not valid ({e})") from None
        try:
            return cls(ws=tensors["ws"], intrinsics=tensors["intrinsics"], camera=tensors["camera"],
                       coeffs=tensors["coeffs"], model_fingerprint=header.get("model_fingerprint"),
                       generator_config=config,
                       metadata={**metadata, "created": header.get("created"), "file": str(path)})
        except ValueError as e:
            raise AvatarFileError(f"{path}: {e}") from None


def apply_intrinsics(cameras: ArrayLike, correction: ArrayLike, xp: Any = np) -> Any:
    """cameras [B,25], correction [18] or [B,18] -> cameras with K' = K * (1 + tanh(s)) + t on label[16:25]
    (s = correction[:9], t = correction[9:]), exactly as otavatar.training.objective.apply_intrinsics, in float32.
    xp: numpy, or cupy for device arrays."""
    cameras = xp.asarray(cameras, dtype=xp.float32)
    correction = xp.asarray(correction, dtype=xp.float32)
    k = cameras[..., _K] * (1 + xp.tanh(correction[..., :9])) + correction[..., 9:]
    return xp.concatenate([cameras[..., :16], k.astype(xp.float32)], axis=-1)
