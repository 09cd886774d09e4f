"""Write SynthHeads clips in the published OTAvatar HDTF LMDB layout (spec 3.1), plus exact ground truth.

    out/
      <R>/data.mdb, lock.mdb   LMDB (R = resolution, as the published `<root>/512/`)
      train_list.txt           one video name per line
      test_list.txt
      truth.npz                semantic ground truth (see `write_dataset`)

LMDB keys (UTF-8), as published:

    length                     number of videos (decimal string)
    <video>-length             frame count, 7-digit zero-padded decimal string
    <video>-<frame:07d>        JPEG bytes (quality 95), R x R, white background
    <video>-keypoint           float32 [T,68,2] iBUG landmarks in 512-pixel coordinates (x, y)
    <video>-coeff_3dmm         float32 [T,260] Deep3DFaceRecon layout: exp 80:144, angle 224:227,
                               trans 254:257; id, tex, gamma and the crop columns 257:260 are 0
    <video>-condition          float32 [T,7] = angles (3, the stored/negated tracker convention), translation
                               (3), focal (1) = TRACKER_FOCAL (1050, so fx = 4.2647)
    <video>-id                 float32 [P] the identity's parameters (truth.npz `identity_fields` order)

SynthHeads addition (ignored by the published loader): `<video>-camera` float32 [T,25], the exact EG3D labels
the frames were rendered with (= camera_from_pose(condition, smooth=False, radius=2.7)).

Videos are named `synth<subject:04d>#<video:02d>`; the person id is the name up to the first '#', as in the
published loader. The last max(1, N // 8) subjects (none when N == 1) form the test split.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from otavatar.coeffs import ANGLE, CROP, EXP, TRANS
from otavatar.synthetic.params import CONTROLS, TRACKER_FOCAL, Identity, talking_motion

__all__ = ["DatasetSummary", "write_dataset", "identity_vector", "identity_fields", "video_name",
           "KEYPOINT_SIZE", "JPEG_QUALITY", "COEFF_WIDTH", "CHUNK_FRAMES"]

KEYPOINT_SIZE = 512          # keypoints are stored in 512-pixel coordinates whatever the JPEG size (spec 3.1)
JPEG_QUALITY = 95
COEFF_WIDTH = CROP.stop      # 260
CHUNK_FRAMES = 16            # frames rendered at once: bounds memory (a 128-px chunk is ~1 MB of pixels)


@dataclass(frozen=True)
class DatasetSummary:
    out_dir: Path
    lmdb_dir: Path
    subjects: int
    videos: int
    frames: int              # per video
    resolution: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    bytes: int               # size of the output folder
    seconds: float

    def describe(self) -> str:
        total = self.videos * self.frames
        return (f"{self.videos} videos ({self.subjects} subjects: {len(self.train)} train / {len(self.test)} test "
                f"videos) x {self.frames} frames = {total} frames at {self.resolution}x{self.resolution} in "
                f"{self.seconds:.1f} s ({total / max(self.seconds, 1e-9):.1f} frames/s), "
                f"{self.bytes / 2**20:.1f} MiB -> {self.out_dir}")


def _positive_int(name: str, v, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {span}, got {v!r}")
    return int(v)


def identity_fields() -> tuple[str, ...]:
    """Names of the identity_vector entries: scalar fields as is, tuples as name[i]."""
    who = Identity.sample(0)
    names = []
    for f in fields(Identity):
        v = getattr(who, f.name)
        names += [f"{f.name}[{i}]" for i in range(len(v))] if isinstance(v, tuple) else [f.name]
    return tuple(names)


def identity_vector(who: Identity) -> np.ndarray:
    """float64 [P] of every Identity parameter (seed first), in identity_fields() order."""
    out = []
    for f in fields(Identity):
        v = getattr(who, f.name)
        out += list(v) if isinstance(v, tuple) else [v]
    return np.asarray(out, dtype=np.float64)


def video_name(subject: int, video: int) -> str:
    return f"synth{subject:04d}#{video:02d}"


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_dataset(out_dir: str | os.PathLike, subjects: int, videos_per_subject: int, frames: int,
                  resolution: int = 128, seed: int = 0, *, force: bool = False, progress: bool = True,
                  chunk_frames: int = CHUNK_FRAMES, device: str = "cpu") -> DatasetSummary:
    """Render subjects x videos_per_subject talking clips of `frames` frames and write them (module docstring).

    Subject s has identity Identity.sample(seed') and video v the motion talking_motion(seed''), with
    seed', seed'' derived from (seed, s[, v]) and recorded in truth.npz. The output is written into a temporary
    sibling folder and renamed into place at the end; an existing non-empty `out_dir` is refused unless
    force=True (then it is replaced only after the new dataset is complete). device: where the frames are traced
    ('cpu', 'cuda', 'cuda:N' or 'auto', as otavatar.training.run.resolve_device). The default is the CPU, on which
    every documented dataset was rendered; a GPU's float rounding moves some pixels by a level or two, so a dataset
    rendered there is the same dataset, not the same bytes.

    truth.npz: videos [V], subject [V], split [V] ('train'/'test'), video_seed [V], identity_seed [S],
    identity_fields [P], identity_params [S,P], control_names [8], controls [V,T,8], exp [V,T,64],
    angles [V,T,3], translation [V,T,3], cameras [V,T,25], landmarks [V,T,68,2] (pixels of the R-px frame),
    focal, resolution, seed.
    """
    from otavatar.synthetic.render import _check_resolution, render

    subjects = _positive_int("subjects", subjects)
    videos_per_subject = _positive_int("videos_per_subject", videos_per_subject, hi=99)
    frames = _positive_int("frames", frames, hi=9_999_999)
    resolution = _check_resolution(resolution)
    seed = _positive_int("seed", seed, lo=0)
    chunk_frames = _positive_int("chunk_frames", chunk_frames)
    from otavatar.training.run import resolve_device

    device = resolve_device(device)
    if subjects > 9999:
        raise ValueError(f"subjects must be <= 9999, got {subjects}")
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass force=True (--force) to replace it")
    import lmdb

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)                   # mkdtemp's 0700 would survive the rename
        summary = _write(tmp, lmdb, render, subjects, videos_per_subject, frames, resolution, seed, progress,
                         chunk_frames, device)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, trash / "old")
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    train, test = summary
    return DatasetSummary(out_dir=out, lmdb_dir=out / str(resolution), subjects=subjects,
                          videos=subjects * videos_per_subject, frames=frames, resolution=resolution,
                          train=tuple(train), test=tuple(test), bytes=_folder_bytes(out),
                          seconds=time.perf_counter() - start)


def _write(root: Path, lmdb, render, subjects, per, frames, res, seed, progress, chunk, device):
    n_test = 0 if subjects == 1 else max(1, subjects // 8)
    names = [video_name(s, v) for s in range(subjects) for v in range(per)]
    split = ["test" if s >= subjects - n_test else "train" for s in range(subjects) for _ in range(per)]
    id_seeds = np.array([_derived_seed(seed, 0, s) for s in range(subjects)], dtype=np.int64)
    vid_seeds = np.array([_derived_seed(seed, 1, s, v) for s in range(subjects) for v in range(per)], np.int64)
    n = len(names)
    truth = {k: np.zeros((n, frames, w), np.float32) for k, w in
             (("controls", len(CONTROLS)), ("exp", 64), ("angles", 3), ("translation", 3), ("cameras", 25))}
    truth["landmarks"] = np.zeros((n, frames, 68, 2), np.float32)
    params = []
    jpeg_guess = res * res * 3 // 4 + 4096
    map_size = max(1 << 26, 2 * n * frames * (jpeg_guess + 68 * 8 + COEFF_WIDTH * 4 + 256) + (1 << 24))
    lmdb_dir = root / str(res)
    env = lmdb.open(str(lmdb_dir), map_size=map_size, subdir=True, lock=True, sync=False, metasync=False)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * frames, unit="frame", desc="synth", dynamic_ncols=True)
    try:
        i = 0
        for s in range(subjects):
            who = Identity.sample(int(id_seeds[s]))
            idv = identity_vector(who)
            params.append(idv)
            for _ in range(per):
                name = names[i]
                motion = talking_motion(seed=int(vid_seeds[i]), frames=frames)
                with env.begin(write=True) as txn:
                    for f0 in range(0, frames, chunk):
                        clip = render(who, motion[f0:f0 + chunk], resolution=res, device=device)
                        for k, img in enumerate(clip.images):
                            txn.put(f"{name}-{f0 + k:07d}".encode(), _jpeg(img))
                        truth["cameras"][i, f0:f0 + len(clip)] = clip.cameras
                        truth["landmarks"][i, f0:f0 + len(clip)] = clip.landmarks
                        if bar is not None:
                            bar.update(len(clip))
                    coeff = np.zeros((frames, COEFF_WIDTH), np.float32)
                    coeff[:, EXP] = motion.exp()
                    coeff[:, ANGLE] = motion.angles
                    coeff[:, TRANS] = motion.translation
                    cond = np.concatenate([motion.angles, motion.translation,
                                           np.full((frames, 1), TRACKER_FOCAL, np.float32)], axis=1)
                    kp = truth["landmarks"][i] * np.float32(KEYPOINT_SIZE / res)
                    txn.put(f"{name}-length".encode(), f"{frames:07d}".encode())
                    txn.put(f"{name}-keypoint".encode(), np.ascontiguousarray(kp, "<f4").tobytes())
                    txn.put(f"{name}-coeff_3dmm".encode(), np.ascontiguousarray(coeff, "<f4").tobytes())
                    txn.put(f"{name}-condition".encode(), np.ascontiguousarray(cond, "<f4").tobytes())
                    txn.put(f"{name}-id".encode(), idv.astype("<f4").tobytes())
                    txn.put(f"{name}-camera".encode(), np.ascontiguousarray(truth["cameras"][i], "<f4").tobytes())
                truth["controls"][i] = motion.controls
                truth["exp"][i] = motion.exp()
                truth["angles"][i] = motion.angles
                truth["translation"][i] = motion.translation
                i += 1
        with env.begin(write=True) as txn:
            txn.put(b"length", str(n).encode())
        env.sync(True)
    finally:
        env.close()
        if bar is not None:
            bar.close()
    train = [v for v, sp in zip(names, split) if sp == "train"]
    test = [v for v, sp in zip(names, split) if sp == "test"]
    (root / "train_list.txt").write_text("".join(v + "\n" for v in train))
    (root / "test_list.txt").write_text("".join(v + "\n" for v in test))
    np.savez(root / "truth.npz", videos=np.array(names), subject=np.repeat(np.arange(subjects), per),
             split=np.array(split), video_seed=vid_seeds, identity_seed=id_seeds,
             identity_fields=np.array(identity_fields()), identity_params=np.stack(params),
             control_names=np.array(CONTROLS), focal=np.float32(TRACKER_FOCAL), resolution=np.int64(res),
             seed=np.int64(seed), **truth)
    return train, test
