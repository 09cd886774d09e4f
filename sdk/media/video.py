"""Write frames as an H.264 mp4, an animated GIF or a PNG contact sheet, at the frame rate the caller asks for.

* .mp4: H.264 (libx264), yuv420p (what browsers, phones and video-call apps play), `quality` = x264 CRF
  (default 18: visually near-lossless; 23 is x264's default, 0 lossless), `+faststart` (playable while
  downloading). Encoded by the ffmpeg executable bundled in the PyPI package **imageio-ffmpeg** (wrapper:
  BSD-2-Clause; the bundled ffmpeg build is GPL-3.0 with libx264, run as a separate process, not linked).
  yuv420p stores colour at half resolution, so H.264 needs even sizes: an odd width or height is padded by
  one repeated edge column/row (the video is then 1 px larger; say so, not silently rescale).
* .gif: Pillow, looping forever, an adaptive palette per frame. GIF delays are whole centiseconds, so each
  frame's delay is chosen so frame i *ends* at round(100 (i+1) / fps) cs: the average rate is exactly fps
  (30 fps plays as 4, 3, 3 cs...). Above 50 fps a delay would be under 2 cs, which browsers replace by 10 cs:
  refused with a clear error.
* .png: a contact sheet of all frames (contact_sheet), for reports and tests.

Writes are atomic: a temp file in the destination folder, fsync, rename over the target, fsync the folder.
The published OTAvatar code hard-coded 15 fps; here fps is the caller's.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from otavatar.fileio import fsync_dir

__all__ = ["write_video", "contact_sheet", "VIDEO_SUFFIXES", "DEFAULT_CRF"]

VIDEO_SUFFIXES = (".mp4", ".gif", ".png")
DEFAULT_CRF = 18
_GIF_MAX_FPS = 50.0                 # a 2-cs delay; browsers play 0-1 cs delays as 10 cs
_SHEET_MAX_PIXELS = 200_000_000     # 600 MB of RGB: refuse rather than exhaust memory


def _check_frames(frames: ArrayLike) -> NDArray[np.uint8]:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got dtype {arr.dtype} (scale to 0..255 and cast)")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]                                    # one frame
    if arr.ndim != 4 or arr.shape[-1] != 3 or min(arr.shape[:3]) < 1:
        raise ValueError(f"frames must have shape [T,H,W,3] with T, H, W >= 1, got {list(arr.shape)}")
    return arr


def _check_fps(fps: float) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be finite and > 0, got {fps!r}")
    return value


def contact_sheet(frames: ArrayLike, columns: int | None = None, *, gap: int = 0,
                  background: tuple[int, int, int] = (255, 255, 255)) -> NDArray[np.uint8]:
    """Tile frames [T,H,W,3] row by row into one uint8 image [rows*H + gaps, columns*W + gaps, 3].

    columns: default ceil(sqrt(T)); gap: pixels between tiles, filled with `background` (as are empty tiles).
    """
    arr = _check_frames(frames)
    t, h, w, _ = arr.shape
    columns = math.ceil(math.sqrt(t)) if columns is None else columns
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an int >= 0, got {gap!r}")
    columns = min(columns, t)
    rows = math.ceil(t / columns)
    height, width = rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap
    if height * width > _SHEET_MAX_PIXELS:
        raise ValueError(f"a contact sheet of {t} frames of {w}x{h} would be {width}x{height} pixels, over "
                         f"{_SHEET_MAX_PIXELS:,}; pass fewer frames (e.g. frames[::{math.ceil(t / 64)}])")
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    for i in range(t):
        r, c = divmod(i, columns)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = arr[i]
    return sheet


def _gif_durations_ms(t: int, fps: float) -> list[int]:
    ends = np.rint(100.0 * np.arange(1, t + 1) / fps).astype(np.int64)        # centiseconds
    delays = np.diff(ends, prepend=0)
    return [int(d) * 10 for d in np.maximum(delays, 2)]


def _write_gif(tmp: Path, arr: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(f) for f in arr]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=_gif_durations_ms(len(arr), fps), optimize=False, disposal=1)


def _even(arr: np.ndarray) -> np.ndarray:
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def _write_mp4(tmp: Path, arr: np.ndarray, fps: float, crf: int) -> None:
    try:
        import imageio_ffmpeg                               # lazy: only mp4 needs it
    except ImportError:
        raise ImportError("writing .mp4 needs the PyPI package imageio-ffmpeg (it bundles ffmpeg): "
                          "pip install imageio-ffmpeg") from None
    arr = _even(arr)
    _, h, w, _ = arr.shape
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        macro_block_size=1,                                 # we pad to even ourselves; never rescale
        quality=None, ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart", "-f", "mp4"])
    writer.send(None)                                       # start ffmpeg
    try:
        for frame in arr:
            writer.send(frame)
    finally:
        writer.close()


def write_video(path: str | os.PathLike, frames: ArrayLike, fps: float = 25.0, *, quality: int | None = None,
                columns: int | None = None) -> Path:
    """Write frames (uint8 [T,H,W,3], or one [H,W,3]) to `path`, the format chosen by its suffix:
    .mp4 (H.264 yuv420p; quality = CRF 0..51, default 18), .gif (looping; fps <= 50) or .png (contact sheet;
    columns as in contact_sheet). fps must be finite and > 0. Returns the path written (atomically)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"cannot tell the format of {path.name!r}: the suffix must be one of {VIDEO_SUFFIXES}")
    arr = _check_frames(frames)
    fps = _check_fps(fps)
    if quality is not None and suffix != ".mp4":
        raise ValueError(f"quality (the H.264 CRF) applies to .mp4 only, got quality={quality!r} for {suffix}")
    if columns is not None and suffix != ".png":
        raise ValueError(f"columns applies to the .png contact sheet only, got columns={columns!r} for {suffix}")
    crf = DEFAULT_CRF if quality is None else quality
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"quality is the H.264 CRF, an int in [0, 51] (lower = better, 18 ~ visually lossless), "
                         f"got {quality!r}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    if suffix == ".gif" and fps > _GIF_MAX_FPS:
        raise ValueError(f"GIF cannot play {fps:g} fps: its delays are whole centiseconds and browsers play "
                         f"delays under 2 cs as 10 cs; use fps <= {_GIF_MAX_FPS:g} or write .mp4")
    sheet = contact_sheet(arr, columns) if suffix == ".png" else None   # validate before creating any file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".mp4":
            _write_mp4(tmp, arr, fps, int(crf))
        elif suffix == ".gif":
            _write_gif(tmp, arr, fps)
        else:
            Image.fromarray(sheet).save(tmp, format="PNG")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
