"""Device helpers shared by the Triton kernels: tri-plane bilinear taps and PyTorch-exact activations.

Planes are read channel-last, [B, 3, H, W, C]: one bilinear tap of C=32 float32 channels is then one
contiguous 128-byte line instead of 32 scattered 4-byte reads 256*256*4 bytes apart (the [B,3,C,H,W]
layout the backbone produces), which cuts the bytes moved per tap by up to 8x (32-byte sectors).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..reference.triplane import PLANE_AXES_INDICES

# softplus(x) is returned as x above this, as torch.nn.functional.softplus (beta 1, threshold 20) does.
SOFTPLUS_THRESHOLD = 20.0


def next_pow2(n: int, floor: int = 1) -> int:
    return max(floor, triton.next_power_of_2(max(int(n), 1)))


def plane_axes_args(plane_axes: str) -> tuple[int, int, int, int, int, int]:
    """(col, row) coordinate index of planes 0, 1, 2, flattened: 'eg3d' -> (0,1, 0,2, 2,0)."""
    return tuple(i for pair in PLANE_AXES_INDICES[plane_axes] for i in pair)  # type: ignore[return-value]


def channels_last(planes: Tensor) -> Tensor:
    """[B,3,C,H,W] -> contiguous [B,3,H,W,C] (one copy: 25 MB per batch item for 3x32x256x256 float32)."""
    return planes.permute(0, 1, 3, 4, 2).contiguous()


def prepare_points(points: Tensor) -> Tensor:
    return points if points.is_contiguous() else points.contiguous()


@triton.jit
def softplus(x):
    """torch softplus (beta 1, threshold 20) with an accurate log1p: log(u) * y / (u - 1), u = 1 + y.

    log(1 + exp(x)) alone returns 0 for x < -17 where torch returns exp(x) (relative error 1); the
    correction term keeps it within a few ulps for every x (Goldberg's log1p).
    """
    y = tl.exp(tl.minimum(x, 20.0))
    u = 1.0 + y
    lp = tl.where(u == 1.0, y, tl.log(u) * (y / (u - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def softplus_grad(x):
    """d softplus / dx as torch computes it: exp(x) / (exp(x) + 1) below the threshold, 1 above."""
    z = tl.exp(tl.minimum(x, 20.0))
    return tl.where(x > 20.0, 1.0, z / (z + 1.0))


@triton.jit
def load_xyz(ptr, row, mask):
    """Three float32 coordinates of rows `row` [BN] of a contiguous [.., 3] tensor (0 where masked)."""
    x = tl.load(ptr + row * 3 + 0, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(ptr + row * 3 + 1, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(ptr + row * 3 + 2, mask=mask, other=0.0).to(tl.float32)
    return x, y, z


@triton.jit
def pick_axis(px, py, pz, A: tl.constexpr):
    if A == 0:
        return px
    elif A == 1:
        return py
    else:
        return pz


@triton.jit
def bilinear_setup(gcol, grow, Wf, Hf):
    """grid_sample (align_corners=False) source positions and the four corner weights, torch's formulas.

    gcol/grow: [BN] grid coordinates in [-1, 1]. Non-finite coordinates and far-away points are clamped
    to [-2, size+1] first: every corner of a clamped point is outside the plane (zero padding gives 0, as
    it would unclamped), and float->int conversion of inf/NaN/1e30 is undefined on the GPU. Callers turn
    non-finite points into NaN outputs themselves, as the reference produces.
    """
    ix = ((gcol + 1.0) * Wf - 1.0) * 0.5
    iy = ((grow + 1.0) * Hf - 1.0) * 0.5
    ix = tl.where(ix == ix, ix, -2.0)
    iy = tl.where(iy == iy, iy, -2.0)
    ix = tl.minimum(tl.maximum(ix, -2.0), Wf + 1.0)
    iy = tl.minimum(tl.maximum(iy, -2.0), Hf + 1.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    # Same expressions as torch's grid sampler: (x1 - ix) and (ix - x0), not 1 - frac (which rounds
    # differently for ix in (-1, 0)).
    wx1 = ix - x0f
    wx0 = (x0f + 1.0) - ix
    wy1 = iy - y0f
    wy0 = (y0f + 1.0) - iy
    return x0f.to(tl.int32), y0f.to(tl.int32), wx0, wx1, wy0, wy1


@triton.jit
def corner_offsets(x, y, W, H, C, row_ok):
    """Element offset of texel (y, x) in one channel-last plane, and whether it lies inside it."""
    ok = row_ok & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    return (y * W + x) * C, ok


@triton.jit
def bilinear_corners(gcol, grow, W, H, C, Wf, Hf, row_ok):
    """Corner weights and, for nw, ne, sw, se, the element offset and in-plane mask of each texel."""
    x0, y0, wx0, wx1, wy0, wy1 = bilinear_setup(gcol, grow, Wf, Hf)
    o00, k00 = corner_offsets(x0, y0, W, H, C, row_ok)
    o01, k01 = corner_offsets(x0 + 1, y0, W, H, C, row_ok)
    o10, k10 = corner_offsets(x0, y0 + 1, W, H, C, row_ok)
    o11, k11 = corner_offsets(x0 + 1, y0 + 1, W, H, C, row_ok)
    return wx0, wx1, wy0, wy1, o00, k00, o01, k01, o10, k10, o11, k11


@triton.jit
def load_corners(plane_ptr, o00, k00, o01, k01, o10, k10, o11, k11, offs_c, mask_c):
    """The four corner texels [BN, BC] of one channel-last plane as float32 (0 outside the plane)."""
    c = offs_c[None, :]
    mc = mask_c[None, :]
    v00 = tl.load(plane_ptr + o00[:, None] + c, mask=k00[:, None] & mc, other=0.0).to(tl.float32)
    v01 = tl.load(plane_ptr + o01[:, None] + c, mask=k01[:, None] & mc, other=0.0).to(tl.float32)
    v10 = tl.load(plane_ptr + o10[:, None] + c, mask=k10[:, None] & mc, other=0.0).to(tl.float32)
    v11 = tl.load(plane_ptr + o11[:, None] + c, mask=k11[:, None] & mc, other=0.0).to(tl.float32)
    return v00, v01, v10, v11


@triton.jit
def sample_plane(plane_ptr, gcol, grow, W, H, C, Wf, Hf, offs_c, mask_c, row_ok):
    """Bilinear, zero-padded tap of one channel-last plane -> [BN, BC] float32."""
    wx0, wx1, wy0, wy1, o00, k00, o01, k01, o10, k10, o11, k11 = bilinear_corners(gcol, grow, W, H, C, Wf, Hf,
                                                                                  row_ok)
    v00, v01, v10, v11 = load_corners(plane_ptr, o00, k00, o01, k01, o10, k10, o11, k11, offs_c, mask_c)
    # torch's order: nw, ne, sw, se.
    out = v00 * (wx0 * wy0)[:, None]
    out += v01 * (wx1 * wy0)[:, None]
    out += v10 * (wx0 * wy1)[:, None]
    out += v11 * (wx1 * wy1)[:, None]
    return out


@triton.jit
def sample_triplane(planes_b_ptr, px, py, pz, scale, W, H, C, Wf, Hf, offs_c, mask_c, row_ok,
                    A0X: tl.constexpr, A0Y: tl.constexpr, A1X: tl.constexpr, A1Y: tl.constexpr,
                    A2X: tl.constexpr, A2Y: tl.constexpr):
    """Mean of the three plane taps at world points (px, py, pz) [BN] -> [BN, BC] float32.

    planes_b_ptr points at one batch item's [3, H, W, C] block. A point with a non-finite coordinate gets
    NaN features, as grid_sample's NaN weights give in the reference.
    """
    qx = px * scale
    qy = py * scale
    qz = pz * scale
    plane_stride = H * W * C
    f = sample_plane(planes_b_ptr, pick_axis(qx, qy, qz, A0X), pick_axis(qx, qy, qz, A0Y), W, H, C, Wf, Hf,
                     offs_c, mask_c, row_ok)
    f += sample_plane(planes_b_ptr + plane_stride, pick_axis(qx, qy, qz, A1X), pick_axis(qx, qy, qz, A1Y),
                      W, H, C, Wf, Hf, offs_c, mask_c, row_ok)
    f += sample_plane(planes_b_ptr + 2 * plane_stride, pick_axis(qx, qy, qz, A2X), pick_axis(qx, qy, qz, A2Y),
                      W, H, C, Wf, Hf, offs_c, mask_c, row_ok)
    finite = (tl.abs(px) < float("inf")) & (tl.abs(py) < float("inf")) & (tl.abs(pz) < float("inf"))
    f = f / 3.0
    return tl.where(finite[:, None], f, float("nan"))


def as_fp32_contiguous(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()
