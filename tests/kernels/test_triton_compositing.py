"""Triton compositing vs the torch reference: forward, backward, awkward shapes, opaque and empty rays."""
from __future__ import annotations

import pytest
import torch

from otavatar.kernels import reference

# (B, R, S, C): the 2-sample minimum, R=1, counts that are not powers of two.
TINY_SHAPES = [(1, 1, 2, 1), (2, 5, 7, 3), (1, 9, 12, 17)]
CUDA_SHAPES = [(1, 1, 2, 32), (2, 257, 96, 32), (3, 1000, 47, 33)]


def _shapes(kcase):
    return TINY_SHAPES if kcase.interpreted else CUDA_SHAPES


def _data(shape, seed, density_scale=3.0):
    b, r, s, c = shape
    g = torch.Generator().manual_seed(seed)
    colors = torch.rand(b, r, s, c, generator=g)                                   # [B, R, S, C]
    densities = torch.randn(b, r, s, 1, generator=g) * density_scale              # [B, R, S, 1] raw sigma
    depths = torch.sort(2.25 + torch.rand(b, r, s, 1, generator=g) * 1.05, dim=2).values  # ascending
    return colors, densities, depths


def _outputs(result):
    return {"features": result.features, "depth": result.depth, "weights": result.weights}


@pytest.mark.parametrize("white_back", [False, True])
def test_forward_matches_reference(tk, kcase, close, cast, white_back):
    for i, shape in enumerate(_shapes(kcase)):
        kernel_in, ref_in = cast(kcase, *_data(shape, seed=i))
        got = _outputs(tk.composite_rays(*kernel_in, white_back=white_back))
        want = _outputs(reference.composite_rays(*ref_in, white_back=white_back))
        for name in want:
            close(got[name], want[name], kcase.rel, f"{name} {shape}")


@pytest.mark.parametrize("cotangents", ["all", "features"])
def test_backward_matches_reference(tk, kcase, close, cast, cotangents):
    for i, shape in enumerate(_shapes(kcase)):
        kernel_in, ref_in = cast(kcase, *_data(shape, seed=20 + i))
        g = torch.Generator().manual_seed(200 + i)
        b, r, s, c = shape
        cots = {"features": torch.randn(b, r, c, generator=g), "depth": torch.randn(b, r, 1, generator=g),
                "weights": torch.randn(b, r, s - 1, 1, generator=g)}
        if cotangents == "features":
            cots = {"features": cots["features"]}
        grads = {}
        for name, fn, inputs in (("triton", tk.composite_rays, kernel_in), ("ref", reference.composite_rays, ref_in)):
            leaves = [t.clone().requires_grad_() for t in inputs]
            out = _outputs(fn(*leaves, white_back=i == 1))
            loss = sum((out[k] * cot.to(out[k].device, out[k].dtype)).sum() for k, cot in cots.items())
            loss.backward()
            grads[name] = [leaf.grad for leaf in leaves]
        for what, got, want in zip(("colors", "densities", "depths"), grads["triton"], grads["ref"]):
            close(got, want, kcase.rel, f"grad {what} {shape}")


def test_opaque_rays_stay_finite(tk, kcase, close, cast):
    """sigma * delta ~ 1e4: alpha rounds to 1 and the transmittance to 1e-10-scale. The reverse recurrence has
    no 1/(1 - alpha), so forward and backward stay finite and match the reference's."""
    colors, densities, depths = _data((1, 4, 9, 5), seed=5)
    densities = densities.abs().clamp(1.0, 3.0) * 1e4              # fits float16 (max 65504)
    kernel_in, ref_in = cast(kcase, colors, densities, depths)
    leaves = [t.clone().requires_grad_() for t in kernel_in]
    out = tk.composite_rays(*leaves)
    assert all(torch.isfinite(t).all() for t in (out.features, out.depth, out.weights))
    ref_leaves = [t.clone().requires_grad_() for t in ref_in]
    ref = reference.composite_rays(*ref_leaves)
    close(out.features, ref.features, kcase.rel, "features")
    (out.features.sum() + out.depth.sum()).backward()
    (ref.features.sum() + ref.depth.sum()).backward()
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        assert torch.isfinite(leaf.grad).all()
        close(leaf.grad, ref_leaf.grad, kcase.rel, "grad")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's 0/0
def test_empty_rays(tk, kcase, cast):
    """softplus underflows to 0 for raw density -1e4: no weight at all, depth 0/0 -> inf -> the largest
    depth of the call, features 2*0 - 1. The depth gradient then goes to that largest depth (clamp's
    backward), and none of it is NaN (the reference's 0/0 turns the weight gradients into NaN)."""
    colors, densities, depths = _data((1, 3, 6, 4), seed=6)
    densities = torch.full_like(densities, -1e4)
    kernel_in, ref_in = cast(kcase, colors, densities, depths)
    leaves = [t.clone().requires_grad_() for t in kernel_in]
    out = tk.composite_rays(*leaves)
    ref = reference.composite_rays(*ref_in)
    assert torch.equal(out.depth.float(), ref.depth) and (out.depth == depths.max().to(kcase.dtype)).all()
    assert (out.features == -1).all() and (out.weights == 0).all()
    out.depth.sum().backward()
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()
    is_max = leaves[2] == leaves[2].max()
    grad_depth = leaves[2].grad.float()
    assert torch.allclose(grad_depth[is_max].sum(), torch.tensor(3.0, device=grad_depth.device))
    assert (grad_depth[~is_max] == 0).all()


def test_public_function_dispatches_here(tk, kcase, cast):
    from otavatar import kernels

    kernel_in, _ = cast(kcase, *_data((1, 3, 5, 2), seed=8))
    direct = tk.composite_rays(*kernel_in)
    via = kernels.composite_rays(*kernel_in, backend="triton")
    assert torch.equal(direct.features, via.features) and torch.equal(direct.weights, via.weights)
