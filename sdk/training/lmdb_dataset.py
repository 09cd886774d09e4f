"""Reader of the OTAvatar HDTF LMDB layout (spec 3.1), as written by the published preprocessing
(OTAvatar_processing) or by `otavatar synth` (otavatar.synthetic.dataset).

    root/
      <R>/data.mdb       LMDB (the published HDTF folder is 512/)
      train_list.txt     one video name per line
      test_list.txt

Keys: `length` (number of videos), `<video>-length` (frame count), `<video>-<frame:07d>` (JPEG),
`<video>-keypoint` float32 [T,68,2] (512-pixel coordinates), `<video>-coeff_3dmm` float32 [T,260],
`<video>-condition` float32 [T,7] (angles, translation, focal), `<video>-id` (tracker identity vector),
and optionally `<video>-camera` float32 [T,25] (SynthHeads: the exact render cameras).

    with LmdbDataset("datasets/hdtf_lmdb_inv") as ds:
        for v in ds.train:
            img = ds.frame(v, 0)                 # uint8 [H,W,3]
            x = ds.controller_input(v)           # [T,70] exp + angle + trans
            c = ds.cameras(v)                    # [T,25] EG3D labels

numpy (and pillow for JPEG) only: no torch.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from otavatar.camera import camera_from_pose
from otavatar.coeffs import CROP, to_controller_input

__all__ = ["LmdbDataset", "LmdbLayoutError", "person_id", "FRAME_DIGITS", "KEYPOINT_SIZE"]

FRAME_DIGITS = 7
KEYPOINT_SIZE = 512          # the published keypoints are in 512-pixel coordinates
_LISTS = ("train_list.txt", "test_list.txt")


class LmdbLayoutError(LookupError):
    """The folder or LMDB does not follow the OTAvatar layout (a missing key, a malformed value)."""

    def __str__(self) -> str:        # LookupError subclasses print plainly (KeyError would quote the message)
        return str(self.args[0]) if self.args else ""


def person_id(video: str) -> str:
    """The person a video belongs to: its name up to the first '#' (the published loader's rule)."""
    return video.split("#", 1)[0]


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class LmdbDataset:
    """Read-only view of an OTAvatar LMDB. `path` is the root (holding train_list.txt and one numeric
    resolution folder, or pass `resolution`) or the LMDB folder itself (lists are then looked for next to it
    and in its parent)."""

    def __init__(self, path: str | os.PathLike, resolution: int | None = None) -> None:
        try:
            import lmdb
        except ImportError as e:  # pragma: no cover - lmdb is in the train extra
            raise ImportError(f"reading an OTAvatar LMDB needs the `lmdb` package (pip install 'otavatar[train]'): "
                              f"{e}") from None
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no dataset folder at {path}")
        if (path / "data.mdb").is_file():
            lmdb_dir, list_dirs = path, (path, path.parent)
        else:
            if resolution is not None:
                lmdb_dir = path / str(int(resolution))
            else:
                found = sorted(p for p in path.iterdir() if p.is_dir() and p.name.isdigit()
                               and (p / "data.mdb").is_file())
                if len(found) != 1:
                    what = "none" if not found else ", ".join(p.name for p in found)
                    raise LmdbLayoutError(f"{path}: expected one resolution folder with data.mdb (e.g. 512/), "
                                          f"found {what}; pass resolution= or the LMDB folder itself")
                lmdb_dir = found[0]
            if not (lmdb_dir / "data.mdb").is_file():
                raise FileNotFoundError(f"no LMDB (data.mdb) in {lmdb_dir}")
            list_dirs = (path,)
        self.lmdb_dir = lmdb_dir
        self._env = lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False, meminit=False,
                              max_readers=256)
        self.num_videos = int(self._text("length"))
        lists = {}
        for name in _LISTS:
            where = next((d / name for d in list_dirs if (d / name).is_file()), None)
            lists[name] = _read_list(where) if where is not None else None
        if lists["train_list.txt"] is None and lists["test_list.txt"] is None:
            self.train: list[str] = self._scan_videos()
            self.test: list[str] = []
        else:
            self.train = lists["train_list.txt"] or []
            self.test = lists["test_list.txt"] or []
        self.videos: list[str] = list(dict.fromkeys(self.train + self.test))

    # ---------------------------------------------------------------------------------------------- plumbing
    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "LmdbDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.videos)

    def __repr__(self) -> str:
        return f"LmdbDataset({str(self.lmdb_dir)!r}, {len(self.train)} train / {len(self.test)} test videos)"

    def _get(self, key: str) -> bytes:
        if self._env is None:
            raise ValueError("the dataset is closed")
        with self._env.begin(write=False, buffers=False) as txn:
            value = txn.get(key.encode("utf-8"))
        if value is None:
            raise LmdbLayoutError(f"{self.lmdb_dir}: key {key!r} is missing")
        return value

    def has_key(self, key: str) -> bool:
        with self._env.begin(write=False) as txn:
            return txn.get(key.encode("utf-8")) is not None

    def keys(self) -> list[str]:
        with self._env.begin(write=False) as txn:
            return [k.decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)]

    def _text(self, key: str) -> str:
        raw = self._get(key)
        try:
            text = raw.decode("ascii").strip()
            int(text)
        except (UnicodeDecodeError, ValueError):
            raise LmdbLayoutError(f"{self.lmdb_dir}: key {key!r} should hold a decimal integer, got {raw[:20]!r}")
        return text

    def _scan_videos(self) -> list[str]:
        return sorted(k[: -len("-length")] for k in self.keys() if k.endswith("-length"))

    def _array(self, key: str, width: tuple[int, ...], frames: int | None) -> NDArray[np.float32]:
        raw = self._get(key)
        per = int(np.prod(width)) * 4
        if len(raw) % per or (frames is not None and len(raw) != frames * per):
            want = f"[{frames if frames is not None else 'T'},{','.join(map(str, width))}] float32"
            raise LmdbLayoutError(f"{self.lmdb_dir}: key {key!r} holds {len(raw)} bytes, not {want}")
        return np.frombuffer(raw, dtype="<f4").reshape(-1, *width).astype(np.float32)

    # ------------------------------------------------------------------------------------------------ data
    def length(self, video: str) -> int:
        """Frame count of `video`."""
        return int(self._text(f"{video}-length"))

    def frame_bytes(self, video: str, index: int) -> bytes:
        """The stored JPEG of frame `index`."""
        n = self.length(video)
        if not 0 <= int(index) < n:
            raise IndexError(f"{video}: frame {index} out of range [0, {n})")
        return self._get(f"{video}-{int(index):0{FRAME_DIGITS}d}")

    def frame(self, video: str, index: int) -> NDArray[np.uint8]:
        """Frame `index` decoded to uint8 [H,W,3] RGB."""
        from PIL import Image

        with Image.open(io.BytesIO(self.frame_bytes(video, index))) as im:
            return np.asarray(im.convert("RGB"))

    def frames(self, video: str, indices=None) -> NDArray[np.uint8]:
        """Frames [N,H,W,3] (all frames when indices is None)."""
        idx = range(self.length(video)) if indices is None else indices
        return np.stack([self.frame(video, i) for i in idx])

    def keypoints(self, video: str, resolution: int | None = None) -> NDArray[np.float32]:
        """[T,68,2] landmarks (x, y) in 512-pixel coordinates as stored, or scaled to a `resolution`-px frame."""
        kp = self._array(f"{video}-keypoint", (68, 2), self.length(video))
        return kp if resolution is None else kp * np.float32(resolution / KEYPOINT_SIZE)

    def coeffs(self, video: str) -> NDArray[np.float32]:
        """Deep3DFaceRecon rows [T,260] (id 0:80, exp 80:144, tex, angle 224:227, gamma, trans 254:257, crop)."""
        return self._array(f"{video}-coeff_3dmm", (CROP.stop,), self.length(video))

    def controller_input(self, video: str) -> NDArray[np.float32]:
        """The motion controller's per-frame input [T,70] = exp + angle + trans (spec 2.1)."""
        return to_controller_input(self.coeffs(video))

    def condition(self, video: str) -> NDArray[np.float32]:
        """[T,7] = angles (3, as stored), translation (3), tracker focal (1)."""
        return self._array(f"{video}-condition", (7,), self.length(video))

    def identity(self, video: str) -> NDArray[np.float32]:
        """The `<video>-id` vector (tracker identity; SynthHeads: the identity's parameters)."""
        raw = self._get(f"{video}-id")
        if len(raw) % 4:
            raise LmdbLayoutError(f"{self.lmdb_dir}: key '{video}-id' holds {len(raw)} bytes, not float32")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)

    def cameras_from_condition(self, video: str, *, smooth: bool = True,
                               radius: float | None = None) -> NDArray[np.float32]:
        """EG3D labels [T,25] from `condition` by OTAvatar's conversion (spec 3.2; smooth=True, radius=None
        reproduce training on the published data)."""
        cond = self.condition(video)
        return camera_from_pose(cond[:, 0:3], cond[:, 3:6], focal=cond[:, 6], smooth=smooth, radius=radius)

    def cameras(self, video: str) -> NDArray[np.float32]:
        """EG3D labels [T,25]: the stored `<video>-camera` when present (SynthHeads), else computed from
        `condition` as in training (spec 3.2)."""
        key = f"{video}-camera"
        if self.has_key(key):
            return self._array(key, (25,), self.length(video))
        return self.cameras_from_condition(video)

    def persons(self, split: str | None = None) -> list[str]:
        """Distinct person ids of 'train', 'test' or all (None) videos, in order of appearance."""
        videos = {"train": self.train, "test": self.test, None: self.videos}.get(split)
        if videos is None:
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        return list(dict.fromkeys(person_id(v) for v in videos))
