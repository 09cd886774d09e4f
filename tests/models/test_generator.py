"""Generator behaviour beyond case 0: batches, other seeds, W+ codes, non-frontal cameras, loading errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otavatar.camera import look_at_camera
from otavatar.config import GeneratorConfig, RenderConfig
from otavatar.models import TriplaneGenerator
from otavatar.models.rays import rays_from_cameras
from otavatar.weights.state import WeightsError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TriplaneGenerator.tiny().eval()


def cameras(*yaw_pitch: tuple[float, float]) -> torch.Tensor:
    return torch.from_numpy(np.stack([look_at_camera(y, p) for y, p in yaw_pitch]))


def rays_numpy(c: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """parity/README.md 5.1 restated in float64, one pixel at a time."""
    c = c.astype(np.float64)
    m, k = c[:16].reshape(4, 4), c[16:].reshape(3, 3)
    fx, fy, cx, cy, s = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    dirs = []
    for row in range(res):
        for col in range(res):
            x, y = (col + 0.5) / res, (row + 0.5) / res
            cam = np.array([(x - cx + cy * s / fy - s * y / fy) / fx, (y - cy) / fy, 1.0, 1.0])
            d = (m @ cam)[:3] - m[:3, 3]
            dirs.append(d / np.linalg.norm(d))
    return np.broadcast_to(m[:3, 3], (res * res, 3)), np.array(dirs)


@pytest.mark.parametrize("yaw,pitch", [(0.4, -0.2), (-0.7, 0.3), (0.0, 0.0)])
def test_rays_match_float64_restatement_for_any_camera(yaw, pitch):
    c = look_at_camera(yaw, pitch)
    c[16] *= 1.05  # a corrected focal length and a skew, as the inversion's intrinsics correction produces
    c[17] = 0.01
    origins, directions = rays_from_cameras(torch.from_numpy(c)[None], 16)
    want_o, want_d = rays_numpy(c, 16)
    assert np.abs(origins[0].numpy() - want_o).max() <= 1e-6
    assert np.abs(directions[0].numpy() - want_d).max() <= 5e-6


def test_importance_sampler_matches_naive_restatement():
    """parity/README.md 5.6 restated with explicit loops, on random weights including empty rays."""
    from otavatar.kernels import sample_importance

    gen = torch.Generator().manual_seed(3)
    depths = torch.linspace(2.25, 3.3, 12).reshape(1, 1, 12, 1).repeat(1, 5, 1, 1)
    weights = torch.rand(1, 5, 11, 1, generator=gen) ** 3
    weights[0, 0] = 0.0
    fine = sample_importance(depths, weights, 9)[0, ..., 0].double().numpy()
    t = depths[0, 0, :, 0].double().numpy()
    for ray in range(5):
        w = weights[0, ray, :, 0].double().numpy()
        m = [max(w[max(j - 1, 0)], w[min(j, 10)]) for j in range(12)]
        s = [(m[j] + m[j + 1]) / 2 + 0.01 for j in range(11)]
        b = [(t[j] + t[j + 1]) / 2 for j in range(11)]
        p = np.array(s[1:10]) + 1e-5
        cdf = np.concatenate([[0.0], np.cumsum(p / p.sum())])
        for i, u in enumerate(np.linspace(0, 1, 9)):
            n = int((cdf <= u).sum())
            lo, hi = max(n - 1, 0), min(n, 9)
            denom = cdf[hi] - cdf[lo] if cdf[hi] - cdf[lo] >= 1e-5 else 1.0
            want = b[lo] + (u - cdf[lo]) / denom * (b[hi] - b[lo])
            assert abs(fine[ray, i] - want) <= 2e-5, (ray, i)


@pytest.mark.slow
def test_batch_of_two_equals_items_one_at_a_time(recipe, eg3d_keys):
    """Hidden-case situation: another recipe seed, batch 2, W+ codes varying per layer, non-frontal cameras."""
    G = TriplaneGenerator.official().eval()
    G.load_official_state_dict(recipe(eg3d_keys, seed=1))
    gen = torch.Generator().manual_seed(5)
    ws = G.w_avg + 0.5 * torch.randn(2, G.num_ws, 512, generator=gen)
    c = cameras((0.35, -0.15), (-0.5, 0.2))
    with torch.no_grad():
        both = G.synthesis(ws, c)
        singles = [G.synthesis(ws[i:i + 1], c[i:i + 1]) for i in range(2)]
    for name, atol in [("planes", 1e-4), ("features", 5e-5), ("depth", 2e-5), ("weights_sum", 2e-5), ("image", 1e-4)]:
        joined = torch.cat([getattr(s, name) for s in singles])
        err = (getattr(both, name) - joined).abs().max().item()
        assert err <= atol, f"{name}: batch vs single {err:.3g}"
    for name in ("image", "features", "depth"):
        assert torch.isfinite(getattr(both, name)).all()
    assert 0.05 < both.weights_sum.mean() < 1.0, "opacity should be neither empty nor saturated"
    # different cameras and codes give different images
    assert (both.image[0] - both.image[1]).abs().mean() > 1e-3


def test_tiny_shapes_and_determinism(tiny):
    cfg = tiny.config
    z = torch.randn(2, cfg.z_dim)
    c = cameras((0.0, 0.0), (0.3, 0.1))
    with torch.no_grad():
        ws = tiny.mapping(z, c)
        a = tiny.synthesis(ws, c)
        b = tiny.synthesis(ws, c)
    r, f = cfg.render.resolution, cfg.plane_channels
    assert ws.shape == (2, tiny.num_ws, cfg.w_dim) and tiny.num_ws == 10
    assert a.image.shape == (2, 3, cfg.img_resolution, cfg.img_resolution)
    assert a.features.shape == (2, f, r, r) and a.depth.shape == (2, 1, r, r)
    assert a.planes.shape == (2, 3, f, cfg.backbone_resolution, cfg.backbone_resolution)
    assert torch.equal(a.image, b.image), "deterministic rendering must repeat exactly"


def test_stochastic_rendering_differs_and_is_seeded(tiny):
    ws = tiny.w_avg.expand(1, tiny.num_ws, -1).clone()
    c = cameras((0.0, 0.0))
    with torch.no_grad():
        det = tiny.synthesis(ws, c)
        s1 = tiny.synthesis(ws, c, stochastic=True, generator=torch.Generator().manual_seed(1))
        s2 = tiny.synthesis(ws, c, stochastic=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1.features, s2.features)
    assert not torch.equal(det.features, s1.features)


def test_fused_and_unfused_modconv_agree(tiny):
    ws = tiny.w_avg + 0.5 * torch.randn(2, tiny.num_ws, tiny.config.w_dim)
    with torch.no_grad():
        a = tiny.planes(ws, fused_modconv=False)
        b = tiny.planes(ws, fused_modconv=True)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_gradients_reach_ws_and_all_used_parameters(tiny):
    G = TriplaneGenerator.tiny()
    ws = (G.w_avg + torch.randn(1, G.num_ws, G.config.w_dim)).requires_grad_(True)
    out = G.synthesis(ws, cameras((0.1, 0.0)))
    (out.image.square().mean() + out.image_raw.mean()).backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    unused = {n for n, p in G.named_parameters() if p.grad is None}
    # the mapping is not on the synthesis path, and the SR runs with noise_mode 'none'
    assert all(n.startswith("backbone.mapping.") or ("superresolution" in n and n.endswith("noise_strength"))
               for n in unused), sorted(unused)


def test_truncation_moves_toward_w_avg(tiny):
    z, c = torch.randn(1, tiny.config.z_dim), cameras((0.0, 0.0))
    with torch.no_grad():
        ws = tiny.mapping(z, c)
        half = tiny.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
    assert torch.allclose(half[:, :4], tiny.w_avg + 0.5 * (ws[:, :4] - tiny.w_avg), atol=1e-6)
    assert torch.equal(half[:, 4:], ws[:, 4:])


@pytest.mark.parametrize("bad,match", [
    (lambda G: (torch.zeros(1, G.num_ws + 1, G.config.w_dim), torch.zeros(1, 25)), r"ws must have shape \[B,10,128\]"),
    (lambda G: (torch.zeros(1, G.num_ws, G.config.w_dim), torch.zeros(2, 25)), r"c must have shape \[1,25\]"),
    (lambda G: (torch.zeros(1, G.num_ws, G.config.w_dim, dtype=torch.long), torch.zeros(1, 25)), "floating point"),
])
def test_synthesis_validates_inputs(tiny, bad, match):
    ws, c = bad(tiny)
    with pytest.raises((ValueError, TypeError), match=match):
        tiny.synthesis(ws, c)


# -- strict loading ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_official_state(tiny):
    """tiny's state dict in the official layout: native keys + the 26-style resample_filter constants."""
    from otavatar.models.layers import fir_filter

    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    for name, _ in tiny.named_buffers():
        if name.endswith("resample_filter"):
            state[name] = fir_filter()
    return state


