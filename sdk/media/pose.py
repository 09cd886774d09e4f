"""Approximate head pose from 5 landmarks, as an EG3D camera: a fallback for portraits without 3DMM coefficients.

The approximation, stated plainly:

* the head is a rigid mean 3D template of 5 points (FACE_TEMPLATE below), the same for every person;
* the camera is EG3D's look-at camera (radius 2.7 around pivot (0, 0, 0.2), FFHQ focal 4.2647,
  `otavatar.camera.look_at_camera`): only yaw and pitch are estimated; roll, scale and position in the image
  are absorbed by a 2D similarity (the FFHQ crop levels the eyes, so the crop's roll is ~0 anyway);
* the fit minimises the squared distance between the landmarks and the template projected by the
  candidate camera (full perspective) and then moved by the best 2D similarity (closed form), weighted by
  per-point noise (mouth corners, which move with expression, count ~1/9 of an eye), plus Gaussian priors
  toward frontal (yaw 1.0 rad, pitch 0.25 rad), over a 0.05-rad grid of yaw in [-1.2, 1.2] and pitch in
  [-0.8, 0.8] refined on a 0.005-rad grid (a maximum a posteriori estimate).

What that costs: yaw comes mostly from where the nose tip sits between the eyes and mouth corners, pitch from
the nose's height between eye line and mouth line; a person whose nose is longer or shorter than the template's
reads as pitched down or up by a few degrees (about 0.05 rad per 10% of nose height), and expressions that
move the mouth corners (a wide smile) shift pitch too, hence their low weight and the pitch prior. On
SynthHeads (whose heads have flatter noses than the template) the estimate follows the true yaw and pitch
with correlation > 0.98 but under-reads yaw by about half; the priors shrink clean template views toward
frontal by up to ~0.03 rad at 0.3 rad. Good enough to start an inversion, which refines the
camera's effect through the generator; pass the real camera when you have one.

FACE_TEMPLATE, world units of EG3D's FFHQ space (y up, the face looks toward +z), order left eye, right eye,
nose tip, left and right mouth corner as seen in the image (image-left = world -x = the subject's right):
our own approximate adult head, not measured from any dataset. Proportions in millimetres, origin at the
eye midpoint: eyes at x = -+31.5 (63 mm interpupillary distance); nose tip 38 mm below the eye line and 30 mm in
front of the eyes; mouth corners at x = -+25, 68 mm below the eye line, 8 mm in front of the eyes. Scale and
placement: 2.326e-3 units per mm and the eyes at (y, z) = (0.0158, 0.2), chosen so the frontal EG3D camera sees
the template's eyes exactly where align_portrait puts them: x = 0.5 -+ 0.125 and y = 0.473 of the crop
(FFHQ's square is 4 interpupillary distances wide for these proportions; the eyes, 2.5 units from the
camera, span 0.25 of the width: 4.2647 * 0.1466 / 2.5). So an aligned frontal portrait gives yaw = pitch = 0.

numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from otavatar.camera import look_at_camera, split_label

__all__ = ["PoseEstimate", "estimate_pose", "project_template", "FACE_TEMPLATE"]

_MM = 2.326e-3                 # world units per millimetre (derivation in the module docstring)
_EYE_Y, _EYE_Z = 0.0158, 0.2
FACE_TEMPLATE = np.array([     # [5,3] world units
    [-31.5 * _MM, _EYE_Y, _EYE_Z],
    [31.5 * _MM, _EYE_Y, _EYE_Z],
    [0.0, _EYE_Y - 38.0 * _MM, _EYE_Z + 30.0 * _MM],
    [-25.0 * _MM, _EYE_Y - 68.0 * _MM, _EYE_Z + 8.0 * _MM],
    [25.0 * _MM, _EYE_Y - 68.0 * _MM, _EYE_Z + 8.0 * _MM],
], dtype=np.float64)
FACE_TEMPLATE.setflags(write=False)

_COARSE_STEP, _FINE_STEP = 0.05, 0.005
_YAW_LIMIT, _PITCH_LIMIT = 1.2, 0.8          # radians; beyond ~70 degrees of yaw one eye is hidden anyway
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
# Landmark noise, in eye distances: eyes and nose tip are rigid (0.02: detector jitter and anatomy); mouth
# corners move with expression (0.06: a broad smile lifts and widens them by ~0.2 eye distances, which an
# unweighted fit reads as the head pitched 0.8 rad down; measured on scikit-image's astronaut photo).
_WEIGHTS = 1.0 / np.array([0.02, 0.02, 0.02, 0.06, 0.06]) ** 2
# Priors (radians, 1 sigma): portraits are mostly frontal; pitch is the weaker cue from 5 points (it hinges on
# the nose's height between eyes and mouth, which varies between people), so its prior is tighter. Cost of
# the priors: a clean template view is pulled toward frontal by up to ~0.03 rad at |angle| = 0.3.
_YAW_PRIOR, _PITCH_PRIOR = 1.0, 0.25


@dataclass(frozen=True)
class PoseEstimate:
    """An approximate head pose.

    angles: the coefficient-convention Euler angles (x = pitch, y = yaw, z = roll; radians, as in
    Deep3DFaceRecon rows 224:227 and OTAvatar's LMDB) of the camera below, i.e.
    camera_from_pose(angles, translation, smooth=False, radius=2.7) has the same rotation as `camera`;
    translation: zeros (the aligned crop centres the head; the controller saw tracker translations near 0);
    camera: the EG3D label look_at_camera(yaw, pitch); yaw, pitch: its look-at angles (radians);
    roll: the in-image rotation of the face (radians, positive = clockwise on screen), not in the camera;
    rms_px: root-mean-square landmark residual of the fit, in pixels (large = not a face-like layout).
    """
    angles: NDArray[np.float32] = field(repr=False)        # [3]
    translation: NDArray[np.float32] = field(repr=False)   # [3]
    camera: NDArray[np.float32] = field(repr=False)        # [25]
    yaw: float
    pitch: float
    roll: float
    rms_px: float


def project_template(yaw: ArrayLike = 0.0, pitch: ArrayLike = 0.0, image_size: int = 512) -> NDArray[np.float64]:
    """FACE_TEMPLATE seen by look_at_camera(yaw, pitch), in pixels of an image_size² image: [5,2] or [N,5,2]."""
    cams = np.atleast_2d(look_at_camera(yaw, pitch)).astype(np.float64)     # [N,25]
    pose, K = split_label(cams)
    rot, centre = pose[:, :3, :3], pose[:, :3, 3]
    cam = np.einsum("nji,nkj->nki", rot, FACE_TEMPLATE[None] - centre[:, None])  # R^T (p - c): [N,5,3]
    uv = np.einsum("nij,nkj->nki", K, cam / cam[..., 2:3])[..., :2] * image_size
    return uv[0] if np.ndim(yaw) == 0 and np.ndim(pitch) == 0 else uv


def _fit_cost(src: np.ndarray, dst: np.ndarray, yaw: np.ndarray, pitch: np.ndarray):
    """MAP cost of candidate poses: src [N,5,2] projected template, dst [5,2] landmarks.

    The best weighted 2D similarity (closed form, complex numbers: a = scale * e^{i roll}) maps each
    projection onto the landmarks; the residual is measured in template eye distances, weighted by the
    per-point noise, and Gaussian priors on yaw and pitch are added. Returns (a [N], cost [N], rms [N]), rms
    the unweighted residual in dst's units.
    """
    w = _WEIGHTS
    p = src[..., 0] + 1j * src[..., 1]
    q = dst[:, 0] + 1j * dst[:, 1]
    p = p - (p * w).sum(axis=-1, keepdims=True) / w.sum()
    q = q - (q * w).sum() / w.sum()
    a = (w * np.conj(p) * q).sum(axis=-1) / (w * np.abs(p) ** 2).sum(axis=-1)   # [N]
    res = np.abs(q - a[:, None] * p) ** 2                                       # [N,5]
    eye = np.abs(a) * np.abs(p[:, 1] - p[:, 0])                                 # eye distance in dst units
    cost = (w * res).sum(axis=-1) / eye ** 2 + (yaw / _YAW_PRIOR) ** 2 + (pitch / _PITCH_PRIOR) ** 2
    return a, cost, np.sqrt(res.mean(axis=-1))


def _grid_search(landmarks: np.ndarray, yaws: np.ndarray, pitches: np.ndarray):
    yy, pp = np.meshgrid(yaws, pitches, indexing="ij")
    yy, pp = yy.ravel(), pp.ravel()
    a, cost, rms = _fit_cost(project_template(yy, pp, 1), landmarks, yy, pp)
    best = int(np.argmin(cost))
    return yy[best], pp[best], a[best], rms[best]


def _coefficient_angles(camera: np.ndarray) -> np.ndarray:
    """Inverse of camera_from_pose's rotation: (x, y, z) with euler(-x, -y, z) = (R_cv @ flip)^T."""
    pose, _ = split_label(camera.astype(np.float64))
    m = (pose[:3, :3] @ _OPENGL_TO_OPENCV).T                                # = Rz(c) Ry(b) Rx(a)
    b = -np.arcsin(np.clip(m[2, 0], -1.0, 1.0))
    a = np.arctan2(m[2, 1], m[2, 2])
    c = np.arctan2(m[1, 0], m[0, 0])
    return np.array([-a, -b, c])


def estimate_pose(landmarks5: ArrayLike, image_size: int | tuple[int, int] = 512) -> PoseEstimate:
    """Approximate yaw and pitch of a face from its 5 landmarks ([5,2] pixels: left eye, right eye, nose,
    left and right mouth corner, as detect_face / align_portrait give them) -> PoseEstimate with an EG3D
    camera. image_size: the image's side (or (width, height)); only used to report rms_px relative to it and to
    validate the landmarks, since the similarity absorbs position and scale. See the module docstring for the
    template and the approximation."""
    lm = np.asarray(landmarks5, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks5 must have shape [5,2], got {list(lm.shape)}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks5 has non-finite values")
    size = np.broadcast_to(np.asarray(image_size, dtype=np.float64), (2,))
    if not (size > 0).all():
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    if np.ptp(lm, axis=0).max() < 1e-6 * size.max():
        raise ValueError("landmarks5 are all at one point; not a face")
    # normalise by the image size so the fit's numbers do not depend on resolution
    norm = lm / size.max()
    yaw, pitch, _, _ = _grid_search(norm, np.arange(-_YAW_LIMIT, _YAW_LIMIT + 1e-9, _COARSE_STEP),
                                    np.arange(-_PITCH_LIMIT, _PITCH_LIMIT + 1e-9, _COARSE_STEP))
    fine = np.arange(-_COARSE_STEP, _COARSE_STEP + 1e-9, _FINE_STEP)
    yaw, pitch, a, rms = _grid_search(norm, np.clip(yaw + fine, -_YAW_LIMIT, _YAW_LIMIT),
                                      np.clip(pitch + fine, -_PITCH_LIMIT, _PITCH_LIMIT))
    camera = look_at_camera(float(yaw), float(pitch))
    return PoseEstimate(angles=_coefficient_angles(camera).astype(np.float32),
                        translation=np.zeros(3, dtype=np.float32), camera=camera,
                        yaw=float(yaw), pitch=float(pitch), roll=float(np.angle(a)),
                        rms_px=float(rms * size.max()))

