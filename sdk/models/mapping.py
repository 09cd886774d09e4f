"""Mapping network z, c -> ws (spec 1.3)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import FullyConnected

NORM_EPS = 1e-8


def normalize_2nd_moment(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z [B,z_dim] and camera c [B,c_dim] -> ws [B,num_ws,w_dim].

    z and the embedded camera are each normalised by their 2nd moment and concatenated; then
    `num_layers` leaky-ReLU FC layers with lr multiplier 0.01. Keeps `w_avg` (the inversion start).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, *, num_layers: int = 2,
                 lr_mul: float = 0.01):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.embed = FullyConnected(c_dim, w_dim)
        features = [z_dim + w_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnected(features[idx], features[idx + 1], activation="lrelu",
                                                     lr_mul=lr_mul))
        self.register_buffer("w_avg", torch.zeros(w_dim))                     # [w_dim]

    def forward(self, z: Tensor, c: Tensor, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> Tensor:
        x = torch.cat([normalize_2nd_moment(z.float()), normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)                          # [B, num_ws, w_dim]
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :cutoff], truncation_psi), ws[:, cutoff:]], dim=1)
        return ws
