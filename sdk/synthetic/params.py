"""SynthHeads parameters: identities, semantic expression controls <-> 64 coefficients, motions.

numpy only; torch is needed only by `render`. World units are EG3D's (y up, the head faces +z, the head
near the origin); expression and pose are written as Deep3DFaceRecon-style coefficients (otavatar.coeffs)
and the camera is derived from the pose with otavatar.camera.camera_from_pose, as in the published data.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import ArrayLike, NDArray

from otavatar.camera import CAMERA_RADIUS, camera_from_pose
from otavatar.coeffs import CONTROLLER_ANGLE, CONTROLLER_DIM, CONTROLLER_EXP, CONTROLLER_TRANS, to_controller_input

__all__ = [
    "CONTROLS", "N_CONTROLS", "EXP_DIM", "EXPRESSION_SCALE", "TRACKER_FOCAL", "expression_basis",
    "controls_to_exp", "exp_to_controls", "Identity", "Motion", "talking_motion", "neutral_motion",
]

CONTROLS = ("jaw_open", "smile", "pucker", "blink_left", "blink_right", "brow_raise", "brow_furrow", "cheek_puff")
N_CONTROLS = len(CONTROLS)
EXP_DIM = 64
# Deep3DFaceRecon expression coefficients are O(1); a control of 1 maps to a coefficient vector of norm 2.
EXPRESSION_SCALE = 2.0
# The tracker focal (512-px image) written in `condition`: 1050 maps to exactly the FFHQ focal 4.2647
# through camera_from_pose (fx = 4.2647 * focal / 1050).
TRACKER_FOCAL = 1050.0
_BASIS_SEED = 20230401                       # fixed forever: changing it changes every written dataset


def expression_basis() -> NDArray[np.float64]:
    """The fixed [64, 8] basis with orthonormal columns: exp = EXPRESSION_SCALE * basis @ controls."""
    g = np.random.Generator(np.random.PCG64(_BASIS_SEED)).standard_normal((EXP_DIM, N_CONTROLS))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))           # unique QR: positive diagonal of r


_BASIS = expression_basis()


def _as_rows(name: str, a: ArrayLike, width: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name} must have shape [T,{width}] or [{width}], got {list(np.shape(a))}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values")
    return arr


def controls_to_exp(controls: ArrayLike) -> NDArray[np.float32]:
    """Semantic controls [T,8] (or [8]) -> expression coefficients [T,64] float32."""
    c = _as_rows("controls", controls, N_CONTROLS)
    return (EXPRESSION_SCALE * c @ _BASIS.T).astype(np.float32)


def exp_to_controls(exp: ArrayLike) -> NDArray[np.float32]:
    """Expression coefficients [T,64] (or controller rows [T,70] / Deep3DFaceRecon rows [T,257|260]) ->
    semantic controls [T,8]: the least-squares projection onto the basis (exact for coefficients it made)."""
    arr = np.asarray(exp, dtype=np.float64)
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim == 2 and arr.shape[1] != EXP_DIM:
        arr = to_controller_input(arr)[:, CONTROLLER_EXP].astype(np.float64)
    arr = _as_rows("exp", arr, EXP_DIM)
    return (arr @ _BASIS / EXPRESSION_SCALE).astype(np.float32)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator, base: ArrayLike, spread: float) -> tuple[float, float, float]:
    c = np.clip(np.asarray(base, dtype=np.float64) + rng.uniform(-spread, spread, 3), 0.0, 1.0)
    return tuple(float(v) for v in c)


_SKINS = ((0.96, 0.80, 0.69), (0.88, 0.67, 0.52), (0.76, 0.55, 0.40), (0.55, 0.37, 0.26), (0.40, 0.26, 0.18))
_HAIRS = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.09), (0.55, 0.40, 0.22), (0.85, 0.72, 0.45), (0.55, 0.20, 0.08),
          (0.60, 0.60, 0.62))
_IRISES = ((0.35, 0.20, 0.10), (0.20, 0.40, 0.70), (0.30, 0.50, 0.30), (0.15, 0.10, 0.06), (0.45, 0.45, 0.50))


@dataclass(frozen=True)
class Identity:
    """A procedural head. Lengths in EG3D world units (the visible half-width at the head is ~0.3)."""

    seed: int
    head_radii: tuple[float, float, float]   # skull ellipsoid semi-axes (x, y, z)
    head_y: float                            # skull centre height
    hair_thickness: float
    hairline_front: float                    # hairline height at the forehead
    hairline_back: float                     # hairline height at the back of the head
    eye_spacing: float                       # half the distance between the eye centres
    eye_y: float
    eye_size: tuple[float, float]            # eye half-width, half-height
    iris_radius: float
    brow_gap: float                          # brow height above the eye centre
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    nose_depth: float
    ear_size: float
    mouth_y: float
    mouth_width: float                       # half-width
    lip_thickness: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    brows: tuple[float, float, float]
    texture: tuple[float, ...] = field(repr=False)   # 4 x (fx, fy, fz, phase) + amplitude: skin texture

    @classmethod
    def sample(cls, seed: int) -> "Identity":
        """A deterministic identity for `seed` (any int >= 0)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        rng = np.random.Generator(np.random.PCG64([int(seed), 0x5E7D]))
        rx, ry, rz = _u(rng, 0.165, 0.205), _u(rng, 0.225, 0.265), _u(rng, 0.195, 0.225)
        head_y = _u(rng, 0.0, 0.04)
        skin = _colour(rng, _SKINS[rng.integers(len(_SKINS))], 0.05)
        hair = _colour(rng, _HAIRS[rng.integers(len(_HAIRS))], 0.06)
        brows = tuple(float(v) for v in np.clip(np.asarray(hair) * 0.7, 0, 1))
        lips = _colour(rng, np.asarray(skin) * np.array([0.85, 0.55, 0.55]) + np.array([0.08, 0.0, 0.02]), 0.05)
        texture = [*rng.uniform(6.0, 18.0, (4, 3)).ravel(), *rng.uniform(0, 2 * np.pi, 4), _u(rng, 0.02, 0.07)]
        return cls(
            seed=int(seed), head_radii=(rx, ry, rz), head_y=head_y, hair_thickness=_u(rng, 0.008, 0.035),
            hairline_front=head_y + _u(rng, 0.10, 0.16), hairline_back=head_y - _u(rng, 0.05, 0.2),
            eye_spacing=_u(rng, 0.055, 0.072), eye_y=head_y + _u(rng, 0.005, 0.03),
            eye_size=(_u(rng, 0.022, 0.030), _u(rng, 0.010, 0.015)), iris_radius=_u(rng, 0.007, 0.010),
            brow_gap=_u(rng, 0.025, 0.04), brow_thickness=_u(rng, 0.004, 0.009), brow_arch=_u(rng, 0.0, 0.012),
            nose_length=_u(rng, 0.075, 0.10), nose_width=_u(rng, 0.016, 0.026), nose_depth=_u(rng, 0.025, 0.045),
            ear_size=_u(rng, 0.035, 0.05), mouth_y=head_y - _u(rng, 0.10, 0.125),
            mouth_width=_u(rng, 0.032, 0.045), lip_thickness=_u(rng, 0.006, 0.011),
            skin=skin, hair=hair, lips=lips, iris=_colour(rng, _IRISES[rng.integers(len(_IRISES))], 0.05),
            brows=brows, texture=tuple(float(v) for v in texture))

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Motion:
    """Per-frame semantic expression and head pose.

    controls [T,8] (CONTROLS order, ~[0,1]); angles [T,3] radians, the coefficient angles (x = pitch,
    y = yaw, z = roll) as stored in Deep3DFaceRecon rows 224:227 and the LMDB `condition`; translation [T,3]
    in the tracker's units (its camera 10 units away), rows 254:257.
    """

    controls: NDArray[np.float32]
    angles: NDArray[np.float32]
    translation: NDArray[np.float32]

    def __post_init__(self) -> None:
        c = _as_rows("controls", self.controls, N_CONTROLS)
        a = _as_rows("angles", self.angles, 3)
        t = _as_rows("translation", self.translation, 3)
        if not (len(c) == len(a) == len(t)) or len(c) == 0:
            raise ValueError(f"controls, angles and translation need the same T >= 1 frames, got "
                             f"{len(c)}, {len(a)}, {len(t)}")
        for name, v in (("controls", c), ("angles", a), ("translation", t)):
            object.__setattr__(self, name, v.astype(np.float32))

    @property
    def frames(self) -> int:
        return len(self.controls)

    def __len__(self) -> int:
        return self.frames

    def exp(self) -> NDArray[np.float32]:
        """Expression coefficients [T,64]."""
        return controls_to_exp(self.controls)

    def coeffs(self) -> NDArray[np.float32]:
        """Controller input [T,70] = exp (64) + angle (3) + trans (3)."""
        x = np.zeros((self.frames, CONTROLLER_DIM), dtype=np.float32)
        x[:, CONTROLLER_EXP] = self.exp()
        x[:, CONTROLLER_ANGLE] = self.angles
        x[:, CONTROLLER_TRANS] = self.translation
        return x

    def cameras(self) -> NDArray[np.float32]:
        """EG3D labels [T,25] of each frame: camera_from_pose(angles, translation, focal=1050, unsmoothed,
        centres at radius 2.7), i.e. the camera relative to the canonical head that the frame is rendered
        from; fx = fy = 4.2647."""
        return camera_from_pose(self.angles, self.translation, focal=TRACKER_FOCAL, smooth=False,
                                radius=CAMERA_RADIUS)

    def __getitem__(self, index) -> "Motion":
        idx = np.arange(self.frames)[index]
        idx = np.atleast_1d(idx)
        return Motion(self.controls[idx], self.angles[idx], self.translation[idx])


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, n: int, lo_hz: float, hi_hz: float, k: int = 4):
    """[T,n] sums of k random sinusoids per channel, unit-ish amplitude, smooth in time (t in seconds)."""
    freq = rng.uniform(lo_hz, hi_hz, (k, n))
    phase = rng.uniform(0, 2 * np.pi, (k, n))
    amp = rng.uniform(0.5, 1.0, (k, n))
    x = (amp[None] * np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None])).sum(1)
    return x / amp.sum(0)


