"""`otavatar.Avatar`: one portrait in, a drivable 3D talking head out.

    avatar = Avatar.from_portrait("me.jpg")                        # detect, align, invert (embedded default model)
    clip = avatar.render(otavatar.motion.talk(seconds=4))          # RenderResult: frames uint8 [T,R,R,3], timings
    clip.save("talk.mp4")                                          # .mp4 / .gif / .png contact sheet
    avatar.save("me.avatar")                                       # one safetensors file, tied to the model
    avatar = Avatar.load("me.avatar", model=...)                   # refuses a different model

The portrait's coefficients and camera (what inversion needs besides the pixels, spec 4.1):

* given: `coeffs` = 70 numbers, a Deep3DFaceRecon row (257) or an OTAvatar LMDB row (260), or a .mat / .npy /
  .txt / .csv file with one such row; `camera` = a 25-number EG3D label or a .npy / .txt file holding one;
* not given (an approximation, stated plainly): the expression is neutral (zeros) and the head pose is estimated
  from the 5 face landmarks against a mean 3D template (otavatar.media.estimate_pose: yaw and pitch only,
  a few degrees off for faces whose proportions differ from the template's); the camera is that pose's EG3D
  look-at camera and the coefficient angles are the same pose. The inversion's intrinsics correction absorbs
  part of the error. With aligned=True and neither a camera nor landmarks, the camera is frontal.

`landmarks` ([68,2] iBUG points in pixels of the image passed) feed the local (mouth + eyes) term of the
inversion; without them that term (and the identity term) is skipped, so the mouth and eyes are fitted by the
perceptual and pixel terms alone.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from otavatar.model import Model, ModelLike

__all__ = ["Avatar", "AvatarError", "RenderResult", "AVATAR_FORMAT", "AVATAR_FORMAT_VERSION", "ACCEPTED_WIDTHS"]

AVATAR_FORMAT = "otavatar-avatar"
AVATAR_FORMAT_VERSION = 1
ACCEPTED_WIDTHS = {70: "exp 64 + angle 3 + trans 3", 257: "Deep3DFaceRecon row", 260: "OTAvatar LMDB row"}
ALIGNED_SIZE = 512                  # the FFHQ crop size the published networks were trained on (spec 4.1)
CAMERA_MODES = ("portrait", "driver", "orbit")
_TENSORS = ("ws", "intrinsics", "camera", "coeffs")


class AvatarError(ValueError):
    """An avatar file that cannot be used: not an avatar, another format version, made with another model."""


@dataclass(frozen=True)
class RenderResult:
    """Rendered frames and how long they took. fps: the playback rate (the motion's, or the caller's);
    fps_rendered: frames per second of wall time while rendering (models already loaded)."""

    frames: NDArray[np.uint8] = field(repr=False)      # [T,R,R,3]
    cameras: NDArray[np.float32] = field(repr=False)   # [T,25] before the avatar's intrinsics correction
    fps: float
    fps_rendered: float
    seconds: float
    per_frame_ms: float

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | os.PathLike[str], *, fps: float | None = None, **kwargs: Any) -> Path:
        """Write the frames as .mp4 / .gif / .png (contact sheet) at `fps` (default: self.fps)."""
        from otavatar.media import write_video

        return write_video(path, self.frames, fps=self.fps if fps is None else fps, **kwargs)


# -- input resolution ------------------------------------------------------------------------------------------

def _as_rows(coeffs: ArrayLike, what: str) -> NDArray[np.float32]:
    """[T,70] controller rows from [T,70|257|260] (or one row); errors name the width and the bad frame."""
    from otavatar.coeffs import to_controller_input

    try:
        arr = np.asarray(coeffs, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be numeric, got {type(coeffs).__name__}: {err}") from None
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} must be [T,C] rows (or one row [C]), got shape {list(arr.shape)}")
    width = arr.shape[-1]
    if width not in ACCEPTED_WIDTHS:
        accepted = ", ".join(f"{w} ({d})" for w, d in ACCEPTED_WIDTHS.items())
        raise ValueError(f"{what} have {width} columns; accepted widths: {accepted}")
    if arr.ndim == 2 and len(arr) == 0:
        raise ValueError(f"{what} have no frames (T = 0)")
    try:
        return to_controller_input(arr)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def read_array(path: Path, what: str) -> np.ndarray:
    """An array from a .npy / .txt / .csv file (coefficient files also .mat, via load_coeffs)."""
    from otavatar.coeffs import load_coeffs

    if what == "coefficients":
        return load_coeffs(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix.lower() in (".txt", ".csv"):
        return np.loadtxt(path.read_text().replace(",", " ").splitlines(), dtype=np.float32, ndmin=2)
    raise ValueError(f"{path}: unsupported {what} file type {path.suffix!r}; supported: .npy, .txt, .csv")


def portrait_coeffs(coeffs: ArrayLike | str | os.PathLike[str]) -> NDArray[np.float32]:
    """The portrait's 70 controller numbers from 70/257/260 values (or one such row) or a coefficient file."""
    if isinstance(coeffs, (str, os.PathLike)):
        coeffs = read_array(Path(coeffs), "coefficients")
    rows = _as_rows(coeffs, "portrait coefficients")
    if len(rows) != 1:
        raise ValueError(f"portrait coefficients must be one frame, got {len(rows)} rows")
    return rows[0]


