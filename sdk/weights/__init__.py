"""Weights files: our safetensors format, strict loading, and converters from the official checkpoints.

    from otavatar.weights import save_models, load_models, convert_official, WeightsError
    save_models("avatar.safetensors", generator=G, controller=C, metadata={"note": "..."})
    loaded = load_models("avatar.safetensors")          # LoadedModels(generator, controller, metadata)
    G, C = load_default()                               # the embedded SynthHeads-trained tiny model
    report = convert_official(["ffhqrebalanced512-64.pth", "otavatar.pt"], "otavatar.safetensors")

Names are resolved on first use, so `from otavatar.weights.state import WeightsError` does not import the
models or safetensors.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "WeightsError": "state", "as_tensor": "state", "load_strict": "state", "strip_prefix": "state",
    "FORMAT_VERSION": "io", "LoadedModels": "io", "save_models": "io", "load_models": "io", "read_header": "io",
    "ConversionReport": "convert", "OfficialCheckpoint": "convert", "OfficialModels": "convert",
    "convert_official": "convert", "load_official": "convert", "read_official": "convert",
    "detect_preset": "convert", "sniff_format": "convert",
    "NetworkPickle": "pickle_safe", "read_network_pickle": "pickle_safe", "safe_load_pickle": "pickle_safe",
    "load_default": "default", "default_path": "default",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .default import default_path, load_default
    from .convert import (ConversionReport, OfficialCheckpoint, OfficialModels, convert_official, detect_preset,
                          load_official, read_official, sniff_format)
    from .io import FORMAT_VERSION, LoadedModels, load_models, read_header, save_models
    from .pickle_safe import NetworkPickle, read_network_pickle, safe_load_pickle
    from .state import WeightsError, as_tensor, load_strict, strip_prefix


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