def talking_motion(seed: int, frames: int, *, fps: float = 25.0, pose_scale: float = 1.0) -> Motion:
    """Smooth, speech-like expression and head-pose trajectories, deterministic per seed.

    Jaw: syllable bumps at ~3-6 Hz under a phrase envelope with pauses; smile, brows, pucker, cheek puff:
    slow drifts with occasional emphasis; blinks every 2-5 s (~0.2 s long, mostly both eyes); pose: yaw
    within ~±0.35 rad, pitch ±0.15, roll ±0.08 (times pose_scale), small translation.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rng = np.random.Generator(np.random.PCG64([int(seed), 0x7A1C]))
    t = np.arange(frames) / fps
    syll = rng.uniform(3.0, 6.0)
    phase = 2 * np.pi * syll * t + 1.5 * _smooth_noise(rng, t, 1, 0.2, 0.8)[:, 0]
    bumps = np.sin(phase / 2) ** 2                                        # one bump per syllable
    envelope = np.clip(0.5 + 1.2 * _smooth_noise(rng, t, 1, 0.1, 0.5)[:, 0], 0, 1)  # phrases and pauses
    jaw = np.clip(envelope * bumps * rng.uniform(0.6, 1.0) + 0.05 * _smooth_noise(rng, t, 1, 1, 3)[:, 0], 0, 1)
    slow = _smooth_noise(rng, t, 4, 0.05, 0.4)                           # smile, pucker, brow raise, furrow
    smile = np.clip(0.3 + 0.6 * slow[:, 0], 0, 1)
    pucker = np.clip(0.8 * slow[:, 1] - 0.1, 0, 1) * (1 - smile)
    brow_raise = np.clip(0.2 + 0.5 * slow[:, 2] + 0.3 * envelope * bumps, 0, 1)
    furrow = np.clip(0.7 * slow[:, 3] - 0.2, 0, 1)
    puff = np.clip(1.5 * _smooth_noise(rng, t, 1, 0.03, 0.2)[:, 0] - 0.9, 0, 1)
    blink_l, blink_r = np.zeros(frames), np.zeros(frames)
    when = rng.uniform(0.3, 2.0)
    while when < t[-1] + 1:
        width = rng.uniform(0.08, 0.12)
        shape = np.exp(-0.5 * ((t - when) / width * 2.5) ** 2)
        one_eye, left_only = rng.uniform() < 0.15, rng.uniform() < 0.5      # a wink now and then
        blink_l = np.maximum(blink_l, shape * (0.3 if one_eye and not left_only else 1.0))
        blink_r = np.maximum(blink_r, shape * (0.3 if one_eye and left_only else 1.0))
        when += rng.uniform(2.0, 5.0)
    controls = np.stack([jaw, smile, pucker, blink_l, blink_r, brow_raise, furrow, puff], axis=1)
    pose = _smooth_noise(rng, t, 6, 0.05, 0.6)
    angles = pose[:, :3] * np.array([0.15, 0.35, 0.08]) * pose_scale        # pitch, yaw, roll
    translation = pose[:, 3:] * np.array([0.15, 0.1, 0.3]) * pose_scale
    return Motion(controls, angles, translation)


def neutral_motion(frames: int = 1, *, angles: ArrayLike = (0.0, 0.0, 0.0),
                   translation: ArrayLike = (0.0, 0.0, 0.0)) -> Motion:
    """`frames` frames of the neutral expression, frontal pose (or the given angles / translation)."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    return Motion(np.zeros((frames, N_CONTROLS)), np.broadcast_to(np.asarray(angles, float), (frames, 3)),
                  np.broadcast_to(np.asarray(translation, float), (frames, 3)))
