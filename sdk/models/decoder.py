"""OSG decoder: the per-point MLP of the tri-plane renderer (spec 1.6)."""
from __future__ import annotations

from torch import Tensor, nn

from otavatar.kernels.reference.decoder import DecoderWeights, decode_points
from .layers import FullyConnected


class OSGDecoder(nn.Module):
    """features [B,N,C] -> (colors [B,N,F], raw density [B,N,1]); `net.0` FC -> Softplus -> `net.2` FC."""

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 64, lr_mul: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnected(in_features, hidden, lr_mul=lr_mul),
            nn.Softplus(),
            FullyConnected(hidden, 1 + out_features, lr_mul=lr_mul),
        )

    def weights(self) -> DecoderWeights:
        w0, b0 = self.net[0].effective()
        w1, b1 = self.net[2].effective()
        return DecoderWeights(w0=w0, b0=b0, w1=w1, b1=b1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return decode_points(features, self.weights())
