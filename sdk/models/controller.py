"""OTAvatar's motion controller: a 27-frame window of 3DMM coefficients -> a W+ offset (spec section 2)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otavatar.coeffs import CONTROLLER_EXP
from otavatar.config import ControllerConfig

BASIS_EPS = 1e-8  # added to the direction matrix before the QR, as published


@dataclass
class ControllerOutput:
    descriptor: Tensor  # [B, D]            temporal encoder output, mean over time
    head: Tensor        # [B, (num_ws+1)*K] MLP head output
    alpha: Tensor       # [B, num_ws, K]    per-layer coefficients (row 0 + row l)
    basis: Tensor       # [w_dim, K]        orthonormal directions Q
    motion: Tensor      # [B, num_ws, w_dim]


class TemporalEncoder(nn.Module):
    """Conv1d k7 (no padding), then residual [LeakyReLU, Conv1d k3 dilation 3] blocks, then mean over time.

    Official names: `first.0`, `encoder{i}.1` (index 0 of each Sequential is the activation).
    """

    def __init__(self, in_channels: int, channels: int, layers: int, negative_slope: float):
        super().__init__()
        self.layers = layers
        self.first = nn.Sequential(nn.Conv1d(in_channels, channels, kernel_size=7, bias=True))
        for i in range(layers):
            setattr(self, f"encoder{i}", nn.Sequential(nn.LeakyReLU(negative_slope),
                                                       nn.Conv1d(channels, channels, kernel_size=3, dilation=3)))

    def forward(self, x: Tensor) -> Tensor:  # [B, 70, T] -> [B, D]
        out = self.first(x)
        for i in range(self.layers):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        return out.mean(dim=2)


class Basis(nn.Module):
    """The learned direction matrix (`direction.weight` [w_dim, K])."""

    def __init__(self, w_dim: int, directions: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(w_dim, directions))


class MotionController(nn.Module):
    """x [B,70,27] (coefficients x time) -> motion [B,num_ws,w_dim], added to the identity code.

    Published quirks kept because the weights depend on them: the 'five-layer' MLP is ONE Linear applied
    five times (state dict `mapping_Refine.0`; the official file repeats it as 2, 4, 6, 8), the basis is
    re-orthonormalised by a Householder QR on every call, and the head's row 0 is added to rows 1..num_ws.
    """

    def __init__(self, config: ControllerConfig | None = None):
        super().__init__()
        self.config = config = config or ControllerConfig.official()
        d = config.descriptor_channels
        self.mapping_3DMM = TemporalEncoder(config.coeff_dim, d, config.encoder_layers, config.negative_slope)
        self.mapping_Refine = nn.ModuleDict({
            "0": nn.Linear(d, d),                                                          # shared, applied mlp_layers times
            str(2 * config.mlp_layers): nn.Linear(d, (config.num_ws + 1) * config.directions),
        })
        self.direction = Basis(config.w_dim, config.directions)
        self.reset_parameters()

    @classmethod
    def official(cls) -> "MotionController":
        return cls(ControllerConfig.official())

    @classmethod
    def tiny(cls) -> "MotionController":
        return cls(ControllerConfig.tiny())

    def without_pose(self) -> "MotionController":
        """A copy with the same weights that ignores the 6 pose inputs (ControllerConfig.use_pose=False)."""
        from dataclasses import replace

        copy = type(self)(replace(self.config, use_pose=False)).to(next(self.parameters()).device)
        copy.load_state_dict(self.state_dict())
        return copy.train(self.training)

    def reset_parameters(self) -> None:
        """Training initialisation as published: xavier-normal (gain 0.02) weights, zero biases, N(0,1) basis."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_normal_(module.weight, gain=0.02)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.direction.weight)

    @property
    def _shared(self) -> nn.Linear:
        return self.mapping_Refine["0"]

    @property
    def _out(self) -> nn.Linear:
        return self.mapping_Refine[str(2 * self.config.mlp_layers)]

    def basis(self) -> Tensor:
        """Orthonormal directions Q [w_dim, K]: reduced Householder QR (LAPACK convention, R's diagonal
        not made positive) of direction.weight + 1e-8. Depends on the weights only, so export precomputes it."""
        q, _ = torch.linalg.qr(self.direction.weight + BASIS_EPS, mode="reduced")
        return q

    def forward_details(self, x: Tensor, *, basis: Tensor | None = None) -> ControllerOutput:
        cfg = self.config
        if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != (cfg.coeff_dim, cfg.window):
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"controller input must be [B,{cfg.coeff_dim},{cfg.window}] (coefficients x frames), "
                             f"got {got}")
        slope = cfg.negative_slope
        if not cfg.use_pose:     # the expression channels alone (ControllerConfig.use_pose); traced into export
            x = torch.cat([x[:, CONTROLLER_EXP], torch.zeros_like(x[:, CONTROLLER_EXP.stop:])], dim=1)
        descriptor = self.mapping_3DMM(x)
        g = self._shared(descriptor)
        for _ in range(cfg.mlp_layers - 1):
            g = self._shared(F.leaky_relu(g, slope))
        head = self._out(F.leaky_relu(descriptor + g, slope))                    # [B, (num_ws+1)*K]
        rows = head.reshape(x.shape[0], cfg.num_ws + 1, cfg.directions)
        alpha = rows[:, :1] + rows[:, 1:]                                         # [B, num_ws, K]
        q = self.basis() if basis is None else basis
        motion = torch.matmul(alpha, q.t())                                        # [B, num_ws, w_dim]
        return ControllerOutput(descriptor=descriptor, head=head, alpha=alpha, basis=q, motion=motion)

    def forward(self, x: Tensor, *, basis: Tensor | None = None) -> Tensor:
        """x [B,70,27] -> motion [B,num_ws,w_dim]."""
        return self.forward_details(x, basis=basis).motion

    def neutral_window(self) -> Tensor:
        """The all-zero window [1,70,27]: neutral expression, frontal pose, no translation, in every frame."""
        p = next(self.parameters())
        return torch.zeros(1, self.config.coeff_dim, self.config.window, dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def pin_neutral_(self) -> "MotionController":
        """Shift the head's output bias so that the motion of the neutral window is exactly 0 (in place).

        The head is affine in that bias, so every difference motion(x) - motion(x') is unchanged: only a per-layer
        constant offset goes, which an inversion folds into the identity code (ws = w_id + motion). Training pins
        it (DecoupleConfig.pin_neutral) because that constant is redundant with the identity code and otherwise
        drifts. Keys, shapes and export are unchanged.
        """
        return self.pin_mean_(self.neutral_window())

    @torch.no_grad()
    def pin_mean_(self, windows: Tensor) -> "MotionController":
        """Shift the head's output bias so that the MEAN motion over `windows` [N,70,27] is exactly 0 (in place).

        As pin_neutral_, differences of motions are unchanged; the reference is a sample of training windows
        instead of the all-zero one. Talking frames are rarely neutral, so a controller pinned at the neutral window
        can still carry a large shared offset on every real window (0.24 per element after 100 CPU iterations,
        against codes spread about 0.3 around w_avg: docs/training-rounds.md, round 6); pinned at the mean it cannot.
        (Training with only this pin diverged; with DecoupleConfig.differential_grad it is stable: round 7.)
        """
        head = self.forward_details(windows).head.mean(0)                       # [(num_ws+1)*K]
        self._out.bias.sub_(head)
        return self

    @torch.no_grad()
    def scale_motion_(self, factor: float) -> "MotionController":
        """Multiply every motion by `factor` (in place): alpha, and so the motion, is linear in the head's weight
        and bias. A diagnostic of a trained controller's size (`train evaluate --motion-scale`), not a training
        step."""
        if not math.isfinite(factor):
            raise ValueError(f"factor must be finite, got {factor!r}")
        self._out.weight.mul_(factor)
        self._out.bias.mul_(factor)
        return self

    def load_official_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load an official `net_Warp_ema` state dict strictly (a `module.` prefix is removed).

        The shared Linear's aliases (`mapping_Refine.2/4/6/8`) must equal `mapping_Refine.0`; they are dropped.
        """
        from otavatar.weights.state import WeightsError, as_tensor, load_strict, strip_prefix

        state = strip_prefix(state)
        aliases = [f"mapping_Refine.{2 * i}.{p}" for i in range(1, self.config.mlp_layers) for p in ("weight", "bias")]
        for key in aliases:
            source = "mapping_Refine.0." + key.rsplit(".", 1)[1]
            if key in state and source in state and not torch.equal(as_tensor(state[key], key),
                                                                    as_tensor(state[source], source)):
                raise WeightsError(f"{key} differs from {source}: the controller's MLP is one shared Linear applied "
                                   f"{self.config.mlp_layers} times, so every copy must be identical")
        load_strict(self, state, what="the motion controller (net_Warp_ema)", ignore=[k for k in aliases if k in state])