def portrait_camera(camera: ArrayLike | str | os.PathLike[str]) -> NDArray[np.float32]:
    """The portrait's 25-d EG3D label from an array ([25] or [1,25]) or a .npy / .txt file."""
    from otavatar.camera import validate_camera

    if isinstance(camera, (str, os.PathLike)):
        camera = read_array(Path(camera), "camera")
    cams = validate_camera(camera)
    if len(cams) != 1:
        raise ValueError(f"the portrait camera must be one 25-d label, got {len(cams)}")
    return cams[0]


def _landmarks5(landmarks68: np.ndarray) -> np.ndarray:
    """iBUG 68 -> the detector's 5: eye centres (36-41, 42-47), nose tip (30), mouth corners (48, 54)."""
    return np.stack([landmarks68[36:42].mean(0), landmarks68[42:48].mean(0), landmarks68[30],
                     landmarks68[48], landmarks68[54]])


def _check_landmarks(landmarks: ArrayLike | None) -> np.ndarray | None:
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be [68,2] iBUG points in pixels of the image, got {list(lm.shape)}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks have non-finite values")
    return lm


@dataclass(frozen=True)
class PreparedPortrait:
    """What inversion receives: the aligned square image, its coefficients, camera and (optional) landmarks."""

    image: NDArray[np.uint8] = field(repr=False)             # [S,S,3]
    coeffs: NDArray[np.float32] = field(repr=False)          # [70]
    camera: NDArray[np.float32] = field(repr=False)          # [25]
    landmarks: NDArray[np.float32] | None = field(repr=False)  # [68,2] px of `image`
    pose_source: str                                         # "given", "estimated" or "frontal"


def prepare_portrait(image: Any, *, coeffs: Any = None, camera: Any = None, landmarks: ArrayLike | None = None,
                     aligned: bool = False) -> PreparedPortrait:
    """Decode (with limits), detect + align (unless aligned) and fill in coefficients and camera (module
    docstring). Raises MediaError subclasses (ValueError) for bad images and ValueError for bad arrays."""
    from otavatar.coeffs import neutral_coeffs
    from otavatar.media import decode_image

    label = Path(image).name if isinstance(image, (str, os.PathLike)) else "portrait"
    pixels = decode_image(image)                                             # uint8 [H,W,3]
    lm68 = _check_landmarks(landmarks)
    x = portrait_coeffs(coeffs) if coeffs is not None else None
    cam = portrait_camera(camera) if camera is not None else None
    if aligned:
        h, w = pixels.shape[:2]
        if h != w:
            raise ValueError(f"an aligned portrait must be square, got {w}x{h}; pass aligned=False to detect and "
                             f"crop the face")
        lm5 = _landmarks5(lm68) if lm68 is not None else None
        size = w
    else:
        from otavatar.media import align_portrait, detect_face

        face = detect_face(pixels, name=label)
        crop = align_portrait(pixels, face.landmarks5, size=ALIGNED_SIZE)
        if lm68 is not None:                                                 # source pixels -> crop pixels
            lm68 = lm68 @ crop.transform[:, :2].T + crop.transform[:, 2]
        pixels, lm5, size = crop.image, crop.landmarks5, ALIGNED_SIZE
    source = "given"
    if x is None or cam is None:
        if lm5 is not None:
            from otavatar.media import estimate_pose

            pose = estimate_pose(lm5, size)
            angles, translation, est_camera, source = pose.angles, pose.translation, pose.camera, "estimated"
        else:
            from otavatar.camera import look_at_camera

            angles, translation, est_camera, source = np.zeros(3), np.zeros(3), look_at_camera(0.0, 0.0), "frontal"
        x = neutral_coeffs(1, angles=angles, translation=translation)[0] if x is None else x
        cam = est_camera.astype(np.float32) if cam is None else cam
    return PreparedPortrait(image=pixels, coeffs=x.astype(np.float32), camera=cam.astype(np.float32),
                            landmarks=None if lm68 is None else lm68.astype(np.float32), pose_source=source)


