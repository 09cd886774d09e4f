"""The torch-free runtime: `Engine` runs an exported model folder with ONNX Runtime (numpy + onnxruntime only).

    from otavatar.runtime import Engine
    engine = Engine("out/onnx")                  # checks manifest.json and the sha256 of every file
    frames = engine.render(ws, c).frames         # uint8 [B, H, W, 3]
    avatar = AvatarLatent.load("me.avatar")      # an otavatar.Avatar file, read without torch
    clip = engine.render_avatar(avatar, windows, cameras)   # windows [T,70,27], cameras [T,25]

Nothing in this package imports torch; onnxruntime loads when an Engine is created.
"""
from __future__ import annotations

from .avatar import AVATAR_FORMAT, AVATAR_FORMAT_VERSION, AvatarFileError, AvatarLatent, apply_intrinsics
from .engine import PROVIDER_CHOICES, Engine, FrameRequest, RenderOutput, to_uint8_frames
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, ManifestError, read_manifest, sha256_file

__all__ = ["Engine", "RenderOutput", "FrameRequest", "AvatarLatent", "AvatarFileError", "apply_intrinsics",
           "ManifestError", "PROVIDER_CHOICES", "read_manifest", "sha256_file", "to_uint8_frames", "FORMAT",
           "FORMAT_VERSION", "MANIFEST", "AVATAR_FORMAT", "AVATAR_FORMAT_VERSION"]
