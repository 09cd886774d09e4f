"""Training losses of OTAvatar's decoupling-by-inverting (spec 3.5), written from the spec.

Images are [B,3,H,W] in [-1,1]; targets may be larger than predictions and are area-resized to the prediction
(the spec computes the low-res terms at the 64^2 render against 512^2 targets; our tiny model renders 32^2 and
super-resolves to 128^2). Every loss returns a scalar tensor; weights live in `LossWeights`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otavatar.training.vgg import LAYER_NAMES, VGG19, vgg19

# ImageNet statistics torchvision's VGG19 was trained with, applied after mapping [-1,1] -> [0,1].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the spec 3.5 table (OTAvatar config/otavatar.yaml trainer.loss_weight)."""

    perceptual: float = 1.0
    style: float = 250.0    # Gram term, inside the perceptual loss, first scale only
    local: float = 10.0     # mouth + eyes L1
    pixel: float = 1.0      # smooth-L1
    identity: float = 1.0   # 1 - cos(ArcFace)
    monotonic: float = 1.0  # density must not fall going into the head
    tv: float = 1.0         # density smoothness (already includes EG3D's 0.25)


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a [B,C,H,W] tensor; got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point; got {x.dtype}")


def _check_pair(pred: Tensor, target: Tensor, channels: int | None = 3) -> None:
    _check_images("pred", pred)
    _check_images("target", target)
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"pred and target must share [B,C]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if channels is not None and pred.shape[1] != channels:
        raise ValueError(f"expected {channels}-channel images; got pred {tuple(pred.shape)}")
    if pred.shape[2] != pred.shape[3]:
        raise ValueError(f"pred must be square [B,C,S,S]; got {tuple(pred.shape)}")


def area_resize(x: Tensor, size: int) -> Tensor:
    """[B,C,H,W] -> [B,C,size,size]: area (adaptive average pool) when shrinking, bilinear when growing."""
    _check_images("x", x)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h >= size and w >= size:
        # Area = mean over each output pixel's footprint: the spec's "area-downsampled" target (512 -> 64 is an
        # exact 8x8 box mean; non-integer ratios average the overlapping input pixels).
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def pixel_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 (beta 1) between pred [B,3,S,S] and target area-resized to S; images in [-1,1]."""
    _check_pair(pred, target, channels=None)
    return F.smooth_l1_loss(pred, area_resize(target, pred.shape[-1]), beta=1.0)


def _imagenet(x: Tensor) -> Tensor:
    """[-1,1] -> ImageNet-normalised, as torchvision's VGG expects."""
    mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1.0) * 0.5 - mean) / std


def gram_matrix(features: Tensor) -> Tensor:
    """features [B,C,H,W] -> Gram [B,C,C] normalised by C*H*W (spec 3.5)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Multi-scale VGG19 L1 feature loss + Gram style term (spec 3.5).

    Sum over scales (each further scale halves both images bilinearly) and layers of the mean L1 between features,
    plus style_weight x L1 between Gram matrices at the first scale only. The spec uses 2 scales for the 64^2
    render and 4 for the 512^2 super-resolved image; our tiny model renders 32^2 and super-resolves to 128^2.
    With vgg=None a fixed-seed random VGG19 is used (a random-feature perceptual loss; see `vgg19`).
    """

    def __init__(self, vgg: VGG19 | None = None, *,
                 layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 num_scales: int = 2, style_weight: float = 250.0) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        if style_weight < 0:
            raise ValueError(f"style_weight must be >= 0, got {style_weight}")
        if isinstance(layers, str) or not layers or any(name not in LAYER_NAMES for name in layers):
            raise ValueError(f"layers must be VGG19 ReLU names from {list(LAYER_NAMES)}; got {layers!r}")
        self.vgg = vgg if vgg is not None else vgg19(None)
        self.vgg.requires_grad_(False)
        self.layers = tuple(layers)
        self.num_scales = int(num_scales)
        self.style_weight = float(style_weight)
        # relu{b}_k sits after b-1 max-pools, so the smallest scale must be at least 2^(b-1) px (16 for relu5_1).
        self._min_last_scale = 2 ** (max(int(name[4]) for name in self.layers) - 1)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # the feature network stays in eval mode (spec: "VGG19 ... eval")
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        size = pred.shape[-1]
        smallest = size // 2 ** (self.num_scales - 1)
        if smallest < self._min_last_scale:
            raise ValueError(f"num_scales={self.num_scales} halves a {size}px prediction to {smallest}px, below the "
                             f"{self._min_last_scale}px that layer {max(self.layers, key=lambda n: n[4])} needs")
        x = _imagenet(pred)
        with torch.no_grad():
            y = _imagenet(area_resize(target, size))
        total = pred.new_zeros(())
        for scale in range(self.num_scales):
            if scale > 0:
                x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=True)
                y = F.interpolate(y, scale_factor=0.5, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=True)
            fx = self.vgg(x, self.layers)
            with torch.no_grad():
                fy = self.vgg(y, self.layers)
            for name in self.layers:
                total = total + F.l1_loss(fx[name], fy[name])
                if scale == 0 and self.style_weight > 0:
                    total = total + self.style_weight * F.l1_loss(gram_matrix(fx[name]), gram_matrix(fy[name]))
        return total
