"""Shared builders for the SDK tests (tests/test_avatar.py, test_model.py, test_demo.py, test_cli.py).

A seeded random `tiny` model stands in for the embedded default (the tests never need a trained model: they check
plumbing, shapes, determinism and errors), and inversions run 1-4 steps so each file stays well under 30 s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_modules(seed: int = 0):
    """(TriplaneGenerator, MotionController) of the tiny preset, seeded, eval mode."""
    import torch

    from otavatar.models import MotionController, TriplaneGenerator

    torch.manual_seed(seed)                       # module initialisers draw from the global generator
    return TriplaneGenerator.tiny().eval(), MotionController.tiny().eval()


def tiny_weights_file(folder: Path, seed: int = 0) -> Path:
    from otavatar.weights import save_models

    generator, controller = tiny_modules(seed)
    return save_models(Path(folder) / f"tiny{seed}.safetensors", generator=generator, controller=controller)


def fast_config(w_steps: int = 2, wplus_steps: int = 2, sr_steps: int = 1):
    from otavatar.inversion import InversionConfig

    return InversionConfig(w_steps=w_steps, wplus_steps=wplus_steps, sr_steps=sr_steps)


def held_out_portrait(resolution: int = 128, seed: int = 0):
    """A one-frame SynthHeads clip (images [1,R,R,3], coeffs, cameras, landmarks) of a held-out identity."""
    from otavatar.demo import held_out_portrait as portrait

    return portrait(seed, resolution)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares width x height RGB pixels (900 M by default) with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_uint8_frames(frames: np.ndarray, t: int, resolution: int) -> None:
    assert frames.dtype == np.uint8 and frames.shape == (t, resolution, resolution, 3), (frames.dtype, frames.shape)
