"""Fused Triton render vs reference.render_rays, the dispatch rules of kernels.render_rays, and (on a GPU)
the published-network parity fixture."""
from __future__ import annotations

import math
import os

import pytest
import torch

from otavatar import kernels
from otavatar.kernels import reference
from otavatar.kernels.reference import DecoderWeights, RaySettings

OUTPUTS = ("features", "depth", "weights_sum", "depths_coarse", "weights_coarse", "depths_fine")

# (B, R, C, hidden, F, H, W, settings): odd sample counts, R=1, no importance samples, white background,
# another box and plane axes; the CUDA shapes are the model's decoder on smaller planes.
TINY_CASES = [
    (1, 19, 4, 8, 3, 9, 11, RaySettings(depth_samples=6, importance_samples=5)),
    (2, 1, 5, 16, 2, 6, 7, RaySettings(depth_samples=5, importance_samples=3, white_back=True, box_warp=0.9,
                                       plane_axes="xy_xz_yz")),
    (1, 7, 3, 8, 4, 5, 5, RaySettings(depth_samples=7, importance_samples=0)),
]
CUDA_CASES = [
    (1, 1, 32, 64, 32, 64, 64, RaySettings()),
    (2, 700, 32, 64, 32, 63, 65, RaySettings()),
    (1, 333, 32, 64, 32, 64, 64, RaySettings(depth_samples=37, importance_samples=29, white_back=True)),
]


def _scene(b, r, c, hidden, f, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(b, 3, c, h, w, generator=g)                                   # [B, 3, C, H, W]
    decoder = DecoderWeights(w0=torch.randn(hidden, c, generator=g) / math.sqrt(c),
                             b0=torch.randn(hidden, generator=g) * 0.1,
                             w1=torch.randn(1 + f, hidden, generator=g) / math.sqrt(hidden),
                             b1=torch.randn(1 + f, generator=g) * 0.1)
    decoder.b1[0] += 2.0            # the parity recipe's density bias: opacity ~0.5, weights follow density
    origins = torch.tensor([0.0, 0.05, 2.7]).expand(b, r, 3).contiguous()            # [B, R, 3]
    targets = torch.cat([(torch.rand(b, r, 2, generator=g) - 0.5) * 0.9, torch.zeros(b, r, 1)], dim=-1)
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)             # [B, R, 3] into the cube
    return planes, decoder, origins, directions


def _cases(kcase):
    return TINY_CASES if kcase.interpreted else CUDA_CASES


def _on(device, decoder: DecoderWeights) -> DecoderWeights:
    return DecoderWeights(*(t.to(device) for t in (decoder.w0, decoder.b0, decoder.w1, decoder.b1)))


def test_fused_matches_reference(tk, kcase, close):
    for i, (b, r, c, hidden, f, h, w, settings) in enumerate(_cases(kcase)):
        planes, decoder, origins, directions = _scene(b, r, c, hidden, f, h, w, seed=i)
        dev = kcase.device
        # Rays stay float32: the model makes them in float32; only the planes follow the case's dtype.
        planes_k = planes.to(dev, kcase.dtype)
        args = (_on(dev, decoder), origins.to(dev), directions.to(dev), settings)
        got = tk.render_fused(planes_k, *args)
        want = reference.render_rays(planes_k.float(), *args, backend="torch")
        for name in OUTPUTS:
            g, e = getattr(got, name), getattr(want, name)
            assert (g is None) == (e is None), name
            if e is not None:
                assert torch.isfinite(g).all(), name
                close(g, e, kcase.rel, f"{name} case {i}")


