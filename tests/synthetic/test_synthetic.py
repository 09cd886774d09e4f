"""SynthHeads: determinism, ground-truth consistency (landmarks, coefficients, cameras), shapes, validation."""
from __future__ import annotations

import numpy as np
import pytest

from otavatar import synthetic as S
from otavatar.camera import camera_from_coeffs, camera_from_pose, look_at_camera, split_label, validate_camera
from otavatar.coeffs import CONTROLLER_ANGLE, CONTROLLER_EXP, CONTROLLER_TRANS, to_controller_input

RES = 64


@pytest.fixture(scope="module")
def clip():
    return S.render(S.Identity.sample(3), S.talking_motion(seed=5, frames=6), resolution=128)


def test_identity_deterministic_and_distinct():
    assert S.Identity.sample(7) == S.Identity.sample(7)
    assert S.Identity.sample(7) != S.Identity.sample(8)


def test_motion_deterministic_smooth_and_in_range():
    a, b = S.talking_motion(seed=8, frames=60), S.talking_motion(seed=8, frames=60)
    np.testing.assert_array_equal(a.controls, b.controls)
    np.testing.assert_array_equal(a.angles, b.angles)
    assert not np.array_equal(a.controls, S.talking_motion(seed=9, frames=60).controls)
    assert a.controls.shape == (60, 8) and a.angles.shape == (60, 3) and a.translation.shape == (60, 3)
    assert a.controls.min() >= 0 and a.controls.max() <= 1
    assert np.abs(np.diff(a.angles, axis=0)).max() < 0.05        # smooth: < 0.05 rad between consecutive frames
    assert a.controls[:, 0].std() > 0.05                         # the jaw talks


def test_render_deterministic():
    who, motion = S.Identity.sample(1), S.talking_motion(seed=2, frames=2)
    a, b = S.render(who, motion, resolution=RES), S.render(who, motion, resolution=RES)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_clip_shapes_and_dtypes(clip):
    t = 6
    assert clip.images.shape == (t, 128, 128, 3) and clip.images.dtype == np.uint8
    assert clip.coeffs.shape == (t, 70) and clip.coeffs.dtype == np.float32
    assert clip.cameras.shape == (t, 25) and clip.landmarks.shape == (t, 68, 2)
    assert clip.masks.shape == (t, 128, 128) and clip.masks.dtype == bool
    assert clip.depths.shape == (t, 128, 128) and clip.parts.shape == (t, 128, 128)
    assert len(clip) == t
    assert (clip.images[~clip.masks] == 255).all()                # matted to white
    assert 0.2 < clip.masks.mean() < 0.8
    d = clip.depths[clip.masks]
    assert (d > 2.2).all() and (d < 3.0).all() and (clip.depths[~clip.masks] == 0).all()
    assert clip.landmarks.min() > 0 and clip.landmarks.max() < 128


@pytest.mark.parametrize("part, points", [(3, slice(36, 42)), (4, slice(42, 48)), (6, slice(48, 60))],
                         ids=["eye_right", "eye_left", "lips"])
def test_landmark_boxes_contain_rendered_features(clip, part, points):
    for k in range(len(clip)):
        ys, xs = np.nonzero(clip.parts[k] == part)
        if part in (3, 4) and len(xs) == 0:
            continue                                              # a closed eye shows no eye pixels
        assert len(xs) > 0
        lm = clip.landmarks[k, points]
        # pixel centres (j + 0.5) of the feature lie in the landmark box; 0.5 px: a rasterised edge
        assert xs.min() + 0.5 >= lm[:, 0].min() - 0.5 and xs.max() + 0.5 <= lm[:, 0].max() + 0.5
        assert ys.min() + 0.5 >= lm[:, 1].min() - 0.5 and ys.max() + 0.5 <= lm[:, 1].max() + 0.5
        cx, cy = lm[:, 0].mean(), lm[:, 1].mean()                 # and the feature is where the box is
        assert abs(xs.mean() + 0.5 - cx) < 2 and abs(ys.mean() + 0.5 - cy) < 2


def test_ibug_layout_left_right_and_top_down():
    clip = S.render(S.Identity.sample(4), S.neutral_motion(1), resolution=RES)
    lm = clip.landmarks[0]
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]           # image-left eye first, corners in order
    assert lm[8, 1] > lm[57, 1] > lm[51, 1] > lm[33, 1] > lm[27, 1] > lm[19, 1]  # chin, lips, nose, brow
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]
    np.testing.assert_allclose(lm[8, 0], RES / 2, atol=0.5)      # frontal: symmetric about the centre


