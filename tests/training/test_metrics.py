"""Reenactment metrics on known inputs (and SSIM against scikit-image when it is installed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from otavatar.training.metrics import (LANDMARK_REGIONS, expression_error, landmark_distance,
                                       landmark_distance_per_point, psnr, region_means, similarity_registration,
                                       ssim)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_known_values(images):
    a, _ = images
    assert psnr(a, a) == math.inf
    x = np.zeros((8, 8, 3))
    assert psnr(x, x + 0.1) == pytest.approx(20.0)            # MSE 0.01 -> 20 dB
    # uint8 and [0,1] float give the same number
    b = a.copy()
    b[0, 0, 0, 0] ^= 1
    assert psnr(a, b) == pytest.approx(psnr(a / 255.0, b / 255.0))


def test_ssim_identity_and_bounds(images):
    a, b = images
    assert ssim(a, a) == pytest.approx(1.0)
    assert 0.0 < ssim(a, b) < 1.0
    assert ssim(a[0], b[0]) == pytest.approx(ssim(a[0:1], b[0:1]))
    assert ssim(a, 255 - a) < 0.0                              # anti-correlated structure


def test_ssim_matches_skimage(images):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = images
    ours = ssim(a[0], b[0])
    ref = metrics.structural_similarity(a[0] / 255.0, b[0] / 255.0, channel_axis=-1, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ours == pytest.approx(ref, abs=1e-9)
    grey = metrics.structural_similarity(a[0, ..., 0] / 255.0, b[0, ..., 0] / 255.0, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ssim(a[0, ..., 0], b[0, ..., 0]) == pytest.approx(grey, abs=1e-9)


def test_landmark_and_expression_error():
    t = np.zeros((2, 68, 2))
    p = t.copy()
    p[..., 0] += 3.0
    p[..., 1] += 4.0
    assert landmark_distance(p, t) == pytest.approx(5.0)
    assert landmark_distance(t, t) == 0.0
    p[1, 50] += [6.0, 8.0]                        # one mouth point off by 10 more px in one of the 2 frames
    per_point = landmark_distance_per_point(p, t)
    assert per_point.shape == (68,) and per_point[50] == pytest.approx(10.0) and per_point[0] == pytest.approx(5.0)
    assert landmark_distance(p, t) == pytest.approx(per_point.mean())
    assert landmark_distance_per_point(p[0], t[0]).shape == (68,)
    assert sorted(i for r in LANDMARK_REGIONS.values() for i in r) == list(range(68))
    assert region_means(per_point)["mouth"] == pytest.approx(5.0 + 5.0 / 20)    # point 50's 10 px among 20
    with pytest.raises(ValueError, match=r"\[68\]"):
        region_means(per_point[:10])
    c = np.zeros((3, 8))
    assert expression_error(c + 0.25, c) == pytest.approx(0.25)
    assert expression_error(c[0], c[0] - 1) == pytest.approx(1.0)


def _similar(points, scale, degrees, shift):
    """points [...,K,2] scaled and rotated about (64, 64), then shifted."""
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (points - 64.0) @ rot.T * scale + 64.0 + np.asarray(shift)


def test_similarity_registration_recovers_the_similarity_and_keeps_the_shape():
    rng = np.random.default_rng(1)
    truth = rng.normal(64.0, 12.0, (3, 68, 2))
    pred = _similar(truth, 0.8, 4.0, [3.0, -2.0])                      # a smaller, turned, moved copy
    reg = similarity_registration(pred, truth)
    assert reg.scale == pytest.approx(np.full(3, 1.25)) and reg.rotation_deg == pytest.approx(np.full(3, -4.0))
    assert reg.shift == pytest.approx(truth.mean(1) - pred.mean(1))
    assert landmark_distance(pred, truth) > 2.0
    assert landmark_distance(reg.aligned, truth) == pytest.approx(0.0, abs=1e-9)
    # a change of shape survives the alignment: one mouth point 10 px off in one frame
    bent = pred.copy()
    bent[1, 50] += [6.0, 8.0]
    per_point = landmark_distance_per_point(similarity_registration(bent, truth).aligned, truth)
    assert per_point.argmax() == 50 and per_point[50] > 2.0 and np.delete(per_point, 50).max() < 0.5
    one = similarity_registration(pred[0], truth[0])                   # [K,2]: one frame
    assert one.aligned.shape == (68, 2) and one.shift.shape == (2,) and float(one.scale) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="coincide"):
        similarity_registration(np.zeros((68, 2)), truth[0])
    with pytest.raises(ValueError, match="at least 2"):
        similarity_registration(truth[:, :1], truth[:, :1])
    with pytest.raises(ValueError, match=r"\[N,K,2\]"):
        similarity_registration(truth, truth[..., :1])


@pytest.mark.parametrize("call, match", [
    (lambda: psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3))), "same shape"),
    (lambda: psnr(np.full((4, 4), 2.0), np.zeros((4, 4))), r"\[0,1\]"),
    (lambda: psnr(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32)), "uint8"),
    (lambda: ssim(np.zeros((8, 8)), np.zeros((8, 8))), "at least 11"),
    (lambda: landmark_distance(np.zeros((2, 68, 2)), np.zeros((2, 68, 3))), r"\[N,K,2\]"),
    (lambda: expression_error(np.zeros((2, 7)), np.zeros((2, 7))), r"\[N,8\]"),
])
def test_validation(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
