"""Frame encodings of RenderResponse.data: RAW_RGB8, RAW_RGBA8 (alpha 255), JPEG, PNG; optional resize."""
from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray

from ._proto import avatar_pb2 as pb

__all__ = ["encode_frame", "decode_frame", "ENCODINGS"]

ENCODINGS = (pb.RAW_RGB8, pb.RAW_RGBA8, pb.JPEG, pb.PNG)


def _resize(frame: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))


def encode_frame(frame: NDArray[np.uint8], encoding: int, size: int = 0, quality: int = 90) -> tuple[bytes, int, int]:
    """frame uint8 [H,W,3] -> (bytes, width, height). size 0 keeps the frame's size."""
    if size and size != frame.shape[0]:
        frame = _resize(frame, size)
    h, w = frame.shape[:2]
    if encoding in (pb.RAW_RGB8, pb.ENCODING_UNSPECIFIED):
        return np.ascontiguousarray(frame).tobytes(), w, h
    if encoding == pb.RAW_RGBA8:
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[..., :3] = frame
        rgba[..., 3] = 255
        return rgba.tobytes(), w, h
    from PIL import Image

    buf = io.BytesIO()
    if encoding == pb.JPEG:
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    elif encoding == pb.PNG:
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)   # 1: fast; frames are short-lived
    else:
        raise ValueError(f"unknown encoding {encoding}")
    return buf.getvalue(), w, h


def decode_frame(data: bytes, encoding: int, width: int, height: int) -> NDArray[np.uint8]:
    """RenderResponse payload -> uint8 [H,W,3] (RAW_RGBA8: [H,W,4])."""
    if encoding in (pb.RAW_RGB8, pb.ENCODING_UNSPECIFIED):
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    if encoding == pb.RAW_RGBA8:
        return np.frombuffer(data, np.uint8).reshape(height, width, 4)
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