def driving_rows(coeffs: Any) -> tuple[NDArray[np.float32], Any]:
    """(rows [T,70], the Motion or None) from a Motion, a coefficient file or rows [T,70|257|260]."""
    from otavatar.motion import Motion

    if isinstance(coeffs, Motion):
        return coeffs.coeffs, coeffs
    if isinstance(coeffs, (str, os.PathLike)):
        coeffs = read_array(Path(coeffs), "coefficients")
    rows = _as_rows(coeffs, "driving coefficients")
    return rows, None


def _is_file_like(camera: Any) -> bool:
    return isinstance(camera, os.PathLike) or (isinstance(camera, str) and camera not in CAMERA_MODES)


def driving_cameras(camera: Any, rows: np.ndarray, motion: Any, portrait_camera_: np.ndarray) -> NDArray[np.float32]:
    """[T,25] cameras for T driving frames. camera: None / "portrait" (the portrait's, every frame), "driver"
    (the head pose of the driving coefficients: the motion's cameras, or camera_from_coeffs of the rows),
    "orbit" (OTAvatar's --rotate path), a [T,25] or [25] array, or a .npy / .txt file of one."""
    from otavatar.camera import camera_from_coeffs, orbit_cameras, validate_camera

    t = len(rows)
    if camera is None or (isinstance(camera, str) and camera == "portrait"):
        return np.repeat(portrait_camera_[None], t, axis=0).astype(np.float32)
    if isinstance(camera, str) and camera == "driver":
        return motion.cameras() if motion is not None else camera_from_coeffs(rows)
    if isinstance(camera, str) and camera == "orbit":
        return orbit_cameras(t)
    if isinstance(camera, str) and not Path(camera).suffix:
        raise ValueError(f"unknown camera mode {camera!r}; valid: {', '.join(CAMERA_MODES)}, a [T,25] array or a "
                         f".npy / .txt file")
    if _is_file_like(camera):
        camera = read_array(Path(camera), "camera")
    try:
        return validate_camera(camera, batch=t)
    except ValueError as err:
        raise ValueError(f"camera: {err} (for {t} driving frames)") from None


# -- the avatar ------------------------------------------------------------------------------------------------

