"""3DMM coefficients: Deep3DFaceRecon row layouts, the motion controller's 70-d input, temporal windows.

Deep3DFaceRecon rows have 257 columns [id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3]; OTAvatar's
LMDB appends 3 crop columns (scale, tx, ty) for 260. The controller reads 70 numbers per frame,
exp (64) + angle (3) + trans (3) in that order, unnormalised, over a window of 27 frames, laid out
[T, 70, 27] (coefficients x time), spec 2.1.

numpy only (no torch): the torch-free runtime and the gRPC server use this module.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CoeffLayout", "DEEP3D_LAYOUT", "ID", "EXP", "TEX", "ANGLE", "GAMMA", "TRANS", "CROP",
    "CONTROLLER_EXP", "CONTROLLER_ANGLE", "CONTROLLER_TRANS", "CONTROLLER_DIM", "WINDOW", "SEMANTIC_RADIUS",
    "WINDOW_MODES", "to_controller_input", "windows", "StreamingWindows", "load_coeffs", "neutral_coeffs",
]


@dataclass(frozen=True)
class CoeffLayout:
    """Column slices of a Deep3DFaceRecon coefficient row (crop: the OTAvatar LMDB's 3 extra columns)."""

    id: slice
    exp: slice
    tex: slice
    angle: slice
    gamma: slice
    trans: slice
    crop: slice

    def as_dict(self) -> dict[str, list[int]]:
        """{name: [start, stop]}: JSON-friendly, for artifact metadata."""
        return {name: [s.start, s.stop] for name, s in vars(self).items()}


DEEP3D_LAYOUT = CoeffLayout(id=slice(0, 80), exp=slice(80, 144), tex=slice(144, 224), angle=slice(224, 227),
                            gamma=slice(227, 254), trans=slice(254, 257), crop=slice(257, 260))
ID, EXP, TEX = DEEP3D_LAYOUT.id, DEEP3D_LAYOUT.exp, DEEP3D_LAYOUT.tex
ANGLE, GAMMA, TRANS, CROP = DEEP3D_LAYOUT.angle, DEEP3D_LAYOUT.gamma, DEEP3D_LAYOUT.trans, DEEP3D_LAYOUT.crop

CONTROLLER_DIM = 70
CONTROLLER_EXP, CONTROLLER_ANGLE, CONTROLLER_TRANS = slice(0, 64), slice(64, 67), slice(67, 70)
_CONTROLLER_PARTS = (("exp", CONTROLLER_EXP, EXP), ("angle", CONTROLLER_ANGLE, ANGLE),
                     ("trans", CONTROLLER_TRANS, TRANS))
_ACCEPTED_WIDTHS = (CONTROLLER_DIM, TRANS.stop, CROP.stop)        # 70, 257, 260

WINDOW = 27
SEMANTIC_RADIUS = 13                                              # WINDOW = 2 * SEMANTIC_RADIUS + 1
WINDOW_MODES = ("centered", "causal")


def _describe_column(col: int, width: int) -> str:
    """'column 65 (angle[1], column 225 of the 257-column row)' for controller column `col`."""
    name, part, source = next(p for p in _CONTROLLER_PARTS if p[1].start <= col < p[1].stop)
    text = f"column {col} ({name}[{col - part.start}]"
    if width != CONTROLLER_DIM:
        text += f", column {source.start + col - part.start} of the {width}-column row"
    return text + ")"


def to_controller_input(rows: ArrayLike) -> NDArray[np.float32]:
    """Controller input [T,70] float32 from [T,70], [T,257] or [T,260] rows (or one row [70|257|260] -> [1,70]).

    Only the columns the controller reads are checked for finiteness; a ValueError names the first bad
    frame and column.
    """
    try:
        arr = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"coefficients must be numeric, got {type(rows).__name__}: {err}") from None
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] not in _ACCEPTED_WIDTHS:
        raise ValueError(f"coefficients must have {' / '.join(map(str, _ACCEPTED_WIDTHS))} columns "
                         f"([T,C] or one row [C]), got shape {list(np.shape(rows))}")
    width = arr.shape[1]
    x = arr if width == CONTROLLER_DIM else np.concatenate([arr[:, EXP], arr[:, ANGLE], arr[:, TRANS]], axis=1)
    if not np.isfinite(x).all():
        frame, col = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"non-finite coefficient at frame {frame}, {_describe_column(int(col), width)}")
    return np.ascontiguousarray(x)


