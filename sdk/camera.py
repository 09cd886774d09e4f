"""EG3D camera labels: 25 numbers per view (spec 1.7, 3.2, 4.2).

A label is the 4x4 camera-to-world matrix (16 numbers, row-major) followed by the normalised 3x3 intrinsics
(9 numbers, row-major). Conventions, fixed by the published weights:

* world: y up, the head faces +z, the head sits near the origin; orbit pivot (0, 0, 0.2), radius 2.7;
* camera axes (OpenCV): x right, y down, z forward (the viewing direction), so the frontal camera at
  (0, 0, 2.7) has rotation exactly diag(1, -1, -1);
* intrinsics normalised by the image size: principal point (0.5, 0.5), FFHQ focal fx = fy = 4.2647.

numpy only (no torch): the torch-free runtime and the gRPC server use this module.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from otavatar.coeffs import CONTROLLER_ANGLE, CONTROLLER_TRANS, to_controller_input

__all__ = [
    "FFHQ_FOCAL", "CAMERA_RADIUS", "CAMERA_PIVOT", "LABEL_DIM",
    "intrinsics", "camera_label", "split_label", "look_at_camera", "orbit_cameras",
    "camera_from_pose", "camera_from_coeffs", "validate_camera", "pose_yaw_pitch",
]

FFHQ_FOCAL = 4.2647                # = 2985.29 / 700: EG3D's FFHQ focal, normalised by the image size
CAMERA_RADIUS = 2.7                # EG3D's average camera distance from the world origin
CAMERA_PIVOT = (0.0, 0.0, 0.2)     # the point orbit cameras look at
LABEL_DIM = 25

# look_at_camera computes in float64; entries this small are rounding noise of cos(pi/2) and friends,
# snapped to exactly 0 so the frontal label equals the parity fixture's `c` bit for bit.
_SNAP = 1e-12
# The angle clamp of EG3D's look-at sampler: keeps the camera off the poles, where "up" is undefined.
_POLE_EPS = 1e-5
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])

# OTAvatar's tracker -> EG3D constants (spec 3.2): the tracker's camera sits 10 units from the head;
# 0.27 scales tracker units to EG3D units; (0.015, 0.161) re-centres on the head; 2.7/4 is OTAvatar's
# final rescale; the tracker focal (512-px image) maps to the normalised FFHQ focal through 1050.
_TRACKER_DISTANCE = 10.0
_TRACKER_SCALE = 0.27
_TRACKER_OFFSET_Y = 0.015
_TRACKER_OFFSET_Z = 0.161
_OTAVATAR_RESCALE = 2.7 / 4.0
_TRACKER_FOCAL_REF = 1050.0

_ROTATION_ATOL = 1e-3


def intrinsics(fx: float = FFHQ_FOCAL, fy: float | None = None, cx: float = 0.5, cy: float = 0.5,
               skew: float = 0.0) -> NDArray[np.float32]:
    """Normalised 3x3 intrinsics [[fx, skew, cx], [0, fy, cy], [0, 0, 1]] as float32; fy defaults to fx."""
    fy = fx if fy is None else fy
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def camera_label(cam2world: ArrayLike, K: ArrayLike | None = None) -> NDArray[np.float32]:
    """Pack cam2world [4,4] or [N,4,4] and K [3,3] or [N,3,3] (default: FFHQ) into [25] or [N,25] float32.

    A single K is shared by a batch of poses and vice versa.
    """
    pose = np.asarray(cam2world, dtype=np.float64)
    K = intrinsics() if K is None else np.asarray(K, dtype=np.float64)
    if pose.shape[-2:] != (4, 4) or pose.ndim > 3:
        raise ValueError(f"cam2world must have shape [4,4] or [N,4,4], got {list(pose.shape)}")
    if K.shape[-2:] != (3, 3) or K.ndim > 3:
        raise ValueError(f"K must have shape [3,3] or [N,3,3], got {list(K.shape)}")
    batch = np.broadcast_shapes(pose.shape[:-2], K.shape[:-2])
    flat_pose = np.broadcast_to(pose, (*batch, 4, 4)).reshape(*batch, 16)
    flat_K = np.broadcast_to(K, (*batch, 3, 3)).reshape(*batch, 9)
    return np.concatenate([flat_pose, flat_K], axis=-1).astype(np.float32)


def split_label(c: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Unpack labels [..., 25] into (cam2world [..., 4, 4], K [..., 3, 3]), keeping the dtype."""
    c = np.asarray(c)
    if c.shape[-1:] != (LABEL_DIM,):
        raise ValueError(f"camera label must have {LABEL_DIM} numbers in its last axis, got shape {list(c.shape)}")
    return c[..., :16].reshape(*c.shape[:-1], 4, 4), c[..., 16:].reshape(*c.shape[:-1], 3, 3)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """cam2world [N,4,4] (float64) of cameras at position [N,3] aiming at target [3], world up +y."""
    forward = _normalize(target - position)                           # [N,3] camera +z
    up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), forward.shape)
    right = -_normalize(np.cross(up, forward))                        # camera +x
    down = _normalize(np.cross(forward, right))                       # camera +y (OpenCV: y points down)
    pose = np.tile(np.eye(4), (len(position), 1, 1))
    pose[:, :3, :3] = np.stack([right, down, forward], axis=-1)       # columns = camera axes in world
    pose[:, :3, 3] = position
    return pose


