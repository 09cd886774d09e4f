"""Reading third-party state dicts (VGG19, ArcFace) for the training losses: .pth/.pt or .safetensors, no pickle
execution (torch.load weights_only=True), and one strict key/shape check with messages naming what differs."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """A flat {name: tensor} from `path`; a leading "module." (DataParallel) is stripped from every key."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a {what} state dict (mapping name -> tensor), got {type(state).__name__}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def check_state(expected: Mapping[str, Tensor], state: Mapping[str, Tensor], source: str, what: str) -> None:
    """Raise KeyError on missing/unexpected keys and ValueError on a mis-shaped or non-finite tensor."""
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise KeyError(f"{source}: keys do not match the {what} layout; "
                       f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''} ({len(missing)}), "
                       f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''} ({len(unexpected)})")
    for key, ref in expected.items():
        got = state[key]
        if not isinstance(got, Tensor) or tuple(got.shape) != tuple(ref.shape):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ValueError(f"{source}: {key} has shape {shape}, expected {tuple(ref.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise ValueError(f"{source}: {key} contains non-finite values")
