"""SuperresolutionHybrid8XDC: 64^2 features -> 512^2 image (spec 1.9), generalised to out = 4 x input size."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .synthesis import SynthesisBlock


class SuperResolution(nn.Module):
    """Resize rgb + features to img_resolution/4, then two x2 synthesis blocks driven by the last w only."""

    def __init__(self, in_channels: int, img_resolution: int, w_dim: int, *, channels: tuple[int, int] = (256, 128),
                 conv_clamp: float | None = 256.0, antialias: bool = True):
        super().__init__()
        self.input_resolution = img_resolution // 4
        self.antialias = antialias
        self.block0 = SynthesisBlock(in_channels, channels[0], w_dim, img_resolution // 2, 3, conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(channels[0], channels[1], w_dim, img_resolution, 3, conv_clamp=conv_clamp)

    def _resize(self, x: Tensor) -> Tensor:
        if x.shape[-1] == self.input_resolution:
            return x
        # antialias has no effect when up-sampling beyond rounding (<= 1.2e-7); it stays on to match exactly,
        # and export switches it off (no ONNX form).
        return F.interpolate(x, size=(self.input_resolution, self.input_resolution), mode="bilinear",
                             align_corners=False, antialias=self.antialias)

    def forward(self, rgb: Tensor, features: Tensor, ws: Tensor, *, fused: bool = False) -> Tensor:
        """rgb [B,3,r,r], features [B,C,r,r], ws [B,num_ws,w_dim] -> image [B,3,R,R]."""
        w_last = ws[:, -1:].repeat(1, 3, 1)
        x, img = self.block0(self._resize(features), self._resize(rgb), w_last, noise_mode="none", fused=fused)
        _, img = self.block1(x, img, w_last, noise_mode="none", fused=fused)
        return img