def test_dispatch_fused_only_for_deterministic_inference(tk, kcase, close, monkeypatch):
    from otavatar.kernels.triton import render as triton_render

    b, r, c, hidden, f, h, w, settings = TINY_CASES[0]
    planes, decoder, origins, directions = (_scene(b, r, c, hidden, f, h, w, seed=4))
    planes, origins, directions = planes.to(kcase.device), origins.to(kcase.device), directions.to(kcase.device)
    decoder = _on(kcase.device, decoder)
    calls = []
    real = triton_render.render_fused
    monkeypatch.setattr(triton_render, "render_fused", lambda *a, **k: calls.append(1) or real(*a, **k))

    with torch.no_grad():
        fused = kernels.render_rays(planes, decoder, origins, directions, settings, backend="triton")
    assert calls == [1]
    # A gradient is needed: the unfused pipeline (Triton sampling + compositing with backward) runs.
    leaf = planes.clone().requires_grad_()
    unfused = kernels.render_rays(leaf, decoder, origins, directions, settings, backend="triton")
    assert calls == [1] and unfused.features.requires_grad
    close(unfused.features, fused.features, kcase.rel, "unfused vs fused")
    cot = torch.randn(unfused.features.shape, generator=torch.Generator().manual_seed(5)).to(kcase.device)
    ((unfused.features * cot).sum() + unfused.depth.sum()).backward()
    ref_leaf = planes.clone().requires_grad_()
    ref = reference.render_rays(ref_leaf, decoder, origins, directions, settings, backend="torch")
    ((ref.features * cot).sum() + ref.depth.sum()).backward()
    close(leaf.grad, ref_leaf.grad, kcase.rel, "plane gradient through the unfused Triton path")
    # Stochastic sampling never takes the fused path; with equal generators it reproduces the reference.
    with torch.no_grad():
        gen = torch.Generator(device=kcase.device)
        noisy = kernels.render_rays(planes, decoder, origins, directions, settings, stochastic=True,
                                    generator=gen.manual_seed(3), backend="triton")
        noisy_ref = kernels.render_rays(planes, decoder, origins, directions, settings, stochastic=True,
                                        generator=gen.manual_seed(3), backend="torch")
    assert calls == [1]
    close(noisy.features, noisy_ref.features, kcase.rel, "stochastic")


@pytest.mark.gpu
def test_fused_render_matches_parity_fixture(eg3d_case0, eg3d_planes0, recipe, eg3d_keys, close):
    """The published networks' rendering of case 0 (parity README 4-6), at the fixtures' float32 tolerances."""
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("needs CUDA without the interpreter")
    pytest.importorskip("triton")
    from otavatar.kernels.triton import render_fused

    sd = recipe(eg3d_keys, seed=0)
    dev = "cuda"

    def t(name):
        return torch.from_numpy(sd[name]).to(dev)

    decoder = DecoderWeights(w0=t("decoder.net.0.weight") / math.sqrt(32), b0=t("decoder.net.0.bias"),
                             w1=t("decoder.net.2.weight") / math.sqrt(64), b1=t("decoder.net.2.bias"))
    planes = torch.from_numpy(eg3d_planes0).to(dev)
    origins = torch.from_numpy(eg3d_case0["ray_origins"]).to(dev)
    directions = torch.from_numpy(eg3d_case0["ray_directions"]).to(dev)
    out = render_fused(planes, decoder, origins, directions, RaySettings())

    def image(x):  # [1, R, K] -> [1, K, 64, 64]
        return x.permute(0, 2, 1).reshape(1, -1, 64, 64)

    fixture = {k: torch.from_numpy(v) for k, v in eg3d_case0.items()}
    # atol from parity README section 6, each 20-50x the float32-vs-float64 rounding level.
    checks = [(image(out.features), fixture["image_feature"], 5e-5),
              (image(out.depth), fixture["image_depth"], 2e-5),
              (image(out.weights_sum), fixture["weights_sum"], 2e-5),
              (out.weights_coarse.reshape(1, 64, 64, 47), fixture["weights_coarse"], 1e-5),
              (out.depths_fine.reshape(1, 64, 64, 48), fixture["depths_fine"], 2e-5)]
    for got, want, atol in checks:
        err = (got.cpu().double() - want.double()).abs().max().item()
        assert err <= atol, (tuple(want.shape), err, atol)
