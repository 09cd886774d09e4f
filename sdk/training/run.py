"""What every training run shares: a run folder with resumable checkpoints, JSONL metrics and preview PNGs.

    run/
      config.json            the run's frozen config (a resumed run must match it)
      checkpoint.safetensors models (our weights format) - written atomically
      extra.safetensors      other tensors of the run (auto-decoder codes, EMA copies, ...)
      optim.pt               optimiser states, loaded back with torch.load(weights_only=True)
      state.json             step, seconds so far
      metrics.jsonl          one JSON object per logged step
      preview/step_XXXXXXX.png
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from otavatar.fileio import atomic_write, atomic_write_text

__all__ = ["RunDir", "image_grid", "resolve_device", "step_streams", "to_uint8"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device a training or evaluation process runs on. "auto" (or None): this process's GPU when torch sees
    one (cuda:LOCAL_RANK under torchrun, so each process takes its own), else the CPU; "cpu"; "cuda" (as auto,
    but refuses a machine without one); "cuda:N". The device is not part of a run's config: a run may be resumed
    on another device."""
    text = "auto" if spec is None else str(spec)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if text == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {text!r}")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r}: torch {torch.__version__} sees no CUDA device (use 'cpu' or 'auto')")
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", index)


def step_streams(key: int, start: int) -> tuple[np.random.Generator, torch.Generator]:
    """(numpy, torch) random streams of a run that begins at step `start`. A fresh run (start 0) gets the streams
    seeded by `key` alone, as before this helper existed, so documented runs draw what they drew. A resumed run gets
    streams keyed by (key, start): seeded by `key` alone it would replay the batches of step 0 onwards. (Not the
    draws an uninterrupted run would have continued with: those would need the streams' states checkpointed.)"""
    seed = key if start == 0 else int(np.random.SeedSequence([key, start]).generate_state(1)[0])
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] in [-1,1] -> uint8 [B,H,W,3] (rounded, as the SDK writes frames)."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return (x + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(rows: list[np.ndarray]) -> np.ndarray:
    """rows of uint8 [N,H,W,3] (images resized to the first row's size by nearest) -> one uint8 image."""
    size = rows[0].shape[1]
    out = []
    for row in rows:
        if row.shape[1] != size:
            idx = (np.arange(size) * row.shape[1] // size)
            row = row[:, idx][:, :, idx]
        out.append(np.concatenate(list(row), axis=1))
    return np.concatenate(out, axis=0)


class RunDir:
    """A training run's folder (module docstring). `resume=True` continues a run; otherwise an existing
    checkpoint is refused, so a finished run is never overwritten by accident. A resumed run must have the same
    config except for RUNTIME_KEYS (steps, minutes, logging cadence), so a finished run can be extended."""

    def __init__(self, path: str | os.PathLike, config: Any, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.config = asdict(config) if is_dataclass(config) else dict(config)
        self.path.mkdir(parents=True, exist_ok=True)
        config_file = self.path / "config.json"
        if (self.path / "state.json").exists():
            if not resume:
                raise FileExistsError(f"{self.path} already holds a run; pass resume=True (--resume) to continue "
                                      "it or choose another folder")
            # a setting added after the run started is absent from its config.json: the run used its default
            saved = _model_keys(_with_defaults(json.loads(config_file.read_text()), _defaults(config)))
            now = _model_keys(_jsonable(self.config))
            if saved != now:
                raise ValueError(f"{self.path}: the run was started with a different config (differs in "
                                 f"{_differences(saved, now)})")
        atomic_write_text(config_file, json.dumps(_jsonable(self.config), indent=2, sort_keys=True))
        self.started = time.perf_counter()

    # -- state ------------------------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return (self.path / "state.json").exists()

    def state(self) -> dict[str, Any]:
        return json.loads((self.path / "state.json").read_text())

    def save(self, *, step: int, seconds: float, models: Mapping[str, Any], extra: Mapping[str, torch.Tensor],
             optimizers: Mapping[str, torch.optim.Optimizer], info: Mapping[str, Any] | None = None) -> None:
        """models: keyword arguments of `otavatar.weights.save_models` (generator=, controller=)."""
        from safetensors.torch import save_file

        from otavatar.weights import save_models

        save_models(self.path / "checkpoint.safetensors", metadata={"step": step, **(info or {})}, **models)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in extra.items()}
        if tensors:
            atomic_write(self.path / "extra.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        atomic_write(self.path / "optim.pt",
                      lambda tmp: torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp))
        # state.json last: a run is resumable only once everything it names is on disk
        atomic_write_text(self.path / "state.json", json.dumps({"step": step, "seconds": seconds}))

    def load(self, optimizers: Mapping[str, torch.optim.Optimizer]):
        """-> (LoadedModels, extra tensors, state dict); optimiser states are loaded in place."""
        from safetensors.torch import load_file

        from otavatar.weights import load_models

        models = load_models(self.path / "checkpoint.safetensors")
        extra_file = self.path / "extra.safetensors"
        extra = load_file(str(extra_file)) if extra_file.exists() else {}
        states = torch.load(self.path / "optim.pt", weights_only=True)
        for name, opt in optimizers.items():
            if name not in states:
                raise ValueError(f"{self.path / 'optim.pt'}: no state for optimiser {name!r}")
            opt.load_state_dict(states[name])
        return models, extra, self.state()

    # -- logging ----------------------------------------------------------------------------------------
    def log(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": step, "time": round(time.perf_counter() - self.started, 3)}
        row.update({k: float(v) for k, v in values.items()})
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def preview(self, step: int, grid: np.ndarray) -> Path:
        from PIL import Image

        folder = self.path / "preview"
        folder.mkdir(exist_ok=True)
        path = folder / f"step_{step:07d}.png"
        Image.fromarray(grid).save(path)
        return path


# Budget and bookkeeping settings a resumed run may change (extend the steps, give it more minutes).
RUNTIME_KEYS = frozenset({"steps", "iterations", "max_minutes", "preview_every", "checkpoint_every", "log_every"})


def _model_keys(config: Any) -> Any:
    """The config without RUNTIME_KEYS, at any depth: what must match for a run to be resumed."""
    if isinstance(config, dict):
        return {k: _model_keys(v) for k, v in config.items() if k not in RUNTIME_KEYS}
    return config


_UNKNOWN = object()


def _defaults(config: Any) -> Any:
    """The JSON config a dataclass (or a dict of them) has when built with no arguments; _UNKNOWN elsewhere."""
    if is_dataclass(config) and not isinstance(config, type):
        try:
            return _jsonable(type(config)())
        except TypeError:          # a dataclass with required fields has no default config
            return _UNKNOWN
    if isinstance(config, dict):
        return {k: _defaults(v) for k, v in config.items()}
    return _UNKNOWN


def _with_defaults(saved: Any, defaults: Any) -> Any:
    """`saved` with the keys it lacks taken from `defaults` (at any depth)."""
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    merged = {k: _with_defaults(v, defaults.get(k)) for k, v in saved.items()}
    merged.update({k: v for k, v in defaults.items() if k not in saved and v is not _UNKNOWN})
    return merged


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: asdict(o) if is_dataclass(o) else str(o)))