def test_expression_moves_landmarks():
    who = S.Identity.sample(2)
    controls = np.zeros((3, 8))
    controls[1, S.CONTROLS.index("jaw_open")] = 1
    controls[2, S.CONTROLS.index("blink_left")] = 1
    motion = S.Motion(controls, np.zeros((3, 3)), np.zeros((3, 3)))
    lm = S.render(who, motion, resolution=RES).landmarks
    assert lm[1, 66, 1] - lm[1, 62, 1] > lm[0, 66, 1] - lm[0, 62, 1] + 1   # mouth opens
    assert lm[1, 8, 1] > lm[0, 8, 1] + 0.5                                  # chin drops
    assert abs(lm[2, 46, 1] - lm[2, 44, 1]) < 0.2 < abs(lm[0, 46, 1] - lm[0, 44, 1])  # left eye shut


def test_expression_basis_round_trip():
    basis = S.expression_basis()
    assert basis.shape == (64, 8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-12)
    c = np.random.default_rng(0).uniform(0, 1, (10, 8))
    exp = S.controls_to_exp(c)
    assert exp.shape == (10, 64) and exp.dtype == np.float32
    np.testing.assert_allclose(S.exp_to_controls(exp), c, atol=1e-5)
    motion = S.talking_motion(seed=1, frames=5)
    np.testing.assert_allclose(S.exp_to_controls(motion.coeffs()), motion.controls, atol=1e-5)  # from [T,70]


def test_coeffs_layout(clip):
    m = clip.motion
    np.testing.assert_array_equal(clip.coeffs[:, CONTROLLER_EXP], m.exp())
    np.testing.assert_array_equal(clip.coeffs[:, CONTROLLER_ANGLE], m.angles)
    np.testing.assert_array_equal(clip.coeffs[:, CONTROLLER_TRANS], m.translation)
    np.testing.assert_array_equal(to_controller_input(clip.coeffs), clip.coeffs)


def test_cameras_follow_camera_from_pose(clip):
    expect = camera_from_pose(clip.motion.angles, clip.motion.translation, focal=S.TRACKER_FOCAL, smooth=False,
                              radius=2.7)
    np.testing.assert_array_equal(clip.cameras, expect)
    np.testing.assert_allclose(camera_from_coeffs(clip.coeffs, focal=S.TRACKER_FOCAL, smooth=False), expect,
                               atol=1e-6)
    validate_camera(clip.cameras)
    pose, K = split_label(clip.cameras)
    np.testing.assert_allclose(np.linalg.norm(pose[:, :3, 3], axis=-1), 2.7, atol=1e-5)
    np.testing.assert_allclose(K[:, 0, 0], 4.2647, atol=1e-4)


def test_neutral_camera_is_frontal():
    c = S.neutral_motion(2).cameras()
    np.testing.assert_allclose(c, np.broadcast_to(look_at_camera(0.0, 0.0), (2, 25)), atol=0.02)


def test_render_other_camera_and_identity_swap():
    motion = S.talking_motion(seed=3, frames=2)
    side = look_at_camera(0.6, 0.0)
    a = S.render(S.Identity.sample(0), motion, resolution=RES, cameras=side)
    b = S.render(S.Identity.sample(1), motion, resolution=RES)
    np.testing.assert_array_equal(a.cameras, np.broadcast_to(side, (2, 25)))
    np.testing.assert_array_equal(a.coeffs, b.coeffs)              # same motion, other identity / view
    lm = a.landmarks[0]        # yaw 0.6: the camera moves toward world +x, facing the subject's left eye (42-47)
    assert lm[45, 0] - lm[42, 0] > lm[39, 0] - lm[36, 0] + 1
    assert not np.array_equal(a.images, b.images)


def test_validation_errors():
    who, motion = S.Identity.sample(0), S.neutral_motion(1)
    with pytest.raises(ValueError, match="seed"):
        S.Identity.sample(-1)
    with pytest.raises(ValueError, match="frames"):
        S.talking_motion(seed=0, frames=0)
    with pytest.raises(ValueError, match="resolution"):
        S.render(who, motion, resolution=4)
    with pytest.raises(TypeError, match="Identity"):
        S.render("me", motion)
    with pytest.raises(ValueError, match="controls"):
        S.controls_to_exp(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="same T"):
        S.Motion(np.zeros((2, 8)), np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="camera"):
        S.render(who, S.neutral_motion(2), resolution=RES, cameras=np.zeros((3, 25)))


def test_any_resolution_smoke():
    clip = S.render(S.Identity.sample(0), S.neutral_motion(1), resolution=96)
    assert clip.images.shape == (1, 96, 96, 3)


@pytest.mark.slow
def test_512_frame():
    clip = S.render(S.Identity.sample(0), S.talking_motion(seed=0, frames=1), resolution=512)
    small = S.render(S.Identity.sample(0), S.talking_motion(seed=0, frames=1), resolution=128)
    np.testing.assert_allclose(clip.landmarks / 4, small.landmarks, atol=1e-3)
    assert abs(clip.masks.mean() - small.masks.mean()) < 0.01