def look_at_camera(yaw: ArrayLike = 0.0, pitch: ArrayLike = 0.0, *, radius: float = CAMERA_RADIUS,
                   pivot: ArrayLike = CAMERA_PIVOT, fx: float = FFHQ_FOCAL) -> NDArray[np.float32]:
    """Labels of cameras on a sphere around the origin, aimed at `pivot` (EG3D's LookAtPoseSampler).

    yaw and pitch are radians relative to the frontal view (EG3D passes pi/2 + yaw, pi/2 + pitch).
    Positive yaw moves the camera toward world +x (the subject's left side); positive pitch moves the camera
    DOWN (world -y, looking up at the chin); negative pitch looks down from above. Pitch is EG3D's
    "vertical" angle, not the elevation: the camera height is y = -radius * 2 * pitch / pi, i.e.
    elevation = -arcsin(2 * pitch / pi) (about -0.64 * pitch for small angles); |pitch| is effectively
    clamped just below pi/2.

    Scalars give [25]; 1-D arrays (broadcast against each other) give [N,25]. float32, computed in float64;
    look_at_camera(0, 0) is exactly [1,0,0,0, 0,-1,0,0, 0,0,-1,2.7, 0,0,0,1, K].
    """
    yaw, pitch = np.broadcast_arrays(np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64))
    if yaw.ndim > 1:
        raise ValueError(f"yaw and pitch must be scalars or 1-D arrays, got shape {list(yaw.shape)}")
    h = np.pi / 2 + yaw.reshape(-1)                                   # [N] horizontal angle
    v = np.clip(np.pi / 2 + pitch.reshape(-1), _POLE_EPS, np.pi - _POLE_EPS)
    phi = np.arccos(1.0 - 2.0 * v / np.pi)                            # polar angle from +y
    position = radius * np.stack(
        [np.sin(phi) * np.cos(np.pi - h), np.cos(phi), np.sin(phi) * np.sin(np.pi - h)], axis=-1)
    pose = _look_at(position, np.asarray(pivot, dtype=np.float64))
    pose[np.abs(pose) < _SNAP] = 0.0
    labels = camera_label(pose, intrinsics(fx))                       # [N,25]
    return labels[0] if yaw.ndim == 0 else labels


def orbit_cameras(n_frames: int, *, yaw_range: float = 0.5, pitch_range: float = 0.5,
                  pitch_offset: float = -0.05, period: int = 100, radius: float = CAMERA_RADIUS,
                  pivot: ArrayLike = CAMERA_PIVOT, fx: float = FFHQ_FOCAL) -> NDArray[np.float32]:
    """[n_frames,25] labels of OTAvatar's `--rotate` path (spec 4.2 step 6).

    Frame i: yaw = yaw_range * sin(2 pi i / period), pitch = pitch_offset + pitch_range * cos(2 pi i / period)
    (relative to frontal; the default offset -0.05 starts slightly above the head, see look_at_camera).
    """
    if n_frames < 0 or period <= 0:
        raise ValueError(f"need n_frames >= 0 and period > 0, got n_frames={n_frames}, period={period}")
    phase = 2.0 * np.pi * np.arange(n_frames) / period
    return look_at_camera(yaw_range * np.sin(phase), pitch_offset + pitch_range * np.cos(phase),
                          radius=radius, pivot=pivot, fx=fx).reshape(n_frames, LABEL_DIM)


