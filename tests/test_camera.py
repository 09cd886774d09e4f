"""otavatar.camera: EG3D labels, look-at / orbit paths, OTAvatar pose conversion, validation."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otavatar import camera
from otavatar.camera import (
    CAMERA_PIVOT, CAMERA_RADIUS, FFHQ_FOCAL, camera_from_coeffs, camera_from_pose, camera_label,
    intrinsics, look_at_camera, orbit_cameras, pose_yaw_pitch, split_label, validate_camera,
)

CASE0 = Path(__file__).parent / "fixtures" / "parity" / "eg3d_case0.npz"
FLIP = np.diag([1.0, -1.0, -1.0])                 # OpenGL -> OpenCV camera axes
OTAVATAR_SCALE = 0.27 * 2.7 / 4                   # tracker units -> OTAvatar label units (spec 3.2)


@pytest.fixture(scope="module")
def grid() -> tuple[np.ndarray, np.ndarray]:
    """A 9x9 grid of (yaw, pitch), up to +-1.5 rad (pitch near the clamp at pi/2)."""
    yaw, pitch = np.meshgrid(np.linspace(-1.5, 1.5, 9), np.linspace(-1.5, 1.5, 9))
    return yaw.ravel(), pitch.ravel()


@pytest.fixture(scope="module", params=[(CAMERA_RADIUS, CAMERA_PIVOT), (1.8, (0.1, -0.2, 0.3))],
                ids=["ffhq", "custom"])
def sphere(request, grid):
    """(radius, pivot, poses [N,4,4] float64) of look_at_camera over the grid."""
    radius, pivot = request.param
    labels = look_at_camera(*grid, radius=radius, pivot=pivot)
    return radius, np.asarray(pivot), split_label(labels.astype(np.float64))[0]


def test_frontal_label_is_bit_identical_to_parity_fixture():
    expected = np.load(CASE0)["c"][0]
    label = look_at_camera(0.0, 0.0)
    assert label.dtype == np.float32 and label.shape == (25,)
    assert label.tobytes() == expected.tobytes()


def test_rotations_are_proper_and_orthonormal(sphere):
    rot = sphere[2][:, :3, :3]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-6)


def test_camera_centre_is_on_the_sphere_around_the_origin(sphere):
    radius, _, pose = sphere
    np.testing.assert_allclose(np.linalg.norm(pose[:, :3, 3], axis=-1), radius, rtol=1e-6)


def test_camera_looks_at_the_pivot(sphere):
    _, pivot, pose = sphere
    to_pivot = pivot - pose[:, :3, 3]
    forward = pose[:, :3, 2]                                      # camera +z in world coordinates
    np.testing.assert_allclose(np.cross(forward, to_pivot), 0.0, atol=1e-5)
    assert (np.einsum("ni,ni->n", forward, to_pivot) > 0).all()


def test_image_is_upright(sphere):
    down = sphere[2][:, :3, 1]                                    # camera +y (image down) in world
    assert (down[:, 1] < 0).all()


@pytest.mark.parametrize("yaw, pitch, axis, sign", [
    (0.4, 0.0, 0, +1), (-0.4, 0.0, 0, -1),                    # positive yaw: camera to world +x
    (0.0, 0.4, 1, -1), (0.0, -0.4, 1, +1),                    # positive pitch: camera moves DOWN
])
def test_angle_signs(yaw, pitch, axis, sign):
    centre = split_label(look_at_camera(yaw, pitch))[0][:3, 3]
    assert np.sign(centre[axis]) == sign


def test_pitch_sets_height_linearly():
    centre = split_label(look_at_camera(0.0, 0.3))[0][:3, 3]
    np.testing.assert_allclose(centre[1], -CAMERA_RADIUS * 2 * 0.3 / np.pi, rtol=1e-6)


def test_batched_matches_scalar_calls(grid):
    batched = look_at_camera(*grid)
    assert batched.shape == (len(grid[0]), 25)
    for i in (0, 17, 40, 80):
        np.testing.assert_array_equal(batched[i], look_at_camera(grid[0][i], grid[1][i]))


def test_pose_yaw_pitch_inverts_look_at(grid):
    yaw, pitch = pose_yaw_pitch(look_at_camera(*grid, radius=2.0, pivot=(0.0, 0.1, 0.0)))
    np.testing.assert_allclose(yaw, grid[0], atol=1e-5)
    np.testing.assert_allclose(pitch, grid[1], atol=1e-5)
    assert pose_yaw_pitch(look_at_camera(0.25, -0.1)) == pytest.approx((0.25, -0.1), abs=1e-6)


def test_orbit_shape_period_and_extremes():
    orbit = orbit_cameras(250, period=100)
    assert orbit.shape == (250, 25) and orbit.dtype == np.float32
    np.testing.assert_allclose(orbit[:150], orbit[100:250], atol=1e-6)
    yaw, pitch = pose_yaw_pitch(orbit)
    np.testing.assert_allclose([yaw[0], pitch[0]], [0.0, -0.05 + 0.5], atol=1e-6)
    np.testing.assert_allclose([yaw[25], pitch[25]], [0.5, -0.05], atol=1e-6)
    assert orbit_cameras(0).shape == (0, 25)


def test_intrinsics_and_label_round_trip():
    K = intrinsics(2.0, 3.0, 0.4, 0.6, 0.1)
    np.testing.assert_array_equal(K, np.array([[2.0, 0.1, 0.4], [0, 3.0, 0.6], [0, 0, 1]], dtype=np.float32))
    np.testing.assert_array_equal(intrinsics()[[0, 1], [0, 1]], np.float32(FFHQ_FOCAL))
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = np.arange(9).reshape(3, 3)
    labels = camera_label(poses, K)                               # one K shared by three poses
    assert labels.shape == (3, 25) and labels.dtype == np.float32
    back_pose, back_K = split_label(labels)
    np.testing.assert_array_equal(back_pose, poses.astype(np.float32))
    np.testing.assert_array_equal(back_K, np.broadcast_to(K, (3, 3, 3)))


def _ry(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def test_camera_from_pose_frontal_constants():
    pose, K = split_label(camera_from_pose(np.zeros(3), np.zeros(3)).astype(np.float64))
    np.testing.assert_allclose(pose[0, :3, :3], FLIP, atol=0)
    np.testing.assert_allclose(pose[0, :3, 3], np.array([0.0, 0.015, 10 * 0.27 + 0.161]) * 2.7 / 4, rtol=1e-6)
    np.testing.assert_allclose(K[0, [0, 1], [0, 1]], FFHQ_FOCAL * 1100 / 1050, rtol=1e-6)


def test_camera_from_pose_single_frame_is_finite():
    label = camera_from_pose([[0.1, -0.2, 0.05]], [[0.3, 0.1, -4.0]])
    assert label.shape == (1, 25) and np.isfinite(label).all()
    validate_camera(label)


def test_camera_from_pose_smoothing_by_hand():
    """3 frames, stored yaw 0 / 0.3 / 0.6 and x-translation 0 / 3 / 6: windows {0,1}, {0,1,2}, {1,2}."""
    yaws = np.array([0.0, 0.3, 0.6])
    angles = np.stack([np.zeros(3), yaws, np.zeros(3)], axis=1)
    translation = np.stack([[0.0, 3.0, 6.0], np.zeros(3), np.zeros(3)], axis=1)
    pose, _ = split_label(camera_from_pose(angles, translation).astype(np.float64))
    for i, frames in enumerate([[0, 1], [0, 1, 2], [1, 2]]):
        # stored y is negated (step 1) and R = (Rz Ry Rx)^T (step 2), so R = Ry(+stored y)
        rot = np.mean([_ry(yaws[j]) for j in frames], axis=0)
        t = np.array([3.0 * np.mean(frames), 0.0, -10.0])
        centre = -rot @ t * OTAVATAR_SCALE + np.array([0.0, 0.015, 0.161]) * 2.7 / 4
        np.testing.assert_allclose(pose[i, :3, :3], rot @ FLIP, atol=1e-6)
        np.testing.assert_allclose(pose[i, :3, 3], centre, atol=1e-5)
    unsmoothed, _ = split_label(camera_from_pose(angles, translation, smooth=False).astype(np.float64))
    np.testing.assert_allclose(unsmoothed[:, :3, :3], [_ry(y) @ FLIP for y in yaws], atol=1e-6)


def test_camera_from_pose_radius_rescales_distance():
    pose, _ = split_label(camera_from_pose(np.zeros((4, 3)), np.zeros((4, 3)), radius=2.5))
    np.testing.assert_allclose(np.linalg.norm(pose[:, :3, 3], axis=-1), 2.5, rtol=1e-6)


@pytest.mark.parametrize("width", [70, 257, 260])
def test_camera_from_coeffs_reads_angle_and_translation_columns(width):
    rng = np.random.default_rng(0)
    angles = (0.2 * rng.standard_normal((6, 3))).astype(np.float32)   # rows are read as float32
    trans = (0.1 * rng.standard_normal((6, 3))).astype(np.float32)
    rows = rng.standard_normal((6, width))
    cols = (slice(64, 67), slice(67, 70)) if width == 70 else (slice(224, 227), slice(254, 257))
    rows[:, cols[0]], rows[:, cols[1]] = angles, trans
    np.testing.assert_array_equal(camera_from_coeffs(rows), camera_from_pose(angles, trans, radius=CAMERA_RADIUS))


def _scaled(c: np.ndarray, entries: list[int], factor: float) -> np.ndarray:
    return c * np.where(np.isin(np.arange(25), entries), factor, 1.0)


X_AXIS = [0, 4, 8]                                                # first rotation column in the label


@pytest.mark.parametrize("mutate, batch, match", [
    (lambda c: c[:24], None, r"shape \[25\] or \[N,25\], got \[24\]"),
    (lambda c: np.stack([c, c])[None], None, r"got \[1, 2, 25\]"),
    (lambda c: _scaled(c, [3], np.nan), None, "label 0 has non-finite"),
    (lambda c: _scaled(c, X_AXIS, 1.01), None, "not orthonormal"),
    (lambda c: _scaled(c, X_AXIS, -1.0), None, "reflection"),
    (lambda c: _scaled(c, [20], -1.0), None, "non-positive focal"),
    (lambda c: np.concatenate([c[:16].reshape(4, 4).T.ravel(), c[16:]]), None, "transposed"),
    (lambda c: np.stack([c, c]), 3, "expected 1 or 3 camera labels, got 2"),
    (lambda c: "frontal", None, "numeric"),
])
def test_validate_camera_errors(mutate, batch, match):
    with pytest.raises(ValueError, match=match):
        validate_camera(mutate(look_at_camera(0.3, 0.1).astype(np.float64)), batch=batch)


def test_validate_camera_accepts_and_broadcasts():
    label = look_at_camera(0.2, -0.1)
    out = validate_camera(label.tolist(), batch=4)
    assert out.shape == (4, 25) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.broadcast_to(label, (4, 25)))
    np.testing.assert_array_equal(validate_camera(orbit_cameras(5)), orbit_cameras(5))


def test_camera_and_coeffs_do_not_import_torch():
    code = "import sys, otavatar.camera, otavatar.coeffs; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_public_api_is_declared():
    assert all(hasattr(camera, name) for name in camera.__all__)
