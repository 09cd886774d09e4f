"""The embedded default model: our own `tiny` generator + motion controller trained on SynthHeads.

    G, C = load_default()            # (TriplaneGenerator, MotionController), eval mode

The file ships inside the package (`otavatar/weights/default/otavatar-tiny.safetensors`, a few MB) so that every
command works on a fresh machine with no download (DESIGN.md section 5). It is written by `otavatar train`; a
source checkout where it has not been trained yet gets a FileNotFoundError naming the file and the command.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from otavatar.models import MotionController, TriplaneGenerator

__all__ = ["DEFAULT_FILENAME", "default_path", "load_default"]

DEFAULT_FILENAME = "otavatar-tiny.safetensors"


def default_path() -> Path:
    """Where the embedded default model lives (whether or not it exists)."""
    return Path(__file__).resolve().parent / "default" / DEFAULT_FILENAME


def load_default(device: "str | torch.device" = "cpu") -> "tuple[TriplaneGenerator, MotionController]":
    """The embedded default (generator, controller) in eval mode, or FileNotFoundError when it is missing."""
    from otavatar.weights.io import load_models
    from otavatar.weights.state import WeightsError

    path = default_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"the embedded default model {path} is missing (a source checkout before training): train it with "
            f"`otavatar train`, or pass a weights file (model=PATH in Python, --weights PATH on the command line)")
    loaded = load_models(path, device=device)
    if loaded.generator is None or loaded.controller is None:
        raise WeightsError(f"{path}: the default model must hold a generator and a controller")
    return loaded.generator, loaded.controller
