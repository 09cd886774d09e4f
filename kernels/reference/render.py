"""Ray rendering through tri-planes: coarse pass, importance sampling, fine pass, compositing.

This is the torch reference of the whole per-ray pipeline (spec 1.8, parity README 5.2-5.7); the fused
Triton `render_rays` must reproduce it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .compositing import composite_rays
from .decoder import DecoderWeights, decode_points
from .importance import sample_importance
from .triplane import triplane_sample


@dataclass(frozen=True)
class RaySettings:
    depth_samples: int = 48
    importance_samples: int = 48
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    plane_axes: str = "eg3d"
    density_shift: float = -1.0
    white_back: bool = False


@dataclass
class RenderResult:
    features: Tensor        # [B, R, F]  composited features after 2F - 1
    depth: Tensor           # [B, R, 1]
    weights_sum: Tensor     # [B, R, 1]  opacity
    depths_coarse: Tensor   # [B, R, S, 1]
    weights_coarse: Tensor | None  # [B, R, S-1, 1] (None without importance sampling)
    depths_fine: Tensor | None     # [B, R, S_fine, 1]


def coarse_depths(batch: int, rays: int, settings: RaySettings, *, device, dtype=torch.float32,
                  jitter: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Evenly spaced depths [B,R,S,1] in [ray_start, ray_end]; `jitter` adds EG3D's training-time noise."""
    depths = torch.linspace(settings.ray_start, settings.ray_end, settings.depth_samples, device=device,
                            dtype=dtype).reshape(1, 1, -1, 1).repeat(batch, rays, 1, 1)
    if jitter:
        step = (settings.ray_end - settings.ray_start) / (settings.depth_samples - 1)
        depths = depths + torch.rand(depths.shape, device=device, dtype=dtype, generator=generator) * step
    return depths


def _shade(planes: Tensor, decoder: DecoderWeights, origins: Tensor, directions: Tensor, depths: Tensor,
           settings: RaySettings, backend: str | None) -> tuple[Tensor, Tensor]:
    """Decoder output at origin + depth * direction: colors [B,R,S,F], raw densities [B,R,S,1]."""
    from .. import triplane_sample as sample  # dispatching entry point (Triton on CUDA)

    batch, rays, samples, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(batch, -1, 3)
    features = sample(planes, points, box_warp=settings.box_warp, plane_axes=settings.plane_axes, backend=backend)
    colors, sigma = decode_points(features, decoder)
    return colors.reshape(batch, rays, samples, -1), sigma.reshape(batch, rays, samples, 1)


def render_rays(planes: Tensor, decoder: DecoderWeights, origins: Tensor, directions: Tensor,
                settings: RaySettings = RaySettings(), *, stochastic: bool = False,
                generator: torch.Generator | None = None, backend: str | None = None) -> RenderResult:
    """planes [B,3,C,H,W], origins/directions [B,R,3] -> RenderResult.

    Deterministic by default (no depth jitter, u = linspace(0,1) for importance sampling), which is the
    parity mode; `stochastic=True` is EG3D's training-time sampling.
    """
    from .. import composite_rays as composite  # dispatching entry point

    batch, rays, _ = origins.shape
    depths = coarse_depths(batch, rays, settings, device=origins.device, dtype=origins.dtype,
                           jitter=stochastic, generator=generator)
    colors, sigma = _shade(planes, decoder, origins, directions, depths, settings, backend)
    weights_coarse = depths_fine = None
    if settings.importance_samples > 0:
        coarse = composite(colors, sigma, depths, density_shift=settings.density_shift, backend=backend)
        weights_coarse = coarse.weights
        depths_fine = sample_importance(depths, weights_coarse, settings.importance_samples,
                                        deterministic=not stochastic, generator=generator)
        colors_fine, sigma_fine = _shade(planes, decoder, origins, directions, depths_fine, settings, backend)
        all_depths = torch.cat([depths, depths_fine], dim=-2)
        order = torch.argsort(all_depths, dim=-2)
        all_depths = torch.gather(all_depths, -2, order)
        colors = torch.gather(torch.cat([colors, colors_fine], dim=-2), -2, order.expand(-1, -1, -1, colors.shape[-1]))
        sigma = torch.gather(torch.cat([sigma, sigma_fine], dim=-2), -2, order)
        final = composite(colors, sigma, all_depths, density_shift=settings.density_shift,
                          white_back=settings.white_back, backend=backend)
    else:
        all_depths = depths
        final = composite(colors, sigma, depths, density_shift=settings.density_shift,
                          white_back=settings.white_back, backend=backend)
    return RenderResult(features=final.features, depth=final.depth, weights_sum=final.weights_sum,
                        depths_coarse=depths, weights_coarse=weights_coarse, depths_fine=depths_fine)
