"""Triton tri-plane sampling vs the torch reference: forward, backward, awkward shapes, non-finite points."""
from __future__ import annotations

import pytest
import torch

from otavatar.kernels import reference

# (B, N, C, H, W): N=1; counts that are not powers of two; channel counts below and between the 16-wide
# channel tile; non-square planes whose sides divide no block size.
TINY_SHAPES = [(1, 1, 4, 4, 4), (2, 13, 3, 7, 5), (1, 37, 5, 9, 11)]
CUDA_SHAPES = [(1, 1, 32, 64, 64), (2, 3001, 32, 63, 65), (1, 4099, 24, 256, 256)]


def _shapes(kcase):
    return TINY_SHAPES if kcase.interpreted else CUDA_SHAPES


def _data(shape, seed, spread=1.2):
    b, n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(b, 3, c, h, w, generator=g)                  # [B, 3, C, H, W]
    points = (torch.rand(b, n, 3, generator=g) - 0.5) * spread        # [B, N, 3]; 1.2 reaches past the cube
    return planes, points


@pytest.mark.parametrize("plane_axes,box_warp", [("eg3d", 1.0), ("xy_xz_yz", 0.8)])
def test_forward_matches_reference(tk, kcase, close, cast, plane_axes, box_warp):
    for i, shape in enumerate(_shapes(kcase)):
        (planes, points), (planes_r, points_r) = cast(kcase, *_data(shape, seed=i))
        out = tk.triplane_sample(planes, points, box_warp=box_warp, plane_axes=plane_axes)
        ref = reference.triplane_sample(planes_r, points_r, box_warp=box_warp, plane_axes=plane_axes)
        assert out.dtype == kcase.dtype and out.shape == (shape[0], shape[1], shape[2])
        close(out, ref, kcase.rel, f"features {shape}")


@pytest.mark.parametrize("need", ["both", "planes", "points"])
def test_backward_matches_reference(tk, kcase, close, cast, need):
    for i, shape in enumerate(_shapes(kcase)):
        (planes, points), (planes_r, points_r) = cast(kcase, *_data(shape, seed=10 + i))
        cot = torch.randn(shape[0], shape[1], shape[2], generator=torch.Generator().manual_seed(99 + i))
        (cot_k,), (cot_r,) = cast(kcase, cot)
        grads = {}
        for name, (fn, pl, pt, g) in {"triton": (tk.triplane_sample, planes, points, cot_k),
                                      "ref": (reference.triplane_sample, planes_r, points_r, cot_r)}.items():
            pl = pl.clone().requires_grad_(need in ("both", "planes"))
            pt = pt.clone().requires_grad_(need in ("both", "points"))
            (fn(pl, pt) * g).sum().backward()
            grads[name] = (pl.grad, pt.grad)
        for k, what in enumerate(("planes", "points")):
            got, want = grads["triton"][k], grads["ref"][k]
            assert (got is None) == (want is None), what
            if want is not None:
                assert got.dtype == kcase.dtype
                close(got, want, kcase.rel, f"grad {what} {shape}")


def test_nonfinite_and_far_points(tk, kcase, close, cast):
    """NaN/inf coordinates give NaN features (what the CPU reference's NaN weights give; CUDA's grid_sample
    returns 0 for NaN, so only the finite points are compared) and scatter no gradient; far-away finite
    points give exact zeros; everything else is unaffected."""
    planes, points = _data((1, 8, 4, 6, 6), seed=3)
    points[0, 0, 0] = float("nan")
    points[0, 1, 1] = float("inf")
    points[0, 2, 2] = float("-inf")
    points[0, 3] = torch.tensor([6e4, -6e4, 6e4])              # far outside, still finite in float16
    (planes, points), (planes_r, points_r) = cast(kcase, planes, points)
    pl = planes.clone().requires_grad_()
    pt = points.clone().requires_grad_()
    out = tk.triplane_sample(pl, pt)
    ref = reference.triplane_sample(planes_r, points_r[:, 3:])
    assert torch.isnan(out[0, :3]).all() and torch.isfinite(out[0, 3:]).all()
    assert (out[0, 3] == 0).all()
    close(out[:, 3:], ref, kcase.rel, "features")
    out.nan_to_num(0.0).sum().backward()
    assert torch.isfinite(pl.grad).all()
    assert torch.isnan(pt.grad[0, :3]).all() and (pt.grad[0, 3] == 0).all()
    pl_r = planes_r.clone().requires_grad_()
    reference.triplane_sample(pl_r, points_r[:, 3:]).sum().backward()
    close(pl.grad, pl_r.grad, kcase.rel, "plane grad without the non-finite points")


def test_public_function_dispatches_here(tk, kcase, close, cast):
    from otavatar import kernels

    (planes, points), _ = cast(kcase, *_data((1, 5, 3, 4, 6), seed=7))
    direct = tk.triplane_sample(planes, points)
    via = kernels.triplane_sample(planes, points, backend="triton")
    assert torch.equal(direct, via)
