"""One-shot inversion: stages, clamp, intrinsics correction, callback, early stop, validation, driving."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from otavatar.camera import look_at_camera
from otavatar.inversion import InversionConfig, invert, portrait_tensor, render_motion
from otavatar.models import MotionController, TriplaneGenerator
from otavatar.training.objective import apply_intrinsics


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return TriplaneGenerator.tiny().eval(), MotionController.tiny().eval()


@pytest.fixture(scope="module")
def portrait():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)


CAMERA = look_at_camera(0.1, 0.0)
FAST = InversionConfig(w_steps=2, wplus_steps=2, sr_steps=1)


def test_two_stages_give_an_identity_code_and_a_correction(models, portrait):
    G, C = models
    steps = []
    result = invert(G, C, portrait, coeffs=np.zeros(70), camera=CAMERA, config=FAST, callback=steps.append,
                    preview_every=1)
    assert result.ws.shape == (G.config.num_ws, G.config.w_dim) and result.w.shape == (G.config.w_dim,)
    assert result.intrinsics.shape == (18,) and result.intrinsics.abs().sum() > 0
    assert [s.stage for s in steps] == ["w", "w", "w+", "w+"] and result.steps == 4
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    assert steps[0].preview.shape == (3, 32, 32)            # low-res render before the SR steps
    assert steps[1].preview.shape == (3, 128, 128)          # the last step of a stage super-resolves
    # W+ rows start equal (the W result) and then move apart
    assert not torch.allclose(result.ws[0], result.ws[-1])
    assert all(p.requires_grad for p in G.parameters())     # the networks' flags are restored


def test_fixed_intrinsics_keep_the_portrait_camera(models, portrait):
    G, C = models
    result = invert(G, C, portrait, coeffs=np.zeros(70), camera=CAMERA, config=replace(FAST, optimize_intrinsics=False))
    assert result.intrinsics.abs().sum() == 0


def test_clamp_keeps_the_code_near_w_avg(models, portrait):
    G, C = models
    result = invert(G, C, portrait, camera=CAMERA, config=InversionConfig(w_steps=3, wplus_steps=0, clamp=1e-3,
                                                                           sr_steps=0, lr=1.0))
    assert (result.ws - G.w_avg).abs().max() <= 1e-3 + 1e-7


def test_callback_returning_false_stops(models, portrait):
    G, C = models
    result = invert(G, C, portrait, camera=CAMERA, config=FAST, callback=lambda s: s.step < 1)
    assert result.steps == 2 and result.stopped_early


def test_early_stop_skips_to_the_sr_steps(models, portrait):
    G, C = models
    cfg = InversionConfig(w_steps=6, wplus_steps=0, sr_steps=1, early_stop=1.0, patience=1, lr=1e-9)
    result = invert(G, C, portrait, camera=CAMERA, config=cfg)
    assert result.steps < 6


def test_static_identity_and_landmark_terms(models, portrait):
    G, _ = models
    landmarks = np.tile(np.array([[64.0, 64.0]], np.float32), (68, 1)) + np.random.default_rng(1).normal(
        0, 10, (68, 2)).astype(np.float32)
    steps = []
    invert(G, None, portrait, camera=CAMERA, landmarks=landmarks, config=FAST, callback=steps.append)
    assert "local_lo" in steps[0].terms


@pytest.mark.parametrize("kwargs, match", [
    ({"camera": np.zeros(24)}, "camera must have shape"),
    ({"camera": CAMERA, "coeffs": np.full(70, np.nan)}, "coeffs has non-finite"),
    ({"camera": CAMERA, "landmarks": np.zeros((5, 2))}, "landmarks"),
])
def test_bad_inputs_name_the_problem(models, portrait, kwargs, match):
    G, C = models
    with pytest.raises(ValueError, match=match):
        invert(G, C, portrait, config=FAST, **kwargs)


def test_portrait_forms():
    with pytest.raises(ValueError, match="uint8"):
        portrait_tensor(np.zeros((8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="square"):
        portrait_tensor(np.zeros((8, 6, 3), np.uint8), 8)
    big = portrait_tensor(np.full((256, 256, 3), 255, np.uint8), 128)
    assert big.shape == (1, 3, 128, 128) and torch.allclose(big, torch.ones_like(big))
    with pytest.raises(ValueError):
        InversionConfig(w_steps=0)


def test_render_motion_drives_the_code(models, portrait):
    G, C = models
    result = invert(G, C, portrait, camera=CAMERA, config=FAST)
    coeffs = np.zeros((3, 70), np.float32)
    coeffs[:, 0] = [0.0, 2.0, -2.0]
    frames = render_motion(G, C, result, coeffs, np.stack([CAMERA] * 3), batch_size=2)
    assert frames.shape == (3, 128, 128, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])          # the expression moves the face
    static = render_motion(G, None, result, coeffs, np.stack([CAMERA] * 3))
    assert np.array_equal(static[0], static[1])              # no controller: no motion
    with pytest.raises(ValueError, match="cameras"):
        render_motion(G, C, result, coeffs, np.stack([CAMERA] * 2))


def test_apply_intrinsics_zero_is_identity_and_scales_k():
    cam = torch.from_numpy(np.stack([CAMERA, look_at_camera(0.3, 0.1)]))
    torch.testing.assert_close(apply_intrinsics(cam, torch.zeros(18)), cam)
    corr = torch.zeros(18)
    corr[0] = torch.atanh(torch.tensor(0.5))                 # fx x 1.5
    out = apply_intrinsics(cam, corr)
    torch.testing.assert_close(out[:, 16], cam[:, 16] * 1.5)
    torch.testing.assert_close(out[:, :16], cam[:, :16])
