"""`otavatar.Model`: a generator + motion controller pair, with a fingerprint that avatars are tied to.

    model = Model.default()                       # the embedded SynthHeads-trained tiny model
    model = Model.load("otavatar.safetensors")    # e.g. from `otavatar convert`
    model = Model.from_modules(G, C)              # networks you built or trained
    Model.resolve(None | path | (G, C) | model)   # what every `model=` argument accepts

The fingerprint is sha256 over both networks' state dicts (tensors sorted by name; for each: name, dtype,
shape, raw bytes), so two models with the same weights have the same fingerprint wherever they were loaded
from, and an avatar saved with one model refuses to load with another (its identity code only means something
in the latent space of the generator that inverted it).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Model", "fingerprint", "ModelLike"]

ModelLike = Any   # Model | str | os.PathLike | tuple[TriplaneGenerator, MotionController | None] | None


def _update(h: "hashlib._Hash", prefix: str, module: torch.nn.Module | None) -> None:
    if module is None:
        h.update(f"{prefix}:none\n".encode())
        return
    state = module.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{prefix}{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
        # raw bytes of any dtype (bf16 has no numpy twin): view the flat tensor as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def fingerprint(generator: torch.nn.Module, controller: torch.nn.Module | None) -> str:
    """sha256 hex digest over the two networks' state dicts (module docstring)."""
    h = hashlib.sha256()
    _update(h, "generator.", generator)
    _update(h, "controller.", controller)
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Model:
    """A frozen holder of the networks (eval mode) and their fingerprint. Do not change the networks' weights
    after building a Model: the fingerprint is computed once."""

    generator: Any                    # TriplaneGenerator
    controller: Any                   # MotionController, or None (a static identity: no motion offsets)
    fingerprint: str
    source: str = "modules"           # where the weights came from, for messages
    _losses: dict = field(default_factory=dict, repr=False, compare=False)

    # -- constructors -----------------------------------------------------------------------------------------
    @classmethod
    def from_modules(cls, generator, controller=None, *, source: str = "modules") -> "Model":
        from otavatar.models import MotionController, TriplaneGenerator

        if not isinstance(generator, TriplaneGenerator):
            raise TypeError(f"generator must be an otavatar TriplaneGenerator, got {type(generator).__name__}")
        if controller is not None:
            if not isinstance(controller, MotionController):
                raise TypeError(f"controller must be an otavatar MotionController, got {type(controller).__name__}")
            if (controller.config.num_ws, controller.config.w_dim) != (generator.num_ws, generator.config.w_dim):
                raise ValueError(f"the controller drives [{controller.config.num_ws},{controller.config.w_dim}] ws "
                                 f"but the generator takes [{generator.num_ws},{generator.config.w_dim}]: the two "
                                 "networks are from different presets")
            if next(controller.parameters()).device != generator.w_avg.device:
                raise ValueError("the generator and the controller are on different devices")
            controller.eval()
        generator.eval()
        return cls(generator=generator, controller=controller, fingerprint=fingerprint(generator, controller),
                   source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> "Model":
        """A model from an otavatar weights file (WeightsError when it is not one or holds no generator)."""
        from otavatar.weights import WeightsError, load_models

        loaded = load_models(path, device=device)
        if loaded.generator is None:
            raise WeightsError(f"{path}: holds no generator, which an avatar needs")
        return cls.from_modules(loaded.generator, loaded.controller, source=str(path))

    @classmethod
    def default(cls, *, device: str | torch.device = "cpu") -> "Model":
        """The embedded default model (FileNotFoundError naming the file when it has not been trained yet)."""
        from otavatar.weights.default import default_path, load_default

        generator, controller = load_default(device)
        return cls.from_modules(generator, controller, source=f"embedded default ({default_path().name})")

    @classmethod
    def resolve(cls, model: ModelLike = None, *, device: str | torch.device | None = None) -> "Model":
        """What a `model=` argument accepts: None (the embedded default), a Model, a weights file path, or a
        (generator, controller) tuple."""
        if isinstance(model, Model):
            return model
        if model is None:
            return cls.default(device=device or "cpu")
        if isinstance(model, (str, os.PathLike)):
            return cls.load(Path(model), device=device or "cpu")
        if isinstance(model, tuple) and len(model) == 2:
            return cls.from_modules(*model)
        raise TypeError(f"model must be None (the embedded default), an otavatar.Model, a weights file path or a "
                        f"(generator, controller) tuple; got {type(model).__name__}")

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.generator.w_avg.device

    @property
    def resolution(self) -> int:
        """Side of the rendered frames (the super-resolution output)."""
        return int(self.generator.config.img_resolution)

    @property
    def num_ws(self) -> int:
        return int(self.generator.num_ws)

    @property
    def w_dim(self) -> int:
        return int(self.generator.config.w_dim)

    @property
    def window(self) -> int:
        """Frames per controller window (27 in both presets)."""
        return int(self.controller.config.window) if self.controller is not None else 1

    def reconstruction_loss(self, weights=None):
        """The inversion objective for this generator, built once per loss-weights value (building the VGG19
        stand-in takes ~0.5 s; repeated inversions with one Model reuse it)."""
        from otavatar.training.losses import LossWeights
        from otavatar.training.objective import ReconstructionLoss

        weights = weights if weights is not None else LossWeights()
        key = repr(weights)
        if key not in self._losses:
            encoder = None
            if self.source.startswith("embedded default"):
                # the default model was trained on SynthHeads with the shipped SynthHeads identity encoder as the
                # identity term's network; other models get no identity term unless a user builds the loss
                # with ReconstructionLoss.from_files(identity_encoder=<ArcFace weights>)
                from otavatar.training.identity_encoder import load_identity_encoder

                encoder = load_identity_encoder(None)
            self._losses[key] = ReconstructionLoss(self.generator, weights=weights,
                                                   identity_encoder=encoder).to(self.device)
        return self._losses[key]

    def __repr__(self) -> str:
        return (f"Model(resolution={self.resolution}, num_ws={self.num_ws}, "
                f"controller={'yes' if self.controller is not None else 'none'}, source={self.source!r}, "
                f"fingerprint={self.fingerprint[:12]}...)")
