"""Rendering kernels: tri-plane sampling, ray compositing, importance sampling.

Each public function validates its inputs once and dispatches to a backend (see `_dispatch`): the
plain-PyTorch reference in `otavatar.kernels.reference` (the specification; what ONNX export traces) or a
Triton kernel. Importing this package never imports Triton.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._dispatch import BACKENDS, dispatch
from .reference import PLANE_AXES_INDICES, CompositeResult, DecoderWeights, RaySettings, RenderResult

__all__ = ["BACKENDS", "CompositeResult", "DecoderWeights", "PLANE_AXES_INDICES", "RaySettings", "RenderResult",
           "composite_rays", "render_rays", "sample_importance", "triplane_sample"]


def triplane_sample(planes: Tensor, points: Tensor, *, box_warp: float = 1.0, plane_axes: str = "eg3d",
                    backend: str | None = None) -> Tensor:
    """planes [B,3,C,H,W], points [B,N,3] -> features [B,N,C] (bilinear, zero padding, mean over planes)."""
    _expect(planes, "planes", 5)
    _expect(points, "points", 3)
    if planes.shape[1] != 3:
        raise ValueError(f"planes must be [B,3,C,H,W]; got {tuple(planes.shape)} (dim 1 is {planes.shape[1]}, not 3)")
    if points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [B,N,3] with B={planes.shape[0]} as in planes; got {tuple(points.shape)}")
    _same_device(planes=planes, points=points)
    if plane_axes not in PLANE_AXES_INDICES:
        raise ValueError(f"unknown plane_axes {plane_axes!r}; valid: {sorted(PLANE_AXES_INDICES)}")
    if not box_warp > 0:
        raise ValueError(f"box_warp must be > 0, got {box_warp}")
    return dispatch("triplane_sample", planes.device.type, backend, reference.triplane_sample,
                    lambda fn: fn(planes, points, box_warp=box_warp, plane_axes=plane_axes))


def composite_rays(colors: Tensor, densities: Tensor, depths: Tensor, *, density_shift: float = -1.0,
                   white_back: bool = False, backend: str | None = None) -> CompositeResult:
    """colors [B,R,S,C], densities [B,R,S,1], depths [B,R,S,1] (ascending) -> CompositeResult."""
    _expect(colors, "colors", 4)
    _expect(densities, "densities", 4)
    _expect(depths, "depths", 4)
    lead = colors.shape[:3]
    if densities.shape != (*lead, 1) or depths.shape != (*lead, 1):
        raise ValueError(f"densities and depths must be [B,R,S,1] matching colors {tuple(colors.shape)}; "
                         f"got {tuple(densities.shape)} and {tuple(depths.shape)}")
    if lead[2] < 2:
        raise ValueError(f"compositing needs at least 2 samples per ray, got {lead[2]}")
    _same_device(colors=colors, densities=densities, depths=depths)
    return dispatch("composite_rays", colors.device.type, backend, reference.composite_rays,
                    lambda fn: fn(colors, densities, depths, density_shift=density_shift, white_back=white_back))


def sample_importance(depths: Tensor, weights: Tensor, n_importance: int, *, deterministic: bool = True,
                      generator: torch.Generator | None = None) -> Tensor:
    """depths [B,R,S,1], coarse weights [B,R,S-1,1] -> fine depths [B,R,n_importance,1] (no gradient)."""
    _expect(depths, "depths", 4)
    _expect(weights, "weights", 4)
    b, r, s, _ = depths.shape
    if s < 4 or weights.shape != (b, r, s - 1, 1):
        raise ValueError(f"need depths [B,R,S,1] with S >= 4 and weights [B,R,S-1,1]; got {tuple(depths.shape)} "
                         f"and {tuple(weights.shape)}")
    if n_importance < 1:
        raise ValueError(f"n_importance must be >= 1, got {n_importance}")
    return reference.sample_importance(depths, weights, n_importance, deterministic=deterministic,
                                       generator=generator)


def _expect(tensor: Tensor, name: str, ndim: int) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {tensor.dtype}")


def _same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device; got {devices}")


def render_rays(planes: Tensor, decoder: DecoderWeights, origins: Tensor, directions: Tensor,
                settings: RaySettings = RaySettings(), *, stochastic: bool = False,
                generator: torch.Generator | None = None, backend: str | None = None) -> RenderResult:
    """Coarse pass, importance sampling, fine pass and compositing for rays [B,R,3] through planes [B,3,C,H,W].

    Deterministic inference (stochastic=False and no gradient required) dispatches to the fused Triton
    render (two kernels, no [rays x samples x channels] tensor); otherwise the unfused pipeline runs, whose
    tri-plane sampling and compositing dispatch on their own (Triton on CUDA, with backward).
    """
    _expect(planes, "planes", 5)
    _expect(origins, "origins", 3)
    _expect(directions, "directions", 3)
    if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.shape[0] != planes.shape[0]:
        raise ValueError(f"origins and directions must both be [B,R,3] with B={planes.shape[0]}; got "
                         f"{tuple(origins.shape)} and {tuple(directions.shape)}")
    _same_device(planes=planes, origins=origins, directions=directions)
    _check_decoder(decoder, planes.shape[2])

    def unfused(*_: object) -> RenderResult:
        return reference.render_rays(planes, decoder, origins, directions, settings, stochastic=stochastic,
                                     generator=generator, backend=backend)

    tensors = (planes, origins, directions, decoder.w0, decoder.b0, decoder.w1, decoder.b1)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if stochastic or needs_grad:
        return unfused()
    return dispatch("render_rays", planes.device.type, backend, unfused,
                    lambda fn: fn() if fn is unfused else fn(planes, decoder, origins, directions, settings))


def _check_decoder(decoder: DecoderWeights, channels: int) -> None:
    if not isinstance(decoder, DecoderWeights):
        raise TypeError(f"decoder must be a DecoderWeights, got {type(decoder).__name__}")
    w0, b0, w1, b1 = decoder.w0, decoder.b0, decoder.w1, decoder.b1
    hidden = w0.shape[0] if w0.ndim == 2 else -1
    ok = (w0.ndim == 2 and w0.shape[1] == channels and b0.shape == (hidden,) and w1.ndim == 2
          and w1.shape[0] >= 2 and w1.shape[1] == hidden and b1.shape == (w1.shape[0],))
    if not ok:
        raise ValueError(f"decoder must have w0 [hidden,{channels}], b0 [hidden], w1 [1+F,hidden], b1 [1+F] for "
                         f"{channels}-channel planes; got w0 {tuple(w0.shape)}, b0 {tuple(b0.shape)}, "
                         f"w1 {tuple(w1.shape)}, b1 {tuple(b1.shape)}")
