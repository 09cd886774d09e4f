"""Our own weights files: one safetensors file holding a generator and/or a motion controller.

Layout (format version 1):

* tensors: each model's `state_dict()` under a prefix, `generator.<official key>` and
  `controller.<official key>` (our state-dict names are the official ones, minus the constant
  `resample_filter` buffers and the controller's repeated shared Linear);
* header metadata (all values are strings, as safetensors requires):
  `format` = "otavatar", `format_version` = "1", `otavatar_version`,
  `generator_config` / `controller_config` = the frozen config as JSON (only for the models present),
  `user_metadata` = the caller's metadata as JSON.

Writes are atomic: the file is written to a temporary name in the destination folder, fsynced, renamed over
the destination with `os.replace` and the folder is fsynced, so a failed or interrupted save never leaves a
truncated file behind and never damages the file that was there before. Loads rebuild the models from the
header configs and load strictly (every key, shape, floating dtype, finiteness), or raise `WeightsError`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from otavatar.config import ControllerConfig, GeneratorConfig
from otavatar.fileio import atomic_write

from .state import WeightsError, _summarise, load_strict

if TYPE_CHECKING:
    from otavatar.models import MotionController, TriplaneGenerator

FORMAT_NAME = "otavatar"
FORMAT_VERSION = 1
PREFIXES = {"generator": "generator.", "controller": "controller."}
_CONFIG_KEYS = {"generator": "generator_config", "controller": "controller_config"}
# safetensors refuses a header larger than 100 MB; ours are a few KB, so this only guards user metadata.
_MAX_USER_METADATA = 1 << 20


@dataclass
class LoadedModels:
    """What `load_models` returns: the models present in the file (eval mode) and the user metadata."""

    generator: "TriplaneGenerator | None"
    controller: "MotionController | None"
    metadata: dict[str, Any] = field(default_factory=dict)


def save_models(path: str | os.PathLike[str], *, generator: "TriplaneGenerator | None" = None,
                controller: "MotionController | None" = None,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `generator` and/or `controller` to one safetensors file at `path`, atomically. Returns the path.

    `metadata` is any JSON-serialisable mapping; `load_models` gives it back unchanged. Non-finite
    parameters are refused before anything is written (such a file could never be loaded again).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if generator is None and controller is None:
        raise WeightsError("save_models needs a generator, a controller or both")
    try:
        user = json.dumps(dict(metadata or {}), sort_keys=True)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"metadata must be JSON-serialisable: {e}") from e
    if len(user) > _MAX_USER_METADATA:
        raise WeightsError(f"metadata is {len(user)} characters of JSON; the limit is {_MAX_USER_METADATA}")

    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "user_metadata": user,
              "otavatar_version": _package_version()}
    tensors: dict[str, torch.Tensor] = {}
    non_finite: list[str] = []
    for name, model in (("generator", generator), ("controller", controller)):
        if model is None:
            continue
        _check_model_type(name, model)
        header[_CONFIG_KEYS[name]] = json.dumps(model.config.to_dict(), sort_keys=True)
        for key, value in model.state_dict().items():
            full = PREFIXES[name] + key
            # clone: safetensors refuses tensors that share storage, and wants contiguous CPU memory
            value = value.detach().to("cpu").contiguous().clone()
            if value.is_floating_point() and not torch.isfinite(value).all():
                non_finite.append(full)
            tensors[full] = value
    if non_finite:
        raise WeightsError(f"refusing to save non-finite values in: {_summarise(non_finite)}")

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw header metadata of an otavatar safetensors file, after checking format and version."""
    path = Path(path)
    _, header = _open(path)
    return header


def load_models(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LoadedModels:
    """Rebuild the models stored in `path` (from the header configs) and load their weights strictly."""
    from otavatar.models import MotionController, TriplaneGenerator

    path = Path(path)
    tensors, header = _open(path)
    builders = {"generator": (GeneratorConfig, TriplaneGenerator), "controller": (ControllerConfig, MotionController)}

    groups: dict[str, dict[str, torch.Tensor]] = {name: {} for name in PREFIXES}
    stray = []
    for key, value in tensors.items():
        for name, prefix in PREFIXES.items():
            if key.startswith(prefix):
                groups[name][key[len(prefix):]] = value
                break
        else:
            stray.append(key)
    if stray:
        raise WeightsError(f"{path}: unexpected keys (neither generator. nor controller.): {_summarise(stray)}")

    models: dict[str, Any] = {}
    for name, (config_cls, model_cls) in builders.items():
        config_key = _CONFIG_KEYS[name]
        if config_key not in header:
            if groups[name]:
                raise WeightsError(f"{path}: holds {len(groups[name])} {name} tensors but no {config_key} in its "
                                   "header, so the architecture is unknown")
            models[name] = None
            continue
        try:
            config = config_cls.from_dict(json.loads(header[config_key]))
        except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise WeightsError(f"{path}: invalid {config_key} in the header: {e}") from e
        model = model_cls(config)
        try:
            load_strict(model, groups[name], what=f"the {name}")
        except WeightsError as e:
            raise WeightsError(f"{path}: {e}") from e
        models[name] = model.to(device).eval()

    try:
        user = json.loads(header.get("user_metadata", "{}"))
    except ValueError as e:
        raise WeightsError(f"{path}: user_metadata in the header is not JSON: {e}") from e
    return LoadedModels(generator=models["generator"], controller=models["controller"], metadata=user)


# -- helpers ------------------------------------------------------------------------------------------------

def _open(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the header of an otavatar safetensors file, checking format and version."""
    from safetensors import safe_open

    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            _check_header(path, header)
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except WeightsError:
        raise
    except Exception as e:  # SafetensorError, OSError, header JSON errors: all mean "not our file"
        raise WeightsError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    return tensors, header


def _check_header(path: Path, header: Mapping[str, str]) -> None:
    if header.get("format") != FORMAT_NAME:
        raise WeightsError(f"{path}: a safetensors file, but not an otavatar weights file (header format "
                           f"{header.get('format')!r}, expected {FORMAT_NAME!r}); convert official checkpoints "
                           "with `otavatar convert`")
    version = header.get("format_version")
    if version != str(FORMAT_VERSION):
        raise WeightsError(f"{path}: format version {version!r}, but this otavatar reads version {FORMAT_VERSION}")


def _check_model_type(name: str, model: Any) -> None:
    from otavatar.models import MotionController, TriplaneGenerator

    want = TriplaneGenerator if name == "generator" else MotionController
    if not isinstance(model, want):
        raise WeightsError(f"{name} must be a {want.__name__}, got {type(model).__name__}")


def _package_version() -> str:
    import otavatar

    return otavatar.__version__

