"""The OSG decoder MLP applied to sampled tri-plane features (spec 1.6, parity README 5.4)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# MipNeRF-style widened sigmoid: features live in [-0.001, 1.001].
SIGMOID_PAD = 0.001


@dataclass
class DecoderWeights:
    """Run-time (gain-applied) decoder parameters: h = softplus(x W0^T + b0); o = h W1^T + b1."""

    w0: Tensor  # [hidden, C]
    b0: Tensor  # [hidden]
    w1: Tensor  # [1 + F, hidden]   output 0 is the raw density
    b1: Tensor  # [1 + F]


def decode_points(features: Tensor, weights: DecoderWeights) -> tuple[Tensor, Tensor]:
    """features [B,N,C] -> (colors [B,N,F] in [-0.001, 1.001], raw density [B,N,1])."""
    batch, n_points, channels = features.shape
    x = features.reshape(batch * n_points, channels)
    hidden = F.softplus(torch.addmm(weights.b0.unsqueeze(0), x, weights.w0.t()))
    out = torch.addmm(weights.b1.unsqueeze(0), hidden, weights.w1.t()).reshape(batch, n_points, -1)
    colors = torch.sigmoid(out[..., 1:]) * (1 + 2 * SIGMOID_PAD) - SIGMOID_PAD
    return colors, out[..., 0:1]