def _euler_rotation(angles: np.ndarray) -> np.ndarray:
    """Rz @ Ry @ Rx [T,3,3] for angles [T,3] = (x, y, z) radians, right-handed axis rotations."""
    cos, sin = np.cos(angles), np.sin(angles)                         # [T,3]
    one, zero = np.ones(len(angles)), np.zeros(len(angles))

    def rot(rows: list[list[np.ndarray]]) -> np.ndarray:
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    rx = rot([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = rot([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = rot([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _smooth3(x: np.ndarray) -> np.ndarray:
    """Mean over frames [i-1, i+2) clipped to [0, T), along axis 0.

    The published code clips the window to [0, T-1): its last frame is never averaged in and a 1-frame clip
    averages nothing (a NaN camera, OTAvatar issue #25). Clipping to [0, T) fixes both; the weights do not
    depend on it (they never saw a 1-frame clip).
    """
    t = len(x)
    lo = np.maximum(np.arange(t) - 1, 0)
    hi = np.minimum(np.arange(t) + 2, t)
    csum = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)])  # [T+1, ...]
    count = (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))
    return (csum[hi] - csum[lo]) / count


def _as_frames(name: str, a: ArrayLike, t: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0 or (t is not None and len(a) != t):
        want = "[T,3] with T >= 1" if t is None else f"[{t},3]"
        raise ValueError(f"{name} must have shape {want} (or [3] for one frame), got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values (first at frame {int(np.argwhere(~np.isfinite(a))[0, 0])})")
    return a


def camera_from_pose(angles: ArrayLike, translation: ArrayLike, *, focal: ArrayLike = 1100.0,
                     smooth: bool = True, radius: float | None = None) -> NDArray[np.float32]:
    """OTAvatar's head pose -> EG3D label conversion (spec 3.2), [T,25] float32.

    angles [T,3]: Euler angles (x, y, z) in radians as OTAvatar stores them (the LMDB 'condition' columns,
    i.e. the tracker's negated Euler angles); translation [T,3]: the head translation in the tracker's camera
    frame (camera 10 units away); focal: the tracker focal in pixels of the 512-px image (scalar or [T]).
    smooth=True averages rotation matrices and translations over 3 frames, as in training. radius=None keeps
    OTAvatar's camera distance; a number rescales every camera centre to that distance from the origin
    (EG3D's FFHQ practice), for poses whose translation does not come from OTAvatar's tracker.
    """
    angles = _as_frames("angles", angles)
    t = _as_frames("translation", translation, len(angles))
    flipped = angles * np.array([-1.0, -1.0, 1.0])                   # step 1
    rot = np.swapaxes(_euler_rotation(flipped), -1, -2)               # step 2: [T,3,3] (Rz Ry Rx)^T
    if smooth:
        # step 3: element-wise mean of the matrices, as published (not re-orthonormalised; the result is
        # off a rotation by ~(per-frame angle change)^2, within validate_camera's 1e-3 below ~0.03 rad/frame)
        rot, t = _smooth3(rot), _smooth3(t)
    t = t - np.array([0.0, 0.0, _TRACKER_DISTANCE])                   # step 4
    centre = -np.einsum("tij,tj->ti", rot, t) * _TRACKER_SCALE        # [T,3]
    centre += np.array([0.0, _TRACKER_OFFSET_Y, _TRACKER_OFFSET_Z])
    centre *= _OTAVATAR_RESCALE                                       # step 6
    if radius is not None:
        centre *= radius / np.linalg.norm(centre, axis=-1, keepdims=True)
    pose = np.tile(np.eye(4), (len(rot), 1, 1))
    pose[:, :3, :3] = rot @ _OPENGL_TO_OPENCV                        # step 5
    pose[:, :3, 3] = centre
    K = np.tile(intrinsics(0.0).astype(np.float64), (len(rot), 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = FFHQ_FOCAL * np.broadcast_to(focal, len(rot)) / _TRACKER_FOCAL_REF
    return camera_label(pose, K)


def camera_from_coeffs(rows: ArrayLike, *, focal: ArrayLike = 1100.0, smooth: bool = True,
                       radius: float | None = CAMERA_RADIUS) -> NDArray[np.float32]:
    """Labels [T,25] from Deep3DFaceRecon rows [T,257|260] (or controller rows [T,70]) via camera_from_pose.

    An approximation of OTAvatar's data pipeline: OTAvatar takes the camera from a separate per-video
    landmark tracker, not from these coarse 3DMM angles (224:227) and translation (254:257). The angles are
    used as given, as if they were the tracker's stored angles (the roll sign convention of the two fits is
    not verified). Deep3DFaceRecon's translation puts the head near its camera's origin, which OTAvatar's
    constants would turn into a camera only ~1.93 from the head, in front of the render's depth range; hence
    radius defaults to CAMERA_RADIUS (camera centres rescaled to 2.7 from the origin, as EG3D does for
    Deep3DFaceRecon poses). Pass radius=None for the unnormalised OTAvatar constants.
    """
    x = to_controller_input(rows)                                     # [T,70]
    return camera_from_pose(x[:, CONTROLLER_ANGLE], x[:, CONTROLLER_TRANS], focal=focal, smooth=smooth,
                            radius=radius)


def _rotation_problem(rot: np.ndarray, atol: float) -> str | None:
    """Why the rotations [N,3,3] are not rotations (None if they are)."""
    gram_err = np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max(axis=(-1, -2))  # [N]
    if (bad := np.flatnonzero(gram_err > atol)).size:
        return f"rotation of label {bad[0]} is not orthonormal (max |R R^T - I| = {gram_err[bad[0]]:.3g} > {atol})"
    if (bad := np.flatnonzero(np.linalg.det(rot) < 0)).size:
        return f"rotation of label {bad[0]} has determinant -1 (a reflection, not a rotation)"
    return None


def validate_camera(c: ArrayLike, *, batch: int | None = None, atol: float = _ROTATION_ATOL) -> NDArray[np.float32]:
    """Check camera labels and return them as float32 [N,25].

    Accepts [25] or [N,25] array-likes. With `batch`, a single label ([25] or [1,25]) is repeated to
    [batch,25] and any other N must equal batch. Raises ValueError naming the problem: wrong shape,
    non-finite values, a rotation that is not orthonormal within atol (or is a reflection), a bottom row that
    is not [0,0,0,1] / [0,0,1] (usually a column-major label), or a non-positive focal length.
    """
    try:
        arr = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"camera label must be numeric, got {type(c).__name__}: {err}") from None
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != LABEL_DIM:
        raise ValueError(f"camera label must have shape [25] or [N,25], got {list(np.shape(c))}")
    if batch is not None:
        arr = _match_batch(arr, batch)
    if not np.isfinite(arr).all():
        raise ValueError(f"camera label {int(np.argwhere(~np.isfinite(arr))[0, 0])} has non-finite values")
    pose, K = split_label(arr)
    if not np.allclose(pose[:, 3], [0, 0, 0, 1], atol=atol) or not np.allclose(K[:, 2], [0, 0, 1], atol=atol):
        raise ValueError("camera label bottom rows must be [0,0,0,1] (cam2world) and [0,0,1] (intrinsics); "
                         "labels are row-major: is the matrix transposed?")
    if (problem := _rotation_problem(pose[:, :3, :3], atol)) is not None:
        raise ValueError(problem)
    if (bad := np.flatnonzero((K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0))).size:
        raise ValueError(f"camera label {bad[0]} has non-positive focal length "
                         f"(fx={K[bad[0], 0, 0]:.6g}, fy={K[bad[0], 1, 1]:.6g})")
    return arr.astype(np.float32)


def _match_batch(arr: np.ndarray, batch: int) -> np.ndarray:
    if len(arr) == 1:
        return np.repeat(arr, batch, axis=0)
    if len(arr) != batch:
        raise ValueError(f"expected 1 or {batch} camera labels, got {len(arr)}")
    return arr


def pose_yaw_pitch(c: ArrayLike) -> tuple[float | np.ndarray, float | np.ndarray]:
    """(yaw, pitch) in radians relative to frontal, the inverse of look_at_camera (any radius or pivot).

    Reads only the camera centre, so for other labels it gives the look_at_camera angles of the same
    camera position. [25] gives two floats, [N,25] two [N] arrays.
    """
    pose, _ = split_label(np.asarray(c, dtype=np.float64))
    x, y, z = np.moveaxis(pose[..., :3, 3], -1, 0)
    yaw = np.arctan2(x, z)
    pitch = -0.5 * np.pi * y / np.sqrt(x * x + y * y + z * z)          # cos(phi) = y / r, v = pi/2 (1 - cos phi)
    if np.ndim(yaw) == 0:
        return float(yaw), float(pitch)
    return yaw, pitch
