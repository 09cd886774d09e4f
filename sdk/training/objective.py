"""The reconstruction objective shared by one-shot inversion and decoupling-by-inverting (spec 3.4, 3.5, 4.2).

`ReconstructionLoss` renders ws from a camera (plus the per-sample intrinsics correction) and compares the
low-res render and, when asked, the super-resolved image with the target: perceptual (+ Gram), 10 x local
(mouth + eyes), smooth-L1 pixel and identity, each term weighted by `LossWeights`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from otavatar.training.losses import (IdentityLoss, LossWeights, PerceptualLoss, area_resize, local_loss,
                                      pixel_loss)

__all__ = ["IntrinsicsCorrection", "ReconstructionLoss", "Reconstruction", "apply_intrinsics", "sr_scales"]

# The K entries of a 25-d label: label[16:25] is the row-major 3x3 intrinsics.
_K = slice(16, 25)


def apply_intrinsics(camera: Tensor, correction: Tensor) -> Tensor:
    """camera [B,25], correction [B,18] or [18] = 9 log-ish scales s and 9 offsets t -> camera with
    K' = K * (1 + tanh(s)) + t, applied to the flattened K as the published inversion does (spec 3.4)."""
    if correction.shape[-1] != 18:
        raise ValueError(f"intrinsics correction must have 18 values, got shape {tuple(correction.shape)}")
    k = camera[..., _K] * (1 + torch.tanh(correction[..., :9])) + correction[..., 9:]
    return torch.cat([camera[..., :16], k], dim=-1)


class IntrinsicsCorrection(nn.Module):
    """The 18-number per-sample intrinsics correction, zero-initialised (K unchanged)."""

    def __init__(self, batch: int = 1) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(batch, 18))   # [B,18]

    def forward(self, camera: Tensor) -> Tensor:
        return apply_intrinsics(camera, self.value)


def sr_scales(resolution: int) -> int:
    """Perceptual scales for a super-resolved image: 4 at 512^2 (spec), fewer when the image is so small that a
    fourth halving would drop below the 16 px relu5_1 needs (3 at 128^2)."""
    scales = 1
    while scales < 4 and resolution // 2 ** scales >= 16:
        scales += 1
    return scales


@dataclass
class Reconstruction:
    loss: Tensor
    terms: dict[str, float] = field(default_factory=dict)
    image_raw: Tensor | None = None     # [B,3,r,r]
    image: Tensor | None = None         # [B,3,R,R] when super-resolved
    planes: Tensor | None = None        # [B,3,C,P,P]


class ReconstructionLoss(nn.Module):
    """Losses of a rendered ws against target images; `vgg`/`identity_encoder` None = the documented stand-ins
    (fixed-seed random VGG19; no identity term unless an encoder is given)."""

    def __init__(self, generator, *, weights: LossWeights = LossWeights(), vgg: nn.Module | None = None,
                 identity_encoder: nn.Module | None = None,
                 layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 sr_perceptual_size: int | None = None) -> None:
        super().__init__()
        from otavatar.training.vgg import vgg19

        cfg = generator.config
        self.weights = weights
        vgg = vgg if vgg is not None else vgg19(None)
        self.low = PerceptualLoss(vgg, layers=layers, num_scales=2, style_weight=weights.style)
        # sr_perceptual_size: area-downsample the super-resolved image before its perceptual term (CPU training:
        # VGG19 costs ~4x more per doubling of the side and dominates a step); None = full size, as published.
        self.sr_perceptual_size = sr_perceptual_size
        sr_size = min(cfg.img_resolution, sr_perceptual_size or cfg.img_resolution)
        self.high = PerceptualLoss(vgg, layers=layers, num_scales=sr_scales(sr_size), style_weight=weights.style)
        self.identity = IdentityLoss(identity_encoder) if identity_encoder is not None else None

    @classmethod
    def from_files(cls, generator, *, vgg_weights: str | os.PathLike | None = None,
                   identity_encoder: str | os.PathLike | None = None, weights: LossWeights = LossWeights(),
                   **kwargs) -> "ReconstructionLoss":
        """identity_encoder: a path to an ArcFace ResNet-18 file, "synthheads" for the shipped SynthHeads encoder,
        or None for no identity term."""
        from otavatar.training.vgg import vgg19

        encoder = None
        if identity_encoder == "synthheads":
            from otavatar.training.identity_encoder import load_identity_encoder

            encoder = load_identity_encoder(None)
        elif identity_encoder is not None:
            from otavatar.training.arcface import arcface_resnet18

            encoder = arcface_resnet18(identity_encoder)
        return cls(generator, weights=weights, vgg=vgg19(vgg_weights), identity_encoder=encoder, **kwargs)

    def terms(self, pred: Tensor, target: Tensor, landmarks: Tensor | None, prefix: str,
              perceptual: PerceptualLoss, weights: LossWeights | None = None) -> dict[str, Tensor]:
        """target [B,3,R,R] in [-1,1] at full size; landmarks [B,68,2] px of the target (None skips local+ID).
        weights: this call's weights instead of self.weights (the Gram weight stays the one built in)."""
        w = self.weights if weights is None else weights
        size = pred.shape[-1]
        shrunk = pred
        if perceptual is self.high and self.sr_perceptual_size and self.sr_perceptual_size < size:
            shrunk = area_resize(pred, self.sr_perceptual_size)
        out = {f"pixel_{prefix}": w.pixel * pixel_loss(pred, target),
               f"percep_{prefix}": w.perceptual * perceptual(shrunk, target)}
        if landmarks is not None:
            lm = landmarks * (size / target.shape[-1])
            small = area_resize(target, size)
            if w.local:
                out[f"local_{prefix}"] = w.local * local_loss(pred, small, lm)
            if self.identity is not None and w.identity:
                out[f"id_{prefix}"] = w.identity * self.identity(pred, small, lm)
        return out

    def forward(self, generator, ws: Tensor, camera: Tensor, target: Tensor, landmarks: Tensor | None = None, *,
                super_resolve: bool = False, low_res: bool = True, planes: Tensor | None = None,
                weights: LossWeights | None = None) -> Reconstruction:
        """ws [B,num_ws,w_dim], camera [B,25] (already corrected), target [B,3,R,R] in [-1,1]; weights: this
        call's LossWeights (default: the module's)."""
        planes = generator.planes(ws) if planes is None else planes
        rendered = generator.render_planes(planes, camera)
        raw = rendered.image_raw
        terms: dict[str, Tensor] = {}
        if low_res:
            terms.update(self.terms(raw, target, landmarks, "lo", self.low, weights))
        image = None
        if super_resolve:
            image = generator.super_resolve(raw, rendered.features, ws)
            terms.update(self.terms(image, target, landmarks, "sr", self.high, weights))
        loss = sum(terms.values()) if terms else raw.new_zeros(())
        return Reconstruction(loss=loss, terms={k: float(v.detach()) for k, v in terms.items()}, image_raw=raw, image=image,
                              planes=planes)