class Avatar:
    """An inverted identity: ws [num_ws,w_dim] (the portrait's expression removed), the 18-number intrinsics
    correction, the portrait's camera [25] and coefficients [70], tied to the Model that inverted it."""

    def __init__(self, model: Model, ws: torch.Tensor, intrinsics: torch.Tensor, camera: ArrayLike,
                 coeffs: ArrayLike, metadata: dict[str, Any] | None = None, inversion: Any = None) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an otavatar.Model, got {type(model).__name__}")
        want = (model.num_ws, model.w_dim)
        if tuple(ws.shape) != want:
            raise ValueError(f"ws must be [{want[0]},{want[1]}] for this model, got {list(ws.shape)}")
        if tuple(intrinsics.shape) != (18,):
            raise ValueError(f"intrinsics must be [18], got {list(intrinsics.shape)}")
        if not (torch.isfinite(ws).all() and torch.isfinite(intrinsics).all()):
            raise ValueError("ws and intrinsics must be finite")
        self.model = model
        self.ws = ws.detach().to(model.device, torch.float32)                  # [num_ws,w_dim]
        self.intrinsics = intrinsics.detach().to(model.device, torch.float32)  # [18]
        self.camera = portrait_camera(camera)                                  # [25]
        self.coeffs = portrait_coeffs(coeffs)                                  # [70]
        self.metadata = dict(metadata or {})
        self.inversion = inversion                                             # InversionResult (from_portrait)

    # -- creation -----------------------------------------------------------------------------------------------
    @classmethod
    def from_portrait(cls, image: Any, *, model: ModelLike = None, coeffs: Any = None, camera: Any = None,
                      landmarks: ArrayLike | None = None, aligned: bool = False,
                      steps: tuple[int, int] | None = None, config: Any = None, early_stop: float | None = None,
                      progress: bool = True, callback: Callable[[Any], Any] | None = None,
                      preview_every: int = 0) -> "Avatar":
        """Invert one portrait (a path, encoded bytes, a PIL image or a uint8 [H,W,3] array) into an Avatar.

        model: None = the embedded default, a Model, a weights file or a (generator, controller) tuple.
        coeffs / camera / landmarks / aligned: see the module docstring.
        steps: (W steps, W+ steps); default (100, 100) as published, or config's when a config is given.
        config: an otavatar.inversion.InversionConfig (learning rates, clamp to w_avg +- 5, SR steps, ...).
        early_stop: stop a stage once the loss improved by less than this fraction over config.patience steps.
        progress: a tqdm bar; callback(InversionStep) after each step (return False to stop), with a preview
        image [3,r,r] in [-1,1] every `preview_every` steps (0: none).
        """
        from otavatar.inversion import InversionConfig, invert

        m = Model.resolve(model)
        cfg = config if config is not None else InversionConfig()
        if not isinstance(cfg, InversionConfig):
            raise TypeError(f"config must be an otavatar.inversion.InversionConfig, got {type(cfg).__name__}")
        if steps is not None:
            if len(tuple(steps)) != 2 or not all(isinstance(s, (int, np.integer)) for s in steps):
                raise ValueError(f"steps must be two ints (W steps, W+ steps), got {steps!r}")
            cfg = replace(cfg, w_steps=int(steps[0]), wplus_steps=int(steps[1]))
        if early_stop is not None:
            cfg = replace(cfg, early_stop=float(early_stop))
        portrait = prepare_portrait(image, coeffs=coeffs, camera=camera, landmarks=landmarks, aligned=aligned)
        result = invert(m.generator, m.controller, portrait.image, coeffs=portrait.coeffs, camera=portrait.camera,
                        landmarks=portrait.landmarks, config=cfg, losses=m.reconstruction_loss(cfg.weights),
                        progress=progress, callback=callback, preview_every=preview_every)
        metadata = {"steps": result.steps, "w_steps": cfg.w_steps, "wplus_steps": cfg.wplus_steps,
                    "final_loss": result.losses[-1] if result.losses else None,
                    "seconds": round(result.seconds, 3), "stopped_early": result.stopped_early,
                    "pose": portrait.pose_source, "landmarks": portrait.landmarks is not None,
                    "aligned": bool(aligned)}
        return cls(m, result.ws, result.intrinsics, portrait.camera, portrait.coeffs, metadata, inversion=result)

    # -- rendering ----------------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.model.resolution

    def _prepare(self, coeffs: Any, camera: Any, window: str):
        from otavatar.coeffs import _window_offsets

        rows, motion = driving_rows(coeffs)
        cams = driving_cameras(camera, rows, motion, self.camera)
        offsets = _window_offsets(self.model.window, window) if self.model.controller is not None else None
        return rows, motion, cams, offsets

    def _frames(self, rows: np.ndarray, cams: np.ndarray, offsets: np.ndarray | None,
                batch_size: int) -> Iterator[NDArray[np.uint8]]:
        """uint8 [B,R,R,3] batches. Windows are cut per batch (memory does not grow with T); edge frames are
        replicated as in otavatar.coeffs.windows, so the frames equal render_motion's."""
        from otavatar.training.run import to_uint8
        from otavatar.training.objective import apply_intrinsics

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        G, C, device = self.model.generator, self.model.controller, self.model.device
        t = len(rows)
        with torch.no_grad():
            for lo in range(0, t, batch_size):
                hi = min(t, lo + batch_size)
                ws = self.ws[None].expand(hi - lo, -1, -1)
                if C is not None:
                    idx = np.clip(np.arange(lo, hi)[:, None] + offsets, 0, t - 1)      # [B,window]
                    x = torch.from_numpy(np.ascontiguousarray(rows[idx].transpose(0, 2, 1))).to(device)
                    ws = ws + C(x)                                                     # x [B,70,window]
                c = apply_intrinsics(torch.from_numpy(cams[lo:hi]).to(device), self.intrinsics[None])
                yield to_uint8(G.synthesis(ws, c).image)

    def stream(self, coeffs: Any, *, camera: Any = None, window: str = "centered",
               batch_size: int = 8) -> Iterator[NDArray[np.uint8]]:
        """Frames uint8 [R,R,3] one at a time, rendered `batch_size` at a time: for clips too long to hold."""
        rows, _, cams, offsets = self._prepare(coeffs, camera, window)
        for batch in self._frames(rows, cams, offsets, batch_size):
            yield from batch

    def render(self, coeffs: Any, *, camera: Any = None, window: str = "centered", batch_size: int = 8,
               progress: bool = False, fps: float | None = None) -> RenderResult:
        """Drive the avatar: coeffs = an otavatar.motion Motion, rows [T,70|257|260] or a coefficient file;
        camera: None / "portrait", "driver", "orbit", [T,25] or [25], or a camera file (driving_cameras).
        window: "centered" (13 frames of look-ahead) or "causal". fps: the playback rate (default: the
        motion's, else 25)."""
        rows, motion, cams, offsets = self._prepare(coeffs, camera, window)
        play = fps if fps is not None else (motion.fps if motion is not None else 25.0)
        if not (isinstance(play, (int, float)) and math.isfinite(play) and play > 0):
            raise ValueError(f"fps must be finite and > 0, got {play!r}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(rows), unit="frame", desc="render", dynamic_ncols=True)
        start = time.perf_counter()
        out = np.empty((len(rows), self.resolution, self.resolution, 3), np.uint8)
        done = 0
        try:
            for batch in self._frames(rows, cams, offsets, batch_size):
                out[done:done + len(batch)] = batch
                done += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        return RenderResult(frames=out, cameras=cams, fps=float(play), fps_rendered=len(out) / max(seconds, 1e-9),
                            seconds=seconds, per_frame_ms=1000.0 * seconds / len(out))

    def render_view(self, yaw: float = 0.0, pitch: float = 0.0, *, coeffs: Any = None) -> NDArray[np.uint8]:
        """One frame uint8 [R,R,3] from look_at_camera(yaw, pitch) (radians from frontal), with the portrait's
        expression (or `coeffs`, one row)."""
        from otavatar.camera import look_at_camera

        for name, v in (("yaw", yaw), ("pitch", pitch)):
            if not isinstance(v, (int, float, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number of radians, got {v!r}")
        row = self.coeffs[None] if coeffs is None else portrait_coeffs(coeffs)[None]
        return self.render(row, camera=look_at_camera(float(yaw), float(pitch))).frames[0]

    @staticmethod
    def save_video(path: str | os.PathLike[str], frames: ArrayLike | RenderResult, fps: float = 25.0,
                   **kwargs: Any) -> Path:
        """Write frames (uint8 [T,H,W,3] or a RenderResult) as .mp4 / .gif / .png contact sheet."""
        from otavatar.media import write_video

        if isinstance(frames, RenderResult):
            frames = frames.frames
        return write_video(path, frames, fps=fps, **kwargs)

    # -- blending -----------------------------------------------------------------------------------------------
    @staticmethod
    def interpolate(a: "Avatar", b: "Avatar", alpha: float) -> "Avatar":
        """(1 - alpha) a + alpha b in ws, intrinsics and coefficients (alpha 0 gives a, 1 gives b exactly;
        outside [0, 1] extrapolates). The camera is the nearer endpoint's (a for alpha < 0.5): cameras do not
        blend linearly. Both avatars must come from the same model."""
        if not isinstance(a, Avatar) or not isinstance(b, Avatar):
            raise TypeError("interpolate takes two Avatars")
        if a.model.fingerprint != b.model.fingerprint:
            raise AvatarError(f"cannot interpolate avatars of different models ({a.model.fingerprint[:16]}... vs "
                              f"{b.model.fingerprint[:16]}...)")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        alpha = float(alpha)

        def mix(x, y):
            return (1.0 - alpha) * x + alpha * y

        return Avatar(a.model, mix(a.ws, b.ws.to(a.model.device)), mix(a.intrinsics, b.intrinsics.to(a.model.device)),
                      a.camera if alpha < 0.5 else b.camera, mix(a.coeffs, b.coeffs).astype(np.float32),
                      {"interpolated": {"alpha": alpha}})

    # -- files --------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file: tensors ws, intrinsics, camera, coeffs; header: format, version, the model
        fingerprint, the generator config, creation time, otavatar version, metadata. Written atomically."""
        import otavatar
        from safetensors.torch import save_file

        from otavatar.fileio import atomic_write

        path = Path(path)
        tensors = {"ws": self.ws.detach().cpu().contiguous().clone(),
                   "intrinsics": self.intrinsics.detach().cpu().contiguous().clone(),
                   "camera": torch.from_numpy(self.camera.copy()), "coeffs": torch.from_numpy(self.coeffs.copy())}
        header = {"format": AVATAR_FORMAT, "format_version": str(AVATAR_FORMAT_VERSION),
                  "model_fingerprint": self.model.fingerprint,
                  "generator_config": json.dumps(self.model.generator.config.to_dict(), sort_keys=True),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "otavatar_version": otavatar.__version__,
                  "metadata": json.dumps(self.metadata, sort_keys=True, default=str)}
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist")
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: ModelLike = None) -> "Avatar":
        """Read an avatar file; `model` must be the one it was made with (same fingerprint), else AvatarError."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"avatar file not found: {path}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = dict(f.metadata() or {})
                if header.get("format") != AVATAR_FORMAT:
                    raise AvatarError(f"{path}: not an otavatar avatar file (header format {header.get('format')!r}, "
                                      f"expected {AVATAR_FORMAT!r})")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except AvatarError:
            raise
        except Exception as e:  # SafetensorError, OSError, bad header JSON: all mean "not a readable avatar"
            raise AvatarError(f"{path}: not a readable avatar file ({type(e).__name__}: {e})") from None
        if header.get("format_version") != str(AVATAR_FORMAT_VERSION):
            raise AvatarError(f"{path}: avatar format version {header.get('format_version')!r}, but this otavatar "
                              f"reads version {AVATAR_FORMAT_VERSION}")
        missing = [k for k in _TENSORS if k not in tensors]
        if missing:
            raise AvatarError(f"{path}: missing tensors {missing}")
        m = Model.resolve(model)
        saved = header.get("model_fingerprint", "")
        if saved != m.fingerprint:
            raise AvatarError(f"{path} was made with model {saved} but the model given is {m.fingerprint} "
                              f"({m.source}); load it with the model that inverted it")
        try:
            metadata = json.loads(header.get("metadata", "{}"))
        except ValueError:
            metadata = {}
        metadata = {**metadata, "created": header.get("created"), "file": str(path)}
        try:
            return cls(m, tensors["ws"].float(), tensors["intrinsics"].float(), tensors["camera"].numpy(),
                       tensors["coeffs"].numpy(), metadata)
        except ValueError as e:
            raise AvatarError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return (f"Avatar(resolution={self.resolution}, num_ws={self.model.num_ws}, "
                f"model={self.model.fingerprint[:12]}...)")
