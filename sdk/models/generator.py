"""EG3D tri-plane generator as OTAvatar uses it (spec section 1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from otavatar import kernels
from otavatar.config import GeneratorConfig
from otavatar.kernels.reference import RaySettings

from .decoder import OSGDecoder
from .layers import fir_filter
from .mapping import MappingNetwork
from .rays import rays_from_cameras
from .superres import SuperResolution
from .synthesis import Backbone, SynthesisNetwork


@dataclass
class RenderedPlanes:
    """Volume rendering of tri-planes from one camera per item, at the neural rendering resolution r."""

    features: Tensor     # [B, F, r, r]  composited features (2F - 1); channels 0..2 are the raw rgb
    depth: Tensor        # [B, 1, r, r]
    weights_sum: Tensor  # [B, 1, r, r]  opacity

    @property
    def image_raw(self) -> Tensor:  # [B, 3, r, r]
        return self.features[:, :3]


@dataclass
class SynthesisOutput:
    image: Tensor        # [B, 3, R, R] super-resolved, about [-1, 1]
    image_raw: Tensor    # [B, 3, r, r]
    features: Tensor     # [B, F, r, r]
    depth: Tensor        # [B, 1, r, r]
    weights_sum: Tensor  # [B, 1, r, r]
    planes: Tensor       # [B, 3, F, P, P]


class TriplaneGenerator(nn.Module):
    """Mapping + StyleGAN2 backbone -> tri-planes -> volume rendering -> super-resolution.

    State-dict names equal the official `G_ema` names (minus the 26 constant `resample_filter` buffers).
    Rendering is deterministic unless `stochastic=True` (EG3D's training-time jitter and random u).
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config = config or GeneratorConfig.official()
        planes_out = config.num_planes * config.plane_channels
        synthesis = SynthesisNetwork(config.w_dim, config.backbone_resolution, planes_out,
                                     channel_base=config.channel_base, channel_max=config.channel_max,
                                     conv_clamp=config.conv_clamp)
        self.num_ws = synthesis.num_ws
        mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, self.num_ws,
                                 num_layers=config.mapping_layers, lr_mul=config.mapping_lr_mul)
        self.backbone = Backbone(mapping, synthesis)
        self.superresolution = SuperResolution(config.plane_channels, config.img_resolution, config.w_dim,
                                               channels=config.sr_channels, conv_clamp=config.sr_conv_clamp,
                                               antialias=config.sr_antialias)
        self.decoder = OSGDecoder(config.plane_channels, config.plane_channels, hidden=config.decoder_hidden,
                                  lr_mul=config.decoder_lr_mul)
        r = config.render
        self.ray_settings = RaySettings(
            depth_samples=r.depth_samples, importance_samples=r.importance_samples, ray_start=r.ray_start,
            ray_end=r.ray_end, box_warp=r.box_warp, plane_axes=r.plane_axes, density_shift=r.density_shift,
            white_back=r.white_back)

    @classmethod
    def official(cls) -> "TriplaneGenerator":
        """The ffhqrebalanced512-64 architecture OTAvatar uses."""
        return cls(GeneratorConfig.official())

    @classmethod
    def tiny(cls) -> "TriplaneGenerator":
        return cls(GeneratorConfig.tiny())

    @property
    def w_avg(self) -> Tensor:  # [w_dim]
        return self.backbone.mapping.w_avg

    # -- stages -------------------------------------------------------------------------------------------
    def mapping(self, z: Tensor, c: Tensor, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> Tensor:
        """z [B,z_dim], c [B,25] -> ws [B,num_ws,w_dim] (no truncation by default)."""
        _check_shape(z, "z", (None, self.config.z_dim))
        _check_shape(c, "c", (z.shape[0], self.config.c_dim))
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def planes(self, ws: Tensor, *, noise_mode: str = "const", fused_modconv: bool | None = None) -> Tensor:
        """ws [B,num_ws,w_dim] -> planes [B,3,F,P,P] (plane p = backbone channels F*p ... F*p+F-1)."""
        self._check_ws(ws)
        img = self.backbone.synthesis(ws, noise_mode=noise_mode, fused=self._fused(fused_modconv))
        return img.reshape(img.shape[0], self.config.num_planes, self.config.plane_channels, *img.shape[-2:])

    def render_planes(self, planes: Tensor, c: Tensor, *, stochastic: bool = False,
                      generator: torch.Generator | None = None, backend: str | None = None) -> RenderedPlanes:
        """Render planes [B,3,F,P,P] from cameras c [B,25] at the neural rendering resolution."""
        _check_shape(c, "c", (planes.shape[0], self.config.c_dim))
        res = self.config.render.resolution
        origins, directions = rays_from_cameras(c.to(planes.dtype), res)
        out = kernels.render_rays(planes, self.decoder.weights(), origins, directions, self.ray_settings,
                                  stochastic=stochastic, generator=generator, backend=backend)
        batch = planes.shape[0]

        def image(t: Tensor) -> Tensor:  # [B, R, K] -> [B, K, r, r]
            return t.permute(0, 2, 1).reshape(batch, t.shape[-1], res, res).contiguous()

        return RenderedPlanes(features=image(out.features), depth=image(out.depth), weights_sum=image(out.weights_sum))

    def super_resolve(self, image_raw: Tensor, features: Tensor, ws: Tensor, *, fused_modconv: bool | None = None) -> Tensor:
        """64^2 raw rgb + features and ws (only the last w is used) -> [B,3,R,R]."""
        return self.superresolution(image_raw, features, ws, fused=self._fused(fused_modconv))

    def synthesis(self, ws: Tensor, c: Tensor, *, stochastic: bool = False, noise_mode: str = "const",
                  generator: torch.Generator | None = None, fused_modconv: bool | None = None,
                  backend: str | None = None) -> SynthesisOutput:
        """ws [B,num_ws,w_dim], c [B,25] -> SynthesisOutput (deterministic rendering by default)."""
        self._check_ws(ws)
        _check_shape(c, "c", (ws.shape[0], self.config.c_dim))
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        rendered = self.render_planes(planes, c, stochastic=stochastic, generator=generator, backend=backend)
        image = self.super_resolve(rendered.image_raw, rendered.features, ws, fused_modconv=fused_modconv)
        return SynthesisOutput(image=image, image_raw=rendered.image_raw, features=rendered.features,
                               depth=rendered.depth, weights_sum=rendered.weights_sum, planes=planes)

    def forward(self, z: Tensor, c: Tensor, **synthesis_kwargs: Any) -> SynthesisOutput:
        return self.synthesis(self.mapping(z, c), c, **synthesis_kwargs)

    # -- weights ------------------------------------------------------------------------------------------
    def load_official_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load an official EG3D `G_ema` state dict (Tensor or np.ndarray values), strictly.

        The 26 `resample_filter` constants may be absent; when present they must equal the fixed
        [1,3,3,1] filter. Anything else missing, unexpected, mis-shaped or non-finite raises WeightsError.
        """
        from otavatar.weights.state import WeightsError, as_tensor, load_strict, strip_prefix

        state = strip_prefix(state)
        fixed = fir_filter()
        filters = [k for k in state if k.endswith("resample_filter")]
        wrong = [k for k in filters
                 if not (as_tensor(state[k], k).shape == fixed.shape and torch.equal(as_tensor(state[k], k).float(), fixed))]
        if wrong:
            raise WeightsError(f"resample_filter constants differ from the [1,3,3,1] FIR filter: {wrong[:5]}")
        load_strict(self, state, what="the EG3D generator (G_ema)", ignore=filters)

    def _fused(self, fused_modconv: bool | None) -> bool:
        """None = auto, as the published networks: fused (per-sample weights, grouped conv) in eval mode
        -- 1.3x faster on CPU at batch 1 -- and the shared-conv form in training and under ONNX export,
        where grouped convs with a dynamic batch do not export (DESIGN.md section 6)."""
        if fused_modconv is not None:
            return fused_modconv
        exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()
        return not self.training and not exporting

    def _check_ws(self, ws: Tensor) -> None:
        _check_shape(ws, "ws", (None, self.num_ws, self.config.w_dim))


def _check_shape(t: Tensor, name: str, shape: tuple[int | None, ...]) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "[" + ",".join("B" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