def _window_offsets(window: int, mode: str) -> NDArray[np.int64]:
    """Frame offsets [window] relative to the current frame."""
    if mode not in WINDOW_MODES:
        raise ValueError(f"unknown window mode {mode!r}; valid modes: {', '.join(WINDOW_MODES)}")
    if window < 1 or (mode == "centered" and window % 2 == 0):
        raise ValueError(f"window must be a positive integer (odd for mode 'centered'), got {window}")
    start = -(window // 2) if mode == "centered" else -(window - 1)
    return np.arange(start, start + window)


def windows(coeffs: ArrayLike, *, window: int = WINDOW, mode: str = "centered") -> NDArray[np.float32]:
    """Controller windows [T,70,window] (coefficients x time) from per-frame coefficients [T,70|257|260].

    "centered": frame i sees frames i-13 .. i+13 (for window 27); "causal": frames i-26 .. i, only past
    frames, for streaming without look-ahead. Indices outside [0, T-1] are clamped (edge replication, as
    published), so T = 1 gives that frame replicated.
    """
    x = to_controller_input(coeffs)                               # [T,70]
    idx = np.arange(len(x))[:, None] + _window_offsets(window, mode)  # [T,window]
    idx = np.clip(idx, 0, max(len(x) - 1, 0))
    return np.ascontiguousarray(x[idx].transpose(0, 2, 1))        # [T,window,70] -> [T,70,window]


class StreamingWindows:
    """Incremental `windows`: push frames one at a time, get (frame_index, window [70,window]) pairs.

    "causal": each push returns its own frame's window. "centered": a frame's window is ready once the
    frames `window // 2` after it have arrived (a delay of 13 frames for window 27); flush() emits the rest
    with end replication and starts a new stream. The concatenated output equals `windows(all_frames)`.
    Only the last `window` frames are kept (a ring buffer), so memory does not grow with the stream.
    """

    def __init__(self, window: int = WINDOW, mode: str = "centered") -> None:
        self._offsets = _window_offsets(window, mode)             # validates window and mode
        self.window, self.mode = window, mode
        self._ring = np.zeros((window, CONTROLLER_DIM), dtype=np.float32)  # frame g lives at g % window
        self._count = 0                                           # frames pushed
        self._emitted = 0                                         # next frame index to emit

    @property
    def delay(self) -> int:
        """Frames a window waits for the future frames it needs."""
        return int(self._offsets[-1])

    def push(self, frame: ArrayLike) -> list[tuple[int, NDArray[np.float32]]]:
        """Add one frame ([70], [257] or [260]); returns the windows that became ready (0 or 1 of them)."""
        x = to_controller_input(frame)
        if len(x) != 1:
            raise ValueError(f"push takes one frame, got {len(x)}; use windows() for whole clips")
        self._ring[self._count % self.window] = x[0]
        self._count += 1
        return self._emit(self._count - self.delay)

    def flush(self) -> list[tuple[int, NDArray[np.float32]]]:
        """Windows of the frames still waiting for look-ahead (end replicated); then starts a new stream."""
        out = self._emit(self._count)
        self._count = self._emitted = 0
        return out

    def _emit(self, stop: int) -> list[tuple[int, NDArray[np.float32]]]:
        out = []
        for i in range(self._emitted, stop):
            idx = np.clip(i + self._offsets, 0, self._count - 1)  # all within the last `window` frames
            out.append((i, self._ring[idx % self.window].T.copy()))
        self._emitted = max(self._emitted, stop)
        return out


def _read_mat(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError(f"reading {path} (.mat) needs scipy: pip install scipy") from None
    data = loadmat(str(path))
    if "coeff" in data:
        return np.asarray(data["coeff"])
    missing = [key for key in ("exp", "angle", "trans") if key not in data]
    if missing:
        raise ValueError(f"{path}: a .mat file needs a 'coeff' array or 'exp', 'angle' and 'trans' arrays; "
                         f"missing {missing}")
    parts = [np.atleast_2d(np.asarray(data[key], dtype=np.float32)) for key in ("exp", "angle", "trans")]
    widths = [p.shape[-1] for p in parts]
    if widths != [64, 3, 3] or len({len(p) for p in parts}) != 1:
        raise ValueError(f"{path}: expected exp [T,64], angle [T,3], trans [T,3], got shapes "
                         f"{[list(p.shape) for p in parts]}")
    return np.concatenate(parts, axis=1)


def _read_text(path: Path) -> np.ndarray:
    return np.loadtxt(io.StringIO(path.read_text().replace(",", " ")), dtype=np.float32, ndmin=2)


_READERS = {".npy": lambda p: np.load(p, allow_pickle=False), ".txt": _read_text, ".csv": _read_text,
            ".mat": _read_mat}


def load_coeffs(path: str | Path) -> NDArray[np.float32]:
    """Controller input [T,70] from a .npy, .txt / .csv (whitespace or comma separated) or Deep3DFaceRecon
    .mat file ('coeff' [T,257|260], or 'exp', 'angle', 'trans'); rows may be 70, 257 or 260 wide."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported coefficient file type {path.suffix!r}; "
                         f"supported: {', '.join(_READERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"coefficient file not found: {path}")
    try:
        return to_controller_input(reader(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def neutral_coeffs(n: int = 1, angles: ArrayLike = (0.0, 0.0, 0.0),
                   translation: ArrayLike = (0.0, 0.0, 0.0)) -> NDArray[np.float32]:
    """[n,70] coefficients with zero expression and the given head angles (radians) and translation."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    x = np.zeros((n, CONTROLLER_DIM), dtype=np.float32)
    x[:, CONTROLLER_ANGLE] = np.asarray(angles, dtype=np.float32)
    x[:, CONTROLLER_TRANS] = np.asarray(translation, dtype=np.float32)
    return x
