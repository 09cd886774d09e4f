"""Portrait preparation and video output: decode with limits, detect + align, estimate pose, write videos.

    from otavatar.media import decode_image, detect_face, align_portrait, estimate_pose, write_video
    image = decode_image("portrait.jpg")                  # uint8 [H,W,3], limits checked before decoding
    face = detect_face(image)                            # one face or NoFaceError / MultipleFacesError / ...
    crop = align_portrait(image, face.landmarks5)        # FFHQ square, 512x512
    pose = estimate_pose(crop.landmarks5, 512)           # approximate yaw/pitch -> EG3D camera [25]
    write_video("out.mp4", frames, fps=30)               # .mp4 (H.264) / .gif / .png (contact sheet)

Attributes load on first use: `import otavatar.media` imports numpy only (no Pillow decoders run, no torch, no
onnxruntime; the face detector's ONNX Runtime session is created on the first detection).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "errors": ("MediaError", "ImageDecodeError", "ImageTooLargeError", "UnsupportedFormatError", "NoFaceError",
               "MultipleFacesError", "FaceTooSmallError"),
    "decode": ("decode_image",),
    "face": ("FaceDetection", "DetectorConfig", "detect_faces", "detect_face"),
    "align": ("AlignedPortrait", "align_portrait"),
    "pose": ("PoseEstimate", "estimate_pose", "FACE_TEMPLATE"),
    "video": ("write_video", "contact_sheet", "VIDEO_SUFFIXES"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    if name in _EXPORTS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, *_EXPORTS])
