"""The torch references (float64 gradcheck), validation at the public boundary, and dispatch rules.

Unmarked: these run in the normal job and never import triton.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from otavatar import kernels
from otavatar.kernels import reference
from otavatar.kernels.reference import DecoderWeights, RaySettings


def _f64(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()


def test_gradcheck_triplane_reference():
    planes = _f64(1, 3, 2, 4, 5)
    g = torch.Generator().manual_seed(1)
    # Points kept away from texel edges, where the bilinear derivative jumps and finite differences lie.
    points = ((torch.rand(1, 6, 3, generator=g, dtype=torch.float64) - 0.5) * 1.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, x: reference.triplane_sample(p, x, box_warp=1.0), (planes, points),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("white_back", [False, True])
def test_gradcheck_compositing_reference(white_back):
    colors = torch.rand(1, 3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    densities = _f64(1, 3, 5, 1, seed=3, scale=2.0)
    depths = torch.sort(2 + torch.rand(1, 3, 5, 1, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(4)), dim=2).values.requires_grad_()

    def fn(c, s, t):
        out = reference.composite_rays(c, s, t, white_back=white_back)
        return out.features, out.depth, out.weights

    assert torch.autograd.gradcheck(fn, (colors, densities, depths), eps=1e-6, atol=1e-5)


def test_gradcheck_decoder_reference():
    feats = _f64(1, 4, 3, seed=5)
    w = DecoderWeights(_f64(6, 3, seed=6), _f64(6, seed=7), _f64(3, 6, seed=8), _f64(3, seed=9))
    assert torch.autograd.gradcheck(lambda f, a, b, c, d: reference.decode_points(f, DecoderWeights(a, b, c, d)),
                                    (feats, w.w0, w.b0, w.w1, w.b1), eps=1e-6, atol=1e-5)


# -- validation ------------------------------------------------------------------------------------------
P = torch.zeros(1, 3, 2, 4, 4)
X = torch.zeros(1, 5, 3)


@pytest.mark.parametrize("planes,points,kwargs,error,match", [
    (torch.zeros(3, 2, 4, 4), X, {}, ValueError, "planes must have 5 dimensions"),
    (torch.zeros(1, 2, 2, 4, 4), X, {}, ValueError, r"dim 1 is 2, not 3"),
    (P, torch.zeros(1, 5, 2), {}, ValueError, r"points must be \[B,N,3\]"),
    (P, torch.zeros(2, 5, 3), {}, ValueError, "B=1"),
    (P.long(), X, {}, TypeError, "floating point"),
    ([1.0], X, {}, TypeError, "torch.Tensor"),
    (P, X, {"plane_axes": "yz"}, ValueError, "unknown plane_axes 'yz'"),
    (P, X, {"box_warp": 0.0}, ValueError, "box_warp must be > 0"),
    (P, X, {"backend": "cuda"}, ValueError, "unknown kernel backend 'cuda'"),
])
def test_triplane_sample_validation(planes, points, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernels.triplane_sample(planes, points, **kwargs)


@pytest.mark.parametrize("shapes,match", [
    (((1, 2, 3), (1, 2, 3, 1), (1, 2, 3, 1)), "colors must have 4 dimensions"),
    (((1, 2, 3, 4), (1, 2, 4, 1), (1, 2, 3, 1)), r"must be \[B,R,S,1\]"),
    (((1, 2, 1, 4), (1, 2, 1, 1), (1, 2, 1, 1)), "at least 2 samples"),
])
def test_composite_rays_validation(shapes, match):
    with pytest.raises(ValueError, match=match):
        kernels.composite_rays(*(torch.zeros(s) for s in shapes))


def _decoder(c=2, hidden=4, f=3):
    return DecoderWeights(torch.zeros(hidden, c), torch.zeros(hidden), torch.zeros(1 + f, hidden), torch.zeros(1 + f))


def test_render_rays_validation():
    o = torch.zeros(1, 5, 3)
    with pytest.raises(ValueError, match="origins and directions"):
        kernels.render_rays(P, _decoder(), o, torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"w0 \[hidden,2\]"):
        kernels.render_rays(P, _decoder(c=3), o, o)
    with pytest.raises(ValueError, match=r"b1 \(3,\)"):
        kernels.render_rays(P, DecoderWeights(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, 4),
                                              torch.zeros(3)), o, o)
    with pytest.raises(TypeError, match="DecoderWeights"):
        kernels.render_rays(P, (1, 2, 3, 4), o, o)


def test_sample_importance_validation():
    with pytest.raises(ValueError, match="S >= 4"):
        kernels.sample_importance(torch.zeros(1, 2, 3, 1), torch.zeros(1, 2, 2, 1), 4)
    with pytest.raises(ValueError, match="n_importance"):
        kernels.sample_importance(torch.zeros(1, 2, 5, 1), torch.zeros(1, 2, 4, 1), 0)


# -- dispatch --------------------------------------------------------------------------------------------
def test_auto_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("OTAVATAR_KERNEL_BACKEND", raising=False)
    planes = torch.randn(1, 3, 2, 4, 4)
    points = torch.rand(1, 7, 3) - 0.5
    assert torch.equal(kernels.triplane_sample(planes, points), reference.triplane_sample(planes, points))


def test_env_var_is_validated(monkeypatch):
    monkeypatch.setenv("OTAVATAR_KERNEL_BACKEND", "fast")
    with pytest.raises(ValueError, match="OTAVATAR_KERNEL_BACKEND"):
        kernels.triplane_sample(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 2, 3))


def test_render_rays_torch_backend_is_the_reference():
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(1, 3, 2, 5, 5, generator=g)
    dec = DecoderWeights(torch.randn(4, 2, generator=g), torch.randn(4, generator=g), torch.randn(3, 4, generator=g),
                         torch.randn(3, generator=g))
    o = torch.tensor([0.0, 0.0, 2.7]).expand(1, 3, 3).contiguous()
    d = torch.nn.functional.normalize(torch.randn(1, 3, 3, generator=g) * 0.1 - o, dim=-1)
    s = RaySettings(depth_samples=6, importance_samples=4)
    with torch.no_grad():
        a = kernels.render_rays(planes, dec, o, d, s, backend="torch")
    b = reference.render_rays(planes, dec, o, d, s, backend="torch")
    assert torch.equal(a.features, b.features) and torch.equal(a.depths_fine, b.depths_fine)


def test_importing_kernels_never_imports_triton():
    code = ("import sys, torch; import otavatar.kernels as k; "
            "k.triplane_sample(torch.zeros(1,3,2,4,4), torch.zeros(1,2,3)); "
            "print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "OTAVATAR_KERNEL_BACKEND": "auto"})
    assert out.stdout.strip() == "False", out.stderr