def test_official_load_round_trips_and_accepts_prefix_and_numpy(tiny, tiny_official_state):
    G = TriplaneGenerator.tiny()
    G.load_official_state_dict({"module." + k: v.numpy() for k, v in tiny_official_state.items()})
    for k, v in tiny.state_dict().items():
        assert torch.equal(G.state_dict()[k], v), k
    G.load_official_state_dict({k: v for k, v in tiny_official_state.items() if not k.endswith("resample_filter")})


@pytest.mark.parametrize("corrupt,match", [
    (lambda s: s.pop("decoder.net.2.bias"), "missing keys: decoder.net.2.bias"),
    (lambda s: s.update({"decoder.net.4.weight": torch.zeros(1)}), "unexpected keys: decoder.net.4.weight"),
    (lambda s: s.update({"decoder.net.0.weight": torch.zeros(3, 3)}), r"shape mismatches: decoder.net.0.weight \(file \[3, 3\]"),
    (lambda s: s["backbone.mapping.w_avg"].__setitem__(0, float("nan")), "non-finite values in: backbone.mapping.w_avg"),
    (lambda s: s["backbone.synthesis.b4.resample_filter"].__setitem__((0, 0), 1.0), "resample_filter constants differ"),
])
def test_official_load_fails_loudly(tiny_official_state, corrupt, match):
    state = {k: v.clone() for k, v in tiny_official_state.items()}
    corrupt(state)
    G = TriplaneGenerator.tiny()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with pytest.raises(WeightsError, match=match):
        G.load_official_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()), "a failed load must change nothing"


def test_config_validation_and_json_round_trip():
    cfg = GeneratorConfig.tiny()
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="plane_axes must be one of"):
        RenderConfig(plane_axes="yz")
    with pytest.raises(ValueError, match="unknown GeneratorConfig fields"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(backbone_resolution=48)
