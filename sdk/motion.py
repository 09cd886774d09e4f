"""Built-in procedural motions: driving coefficients for `Avatar.render` without a video or a face tracker.

    from otavatar import motion
    clip = avatar.render(motion.talk(seconds=4, fps=25))      # a Motion: coeffs [T,70], fps, name
    motion.get("nod")(seconds=2).coeffs                      # [50,70]
    motion.NAMES                                             # talk, nod, smile, look_around

Each motion is written in SynthHeads' semantic controls (jaw_open, smile, pucker, blinks, brows, cheek puff;
otavatar.synthetic.CONTROLS) turned into the 64 expression coefficients by `controls_to_exp`, plus head-angle
tracks (radians, coefficient convention: x = pitch, y = yaw, z = roll) and zero translation. The expression
semantics are therefore those of the embedded SynthHeads-trained model: with a converted official model
(trained on Deep3DFaceRecon's expression basis) the same 64 numbers are a valid but different expression;
drive such models with coefficients from a real tracker. Head angles mean the same for both.

numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from otavatar.camera import CAMERA_RADIUS, camera_from_pose
from otavatar.coeffs import CONTROLLER_ANGLE, CONTROLLER_DIM, CONTROLLER_EXP, CONTROLLER_TRANS, load_coeffs, \
    to_controller_input
from otavatar.synthetic.params import CONTROLS, N_CONTROLS, TRACKER_FOCAL, controls_to_exp, talking_motion

__all__ = ["Motion", "talk", "nod", "smile", "look_around", "get", "load", "from_array", "NAMES"]

_C = {name: i for i, name in enumerate(CONTROLS)}
_MAX_SECONDS = 3600.0       # an hour of frames: beyond that a typo, not a clip (90,000 frames at 25 fps)


@dataclass(frozen=True)
class Motion:
    """Driving coefficients with a playback rate. coeffs [T,70] = exp (64) + angle (3) + trans (3), float32."""

    coeffs: NDArray[np.float32] = field(repr=False)   # [T,70]
    fps: float = 25.0
    name: str = "motion"

    def __post_init__(self) -> None:
        x = to_controller_input(self.coeffs)               # width and finiteness, with frame/column in errors
        if len(x) == 0:
            raise ValueError("a motion needs at least one frame, got 0")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be finite and > 0, got {self.fps!r}")
        x.setflags(write=False)
        object.__setattr__(self, "coeffs", x)
        object.__setattr__(self, "fps", float(self.fps))

    def __len__(self) -> int:
        return len(self.coeffs)

    @property
    def frames(self) -> int:
        return len(self.coeffs)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def cameras(self, *, radius: float = CAMERA_RADIUS) -> NDArray[np.float32]:
        """The driver's cameras [T,25]: the head pose as an EG3D camera (camera_from_pose, SynthHeads' tracker
        focal 1050 -> fx = 4.2647, unsmoothed, centres at `radius`)."""
        return camera_from_pose(self.coeffs[:, CONTROLLER_ANGLE], self.coeffs[:, CONTROLLER_TRANS],
                                focal=TRACKER_FOCAL, smooth=False, radius=radius)

    def __repr__(self) -> str:
        return f"Motion(name={self.name!r}, frames={self.frames}, fps={self.fps:g})"


def _frames(seconds: float, fps: float) -> tuple[int, np.ndarray]:
    for name, v in (("seconds", seconds), ("fps", fps)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"seconds must be <= {_MAX_SECONDS:g}, got {seconds}")
    n = max(1, int(round(seconds * fps)))
    return n, np.arange(n) / fps


def _rng(seed: int, salt: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.Generator(np.random.PCG64([int(seed), salt]))


def _blinks(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Both-eye blinks every 2.5-4.5 s, ~0.2 s long (Gaussian lid closure)."""
    out = np.zeros(len(t))
    when = rng.uniform(0.5, 1.5)
    while when < t[-1] + 1:
        out = np.maximum(out, np.exp(-0.5 * ((t - when) / 0.04) ** 2))
        when += rng.uniform(2.5, 4.5)
    return out


def _ease(t: np.ndarray, seconds: float, ramp: float = 0.3) -> np.ndarray:
    """0 -> 1 over the first `ramp` s and back to 0 over the last: clips start and end at rest."""
    ramp = min(ramp, seconds / 2)
    if ramp <= 0:
        return np.ones_like(t)
    up = np.clip(t / ramp, 0, 1)
    down = np.clip((seconds - t) / ramp, 0, 1)
    return np.sin(0.5 * np.pi * np.minimum(up, down)) ** 2


def _compose(name: str, fps: float, controls: np.ndarray, angles: np.ndarray) -> Motion:
    x = np.zeros((len(controls), CONTROLLER_DIM), dtype=np.float32)
    x[:, CONTROLLER_EXP] = controls_to_exp(controls)
    x[:, CONTROLLER_ANGLE] = angles
    return Motion(x, fps=fps, name=name)


