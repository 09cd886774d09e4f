"""Fused inference render in two Triton kernels (reference: kernels/reference/render.py, deterministic mode).

Kernel 1 (coarse): per block of rays, walk the S coarse depths; at each, sample the tri-planes, run the
decoder's first layer and only the density row of the second, composite on the fly to get the coarse
weights, and smooth them (max-pool 2 / avg-pool 2) into a [BLOCK_R, pow2(S)] register tile; then
normalise, prefix-sum and invert the CDF at u = linspace(0, 1, S_fine), writing the fine depths.
Kernel 2 (merged): per block of rays, merge the (shared) coarse depths with the ray's fine depths in
ascending order, decode every sample (full decoder), and composite the merged sequence on the fly.

Memory per ray: S + S_fine depths and S - 1 coarse weights (outputs of RenderResult anyway); never a
[rays, samples, channels] tensor. The reference holds features [B, R*96, 32], hidden [B*R*96, 64],
colors and their sorted copy (~6 x 50 MB per batch item at 64x64 rays, 48+48 samples).

The coarse samples' colours are recomputed in kernel 2 rather than kept: keeping them would mean a
[rays, 48, 32] float32 buffer (25 MB per batch item), i.e. exactly the tensor this kernel avoids;
recomputing costs 48 extra tri-plane taps and half a second decoder layer per ray.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..reference.compositing import TRANSMITTANCE_EPS
from ..reference.decoder import SIGMOID_PAD, DecoderWeights
from ..reference.importance import PDF_EPS, PDF_FLOOR
from ..reference.render import RaySettings, RenderResult, coarse_depths
from ._common import channels_last, load_xyz, next_pow2, plane_axes_args, sample_triplane, softplus


@triton.jit
def _decode(feat, w0t, b0, w1s, b1s, w1ct, b1c, DOT_PRECISION: tl.constexpr, WANT_COLORS: tl.constexpr):
    """feat [BR, BC] -> (raw density [BR], colors [BR, BF] in [-0.001, 1.001] or None)."""
    hidden = softplus(tl.dot(feat, w0t, input_precision=DOT_PRECISION) + b0[None, :])   # [BR, BH]
    sigma = tl.sum(hidden * w1s[None, :], axis=1) + b1s                               # [BR]
    if WANT_COLORS:
        out = tl.dot(hidden, w1ct, input_precision=DOT_PRECISION) + b1c[None, :]     # [BR, BF]
        colors = (1.0 / (1.0 + tl.exp(-out))) * (1.0 + 2.0 * 0.001) - 0.001
        return sigma, colors
    else:
        return sigma, sigma


@triton.jit
def _load_decoder(w0t_ptr, b0_ptr, w1s_ptr, w1ct_ptr, b1_ptr, C, HID, NF,
                  BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_F: tl.constexpr):
    offs_c = tl.arange(0, BLOCK_C)
    offs_h = tl.arange(0, BLOCK_H)
    offs_f = tl.arange(0, BLOCK_F)
    mc = offs_c < C
    mh = offs_h < HID
    mf = offs_f < NF
    # Zero padding: padded hidden units are softplus(0) = log 2 but meet zero rows of w1, so they add 0.
    w0t = tl.load(w0t_ptr + offs_c[:, None] * HID + offs_h[None, :], mask=mc[:, None] & mh[None, :], other=0.0)
    b0 = tl.load(b0_ptr + offs_h, mask=mh, other=0.0)
    w1s = tl.load(w1s_ptr + offs_h, mask=mh, other=0.0)
    w1ct = tl.load(w1ct_ptr + offs_h[:, None] * NF + offs_f[None, :], mask=mh[:, None] & mf[None, :], other=0.0)
    b1s = tl.load(b1_ptr)
    b1c = tl.load(b1_ptr + 1 + offs_f, mask=mf, other=0.0)
    return w0t, b0, w1s, b1s, w1ct, b1c


@triton.jit
def _render_coarse_kernel(planes_ptr, orig_ptr, dir_ptr, zc_ptr, u_ptr,          # [B,3,H,W,C], [B,R,3] x2, [S], [SF]
                          w0t_ptr, b0_ptr, w1s_ptr, w1ct_ptr, b1_ptr,
                          weights_ptr, fine_ptr,                                 # [B,R,S-1], [B,R,SF]
                          R, W, H, C, Wf, Hf, HID, NF, S, SF, scale, shift, eps,
                          A0X: tl.constexpr, A0Y: tl.constexpr, A1X: tl.constexpr, A1Y: tl.constexpr,
                          A2X: tl.constexpr, A2Y: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_H: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_S: tl.constexpr,
                          DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    ray = b * R + offs_r                                                  # [BR] global ray index
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    ox, oy, oz = load_xyz(orig_ptr, ray, mask_r)
    dx, dy, dz = load_xyz(dir_ptr, ray, mask_r)
    planes_b = planes_ptr + b * 3 * H * W * C
    w0t, b0, w1s, b1s, w1ct, b1c = _load_decoder(w0t_ptr, b0_ptr, w1s_ptr, w1ct_ptr, b1_ptr, C, HID, NF,
                                                 BLOCK_C, BLOCK_H, BLOCK_F)

    t_prev = tl.load(zc_ptr).to(tl.float32)
    feat = sample_triplane(planes_b, ox + t_prev * dx, oy + t_prev * dy, oz + t_prev * dz, scale, W, H, C, Wf, Hf,
                           offs_c, mask_c, mask_r, A0X, A0Y, A1X, A1Y, A2X, A2Y)
    s_prev, _unused = _decode(feat, w0t, b0, w1s, b1s, w1ct, b1c, DOT_PRECISION, False)
    trans = tl.full([BLOCK_R], 1.0, tl.float32)
    w_m2 = tl.full([BLOCK_R], float("-inf"), tl.float32)   # w_{j-2}; -inf is max-pool's ignored padding
    w_m1 = tl.full([BLOCK_R], float("-inf"), tl.float32)   # w_{j-1}
    idx = tl.arange(0, BLOCK_S)[None, :]                   # [1, BS] index into smoothed weights / CDF
    smooth = tl.zeros([BLOCK_R, BLOCK_S], tl.float32)      # a_j + 0.01 + 1e-5 at j = 1..S-3, else 0
    for k in range(1, S):
        t = tl.load(zc_ptr + k).to(tl.float32)
        feat = sample_triplane(planes_b, ox + t * dx, oy + t * dy, oz + t * dz, scale, W, H, C, Wf, Hf,
                               offs_c, mask_c, mask_r, A0X, A0Y, A1X, A1Y, A2X, A2Y)
        s_cur, _unused = _decode(feat, w0t, b0, w1s, b1s, w1ct, b1c, DOT_PRECISION, False)
        j = k - 1                                          # interval index
        sigma = softplus((s_prev + s_cur) / 2 + shift)
        alpha = 1.0 - tl.exp(-(sigma * (t - t_prev)))
        w = alpha * trans
        trans = trans * (1.0 - alpha + eps)
        tl.store(weights_ptr + ray * (S - 1) + j, w, mask=mask_r)
        # a_{j-1} = (max(w_{j-2}, w_{j-1}) + max(w_{j-1}, w_j)) / 2 is complete now; keep 1 <= j-1 <= S-3
        # (the sampler drops the two end values: the published off-by-one, parity README 5.6).
        a = (tl.maximum(w_m2, w_m1) + tl.maximum(w_m1, w)) / 2
        keep = (idx == j - 1) & (j - 1 >= 1)
        smooth = tl.where(keep, ((a + 0.01) + 1e-5)[:, None], smooth)
        w_m2, w_m1 = w_m1, w
        s_prev, t_prev = s_cur, t

    # Inverse CDF. CDF entry k (k = 0..S-3) is paired with the coarse mid-point b_k; entry 0 is 0.
    total = tl.sum(smooth, axis=1)
    cdf = tl.cumsum(smooth / total[:, None], axis=1)       # [BR, BS]; cdf[k] = sum_{j<=k} p_j, p_0 = 0
    n_cdf = S - 2                                           # S-3 interior weights + the leading zero
    valid = idx < n_cdf
    for i in range(0, SF):
        u = tl.load(u_ptr + i)
        above = tl.sum(((cdf <= u) & valid).to(tl.int32), axis=1)
        below = tl.maximum(above - 1, 0)
        above = tl.minimum(above, n_cdf - 1)
        cdf_lo = tl.sum(tl.where(idx == below[:, None], cdf, 0.0), axis=1)
        cdf_hi = tl.sum(tl.where(idx == above[:, None], cdf, 0.0), axis=1)
        bin_lo = 0.5 * (tl.load(zc_ptr + below).to(tl.float32) + tl.load(zc_ptr + below + 1).to(tl.float32))
        bin_hi = 0.5 * (tl.load(zc_ptr + above).to(tl.float32) + tl.load(zc_ptr + above + 1).to(tl.float32))
        denom = cdf_hi - cdf_lo
        denom = tl.where(denom < 1e-5, 1.0, denom)
        t_fine = bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)
        tl.store(fine_ptr + ray * SF + i, t_fine, mask=mask_r)


@triton.jit
def _render_merged_kernel(planes_ptr, orig_ptr, dir_ptr, zc_ptr, fine_ptr, bounds_ptr,
                          w0t_ptr, b0_ptr, w1s_ptr, w1ct_ptr, b1_ptr,
                          feat_ptr, depth_ptr, wsum_ptr,                         # [B,R,F], [B,R], [B,R]
                          R, W, H, C, Wf, Hf, HID, NF, S, SF, scale, shift, eps,
                          A0X: tl.constexpr, A0Y: tl.constexpr, A1X: tl.constexpr, A1Y: tl.constexpr,
                          A2X: tl.constexpr, A2Y: tl.constexpr, WHITE: tl.constexpr, BLOCK_R: tl.constexpr,
                          BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_F: tl.constexpr,
                          DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    ray = b * R + offs_r
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_f = tl.arange(0, BLOCK_F)
    ox, oy, oz = load_xyz(orig_ptr, ray, mask_r)
    dx, dy, dz = load_xyz(dir_ptr, ray, mask_r)
    planes_b = planes_ptr + b * 3 * H * W * C
    w0t, b0, w1s, b1s, w1ct, b1c = _load_decoder(w0t_ptr, b0_ptr, w1s_ptr, w1ct_ptr, b1_ptr, C, HID, NF,
                                                 BLOCK_C, BLOCK_H, BLOCK_F)
    inf = float("inf")

    # Two-way merge: the coarse depths are shared by all rays, the fine ones are per ray; both ascending.
    ic = tl.zeros([BLOCK_R], tl.int32)
    jf = tl.zeros([BLOCK_R], tl.int32)
    tc = tl.load(zc_ptr + ic, mask=ic < S, other=inf).to(tl.float32)
    tf = tl.load(fine_ptr + ray * SF + jf, mask=mask_r & (jf < SF), other=inf).to(tl.float32)
    take_c = tc <= tf
    t_prev = tl.where(take_c, tc, tf)
    t_prev = tl.where(mask_r, t_prev, 0.0)
    ic += take_c.to(tl.int32)
    jf += (~take_c).to(tl.int32)
    feat = sample_triplane(planes_b, ox + t_prev * dx, oy + t_prev * dy, oz + t_prev * dz, scale, W, H, C, Wf, Hf,
                           offs_c, mask_c, mask_r, A0X, A0Y, A1X, A1Y, A2X, A2Y)
    s_prev, c_prev = _decode(feat, w0t, b0, w1s, b1s, w1ct, b1c, DOT_PRECISION, True)
    trans = tl.full([BLOCK_R], 1.0, tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_F], tl.float32)
    wsum = tl.zeros([BLOCK_R], tl.float32)
    dsum = tl.zeros([BLOCK_R], tl.float32)
    for step in range(1, S + SF):
        tc = tl.load(zc_ptr + ic, mask=ic < S, other=inf).to(tl.float32)
        tf = tl.load(fine_ptr + ray * SF + jf, mask=mask_r & (jf < SF), other=inf).to(tl.float32)
        take_c = tc <= tf
        t = tl.where(take_c, tc, tf)
        t = tl.where(mask_r, t, t_prev)                     # rays past R: stay finite, stored nowhere
        ic += take_c.to(tl.int32)
        jf += (~take_c).to(tl.int32)
        feat = sample_triplane(planes_b, ox + t * dx, oy + t * dy, oz + t * dz, scale, W, H, C, Wf, Hf,
                               offs_c, mask_c, mask_r, A0X, A0Y, A1X, A1Y, A2X, A2Y)
        s_cur, c_cur = _decode(feat, w0t, b0, w1s, b1s, w1ct, b1c, DOT_PRECISION, True)
        sigma = softplus((s_prev + s_cur) / 2 + shift)
        alpha = 1.0 - tl.exp(-(sigma * (t - t_prev)))
        w = alpha * trans
        trans = trans * (1.0 - alpha + eps)
        acc += w[:, None] * ((c_prev + c_cur) / 2)
        wsum += w
        dsum += w * ((t_prev + t) / 2)
        s_prev, c_prev, t_prev = s_cur, c_cur, t
    depth = dsum / tl.where(mask_r, wsum, 1.0)
    depth = tl.where(depth == depth, depth, inf)
    depth = tl.minimum(tl.maximum(depth, tl.load(bounds_ptr)), tl.load(bounds_ptr + 1))
    if WHITE:
        acc += (1.0 - wsum)[:, None]
    mask_f = offs_f < NF
    tl.store(feat_ptr + ray[:, None] * NF + offs_f[None, :], acc * 2.0 - 1.0, mask=mask_r[:, None] & mask_f[None, :])
    tl.store(depth_ptr + ray, depth, mask=mask_r)
    tl.store(wsum_ptr + ray, wsum, mask=mask_r)


# Decoder matmul precision. The [16|32 x 32] x [32 x 64] products are too small for tensor cores to pay
# off with the 3-product TF32 split (9.4 ms vs 4.2 ms at B=8, H100), and single TF32 (3.2 ms) breaks the
# parity fixture's 5e-5 tolerance, so plain float32 FMA it is.
DOT_PRECISION = "ieee"


def supports(planes: Tensor, settings: RaySettings, stochastic: bool) -> bool:
    """Whether the fused kernels reproduce reference.render_rays for these arguments."""
    return (not stochastic and settings.depth_samples >= 4 and settings.ray_start < settings.ray_end
            and not (torch.is_grad_enabled() and planes.requires_grad))


def _launch_shape(rays: int, batch: int) -> int:
    # tl.dot needs M >= 16. One 64x64 image: 16 rays per program (256 programs, 2 per SM on an H100;
    # 0.69 ms against 0.92 ms for 32 rays and 2.1 ms for 64). Eight images: 32 rays (4.1 ms against
    # 5.3 ms for 16 with float32 FMA dots: larger dot tiles once the SMs are full). benchmarks --sweep.
    return 16 if rays * batch <= 8192 else 32


def render_fused(planes: Tensor, decoder: DecoderWeights, origins: Tensor, directions: Tensor,
                 settings: RaySettings = RaySettings(), *, block_r: int | None = None, num_warps: int = 4,
                 dot_precision: str = DOT_PRECISION) -> RenderResult:
    """Deterministic render of rays [B,R,3] through planes [B,3,C,H,W]; no autograd (inference only).

    `dot_precision` for the decoder's two matrix products: "ieee" (default; float32 FMA, parity-exact),
    "tf32" (about 1e-3 relative error: not for parity; 3.2 ms against 4.2 ms at B=8 on an H100) or
    "tf32x3" (float32-level error, but slower than "ieee" here: 9.4 ms at B=8).
    """
    batch, rays, _ = origins.shape
    dev = planes.device
    n_coarse, n_fine = settings.depth_samples, settings.importance_samples
    channels, hidden, n_feat = decoder.w0.shape[1], decoder.w0.shape[0], decoder.w1.shape[0] - 1
    with torch.no_grad():
        planes_cl = channels_last(planes)                                     # [B, 3, H, W, C]
        _, _, h, w, _ = planes_cl.shape
        orig = origins.contiguous()                                           # [B, R, 3]
        dirs = directions.contiguous()                                        # [B, R, 3]
        zc = coarse_depths(1, 1, settings, device=dev, dtype=origins.dtype).reshape(n_coarse)  # [S]
        w0t = decoder.w0.detach().to(torch.float32).t().contiguous()          # [C, HID]
        b0 = decoder.b0.detach().to(torch.float32).contiguous()               # [HID]
        w1 = decoder.w1.detach().to(torch.float32)
        w1s = w1[0].contiguous()                                              # [HID] density row
        w1ct = w1[1:].t().contiguous()                                        # [HID, F]
        b1 = decoder.b1.detach().to(torch.float32).contiguous()               # [1 + F]
        block_r = block_r or _launch_shape(rays, batch)
        block_c, block_h, block_f = next_pow2(channels, 16), next_pow2(hidden, 16), next_pow2(n_feat, 16)
        grid = (triton.cdiv(rays, block_r), batch)
        axes = plane_axes_args(settings.plane_axes)
        scale = 2.0 / settings.box_warp
        geometry = (rays, w, h, channels, float(w), float(h), hidden, n_feat)
        weights_coarse = depths_fine = None
        if n_fine > 0:
            u = torch.linspace(0, 1, n_fine, device=dev, dtype=torch.float32)            # [SF]
            weights_coarse = torch.empty(batch, rays, n_coarse - 1, 1, device=dev, dtype=torch.float32)
            depths_fine = torch.empty(batch, rays, n_fine, 1, device=dev, dtype=torch.float32)
            _render_coarse_kernel[grid](
                planes_cl, orig, dirs, zc, u, w0t, b0, w1s, w1ct, b1, weights_coarse, depths_fine, *geometry,
                n_coarse, n_fine, scale, float(settings.density_shift), TRANSMITTANCE_EPS, *axes,
                BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_F=block_f,
                BLOCK_S=next_pow2(n_coarse), DOT_PRECISION=dot_precision, num_warps=num_warps)
            lo = torch.minimum(zc.min().to(torch.float32), depths_fine.min())
            hi = torch.maximum(zc.max().to(torch.float32), depths_fine.max())
            fine_arg = depths_fine
        else:
            lo, hi = zc.min().to(torch.float32), zc.max().to(torch.float32)
            fine_arg = zc                                                     # never read: SF = 0
        bounds = torch.stack([lo, hi])                                        # [2] merged depth range
        feat = torch.empty(batch, rays, n_feat, device=dev, dtype=planes.dtype)
        depth = torch.empty(batch, rays, 1, device=dev, dtype=torch.float32)
        wsum = torch.empty(batch, rays, 1, device=dev, dtype=torch.float32)
        if batch * rays > 0:
            _render_merged_kernel[grid](
                planes_cl, orig, dirs, zc, fine_arg, bounds, w0t, b0, w1s, w1ct, b1, feat, depth, wsum, *geometry,
                n_coarse, n_fine, scale, float(settings.density_shift), TRANSMITTANCE_EPS, *axes,
                WHITE=bool(settings.white_back), BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_H=block_h,
                BLOCK_F=block_f, DOT_PRECISION=dot_precision, num_warps=num_warps)
        out_dtype = origins.dtype
        return RenderResult(
            features=feat, depth=depth.to(out_dtype), weights_sum=wsum.to(out_dtype),
            depths_coarse=zc.reshape(1, 1, n_coarse, 1).expand(batch, rays, n_coarse, 1),
            weights_coarse=None if weights_coarse is None else weights_coarse.to(out_dtype),
            depths_fine=None if depths_fine is None else depths_fine.to(out_dtype))


def render_rays(planes: Tensor, decoder: DecoderWeights, origins: Tensor, directions: Tensor,
                settings: RaySettings = RaySettings(), *, stochastic: bool = False,
                generator: torch.Generator | None = None, backend: str | None = None) -> RenderResult:
    """Same contract as reference.render_rays. Fused for deterministic inference; otherwise (stochastic
    sampling, or a gradient is required) the unfused pipeline with the Triton sampling and compositing."""
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (planes, origins, directions, decoder.w0, decoder.b0, decoder.w1, decoder.b1))
    if stochastic or needs_grad or not supports(planes, settings, stochastic):
        from ..reference.render import render_rays as unfused
        return unfused(planes, decoder, origins, directions, settings, stochastic=stochastic, generator=generator,
                       backend="triton" if backend is None else backend)
    return render_fused(planes, decoder, origins, directions, settings)