def talk(seconds: float = 4.0, fps: float = 25.0, seed: int = 0, *, pose_scale: float = 1.0) -> Motion:
    """Speech-like jaw, smile, brows and blinks with natural head motion (SynthHeads' talking_motion: syllables
    at 3-6 Hz under phrases with pauses; yaw within ~±0.35 rad, pitch ±0.15, roll ±0.08, times pose_scale).
    The translation is set to zero so the head stays centred, as in an aligned portrait."""
    n, _ = _frames(seconds, fps)
    _rng(seed, 0)                                                            # validates seed
    m = talking_motion(int(seed), n, fps=fps, pose_scale=pose_scale)
    return _compose("talk", fps, m.controls, m.angles)


def nod(seconds: float = 3.0, fps: float = 25.0, seed: int = 0, *, amplitude: float = 0.2,
        rate_hz: float = 1.2) -> Motion:
    """Head nods: pitch = amplitude (radians) x sin(2 pi rate t), eased in and out, a slight smile, blinks."""
    n, t = _frames(seconds, fps)
    rng = _rng(seed, 0x90D)
    controls = np.zeros((n, N_CONTROLS))
    controls[:, _C["smile"]] = 0.2
    blink = _blinks(rng, t)
    controls[:, _C["blink_left"]] = controls[:, _C["blink_right"]] = blink
    angles = np.zeros((n, 3))
    angles[:, 0] = amplitude * np.sin(2 * np.pi * rate_hz * t) * _ease(t, seconds)
    return _compose("nod", fps, controls, angles)


def smile(seconds: float = 3.0, fps: float = 25.0, seed: int = 0) -> Motion:
    """A smile that builds, holds and relaxes (raised cosine over the clip), cheeks and brows following, blinks,
    a small head tilt toward the end of the smile."""
    n, t = _frames(seconds, fps)
    rng = _rng(seed, 0x5311E)
    s = np.sin(np.pi * np.clip(t / seconds, 0, 1)) ** 2                     # 0 -> 1 -> 0
    controls = np.zeros((n, N_CONTROLS))
    controls[:, _C["smile"]] = s
    controls[:, _C["cheek_puff"]] = 0.15 * s
    controls[:, _C["brow_raise"]] = 0.3 * s
    controls[:, _C["jaw_open"]] = 0.15 * s
    controls[:, _C["blink_left"]] = controls[:, _C["blink_right"]] = _blinks(rng, t)
    angles = np.zeros((n, 3))
    angles[:, 2] = 0.06 * s                                                  # roll: a slight tilt
    angles[:, 0] = -0.04 * s                                                 # chin up a little
    return _compose("smile", fps, controls, angles)


def look_around(seconds: float = 4.0, fps: float = 25.0, seed: int = 0, *, yaw: float = 0.4,
                pitch: float = 0.12) -> Motion:
    """The head turns left and right (yaw ± `yaw` rad, one full sweep over the clip) while pitch drifts
    (± `pitch` rad at 1.5x the rate); neutral expression with blinks."""
    n, t = _frames(seconds, fps)
    rng = _rng(seed, 0x100C)
    phase = 2 * np.pi * t / seconds
    controls = np.zeros((n, N_CONTROLS))
    controls[:, _C["blink_left"]] = controls[:, _C["blink_right"]] = _blinks(rng, t)
    angles = np.zeros((n, 3))
    angles[:, 1] = yaw * np.sin(phase)
    angles[:, 0] = pitch * np.sin(1.5 * phase) * _ease(t, seconds)
    return _compose("look_around", fps, controls, angles)


_BUILTINS: dict[str, Callable[..., Motion]] = {"talk": talk, "nod": nod, "smile": smile, "look_around": look_around}
NAMES = tuple(_BUILTINS)


def get(name: str) -> Callable[..., Motion]:
    """A built-in motion by name ('look-around' also works): call it with (seconds, fps, seed)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _BUILTINS:
        raise ValueError(f"unknown motion {name!r}; built-in motions: {', '.join(NAMES)}")
    return _BUILTINS[key]


def load(path: str | Path, *, fps: float = 25.0) -> Motion:
    """A motion from a coefficient file (.npy, .txt/.csv, Deep3DFaceRecon .mat; rows 70/257/260 wide)."""
    path = Path(path)
    return Motion(load_coeffs(path), fps=fps, name=path.stem)


def from_array(coeffs: ArrayLike, *, fps: float = 25.0, name: str = "motion") -> Motion:
    """A motion from coefficient rows [T,70|257|260]."""
    return Motion(to_controller_input(coeffs), fps=fps, name=name)
