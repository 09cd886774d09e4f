"""Multi-view SynthHeads frames for the generator prior (several cameras of the same expression).

The published method starts from an EG3D generator pre-trained on FFHQ. Our `tiny` prior is trained as a
multi-view auto-decoder on SynthHeads instead (`otavatar.training.prior`): every frame gets a free W code and
must be reproduced from its own camera and from extra views, so the latent space covers identities x
expressions while the views make the tri-planes 3-D. This module renders those views from a SynthHeads
dataset's `truth.npz` (identities and motions are re-created exactly from their seeds and stored controls).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["MultiviewSet", "render_multiview", "load_multiview", "save_multiview"]


@dataclass(frozen=True)
class MultiviewSet:
    images: NDArray[np.uint8]        # [N,V,R,R,3]
    cameras: NDArray[np.float32]     # [N,V,25]
    landmarks: NDArray[np.float32]   # [N,V,68,2] pixels of the R-px images
    coeffs: NDArray[np.float32]      # [N,70] controller input of the frame (exp + pose)
    controls: NDArray[np.float32]    # [N,8] SynthHeads' semantic expression
    subject: NDArray[np.int64]       # [N] subject index in truth.npz
    video: NDArray[np.int64]         # [N] video index in truth.npz
    frame: NDArray[np.int64]         # [N] frame index in that video

    def __len__(self) -> int:
        return len(self.images)

    @property
    def views(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[2]


def render_multiview(truth_npz: str | os.PathLike, *, frames_per_video: int = 12, extra_views: int = 2,
                     resolution: int = 128, split: str = "train", yaw_range: float = 0.5,
                     pitch_range: float = 0.3, seed: int = 0, progress: bool = True) -> MultiviewSet:
    """Render `frames_per_video` evenly spaced frames of every `split` video, each from its own pose camera
    (view 0) and from `extra_views` random look-at cameras (yaw in +-yaw_range, pitch in +-pitch_range)."""
    from otavatar.synthetic import Identity, Motion, render

    if frames_per_video < 1 or extra_views < 0:
        raise ValueError(f"need frames_per_video >= 1 and extra_views >= 0, got {frames_per_video}, {extra_views}")
    truth = np.load(Path(truth_npz), allow_pickle=False)
    videos = [i for i, s in enumerate(truth["split"]) if s == split]
    if not videos:
        raise ValueError(f"{truth_npz}: no {split!r} videos (splits present: {sorted(set(truth['split']))})")
    from otavatar.camera import look_at_camera

    rng = np.random.default_rng(seed)
    total_frames = truth["controls"].shape[1]
    picks = np.unique(np.linspace(0, total_frames - 1, frames_per_video).round().astype(np.int64))
    out: dict[str, list] = {k: [] for k in ("images", "cameras", "landmarks", "coeffs", "controls", "subject",
                                            "video", "frame")}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(videos) * len(picks), unit="frame", desc="multiview", dynamic_ncols=True)
    for v in videos:
        s = int(truth["subject"][v])
        who = Identity.sample(int(truth["identity_seed"][s]))
        motion = Motion(truth["controls"][v][picks], truth["angles"][v][picks], truth["translation"][v][picks])
        views = [render(who, motion, resolution=resolution)]
        for _ in range(extra_views):
            cams = look_at_camera(rng.uniform(-yaw_range, yaw_range, len(picks)),
                                  rng.uniform(-pitch_range, pitch_range, len(picks)))
            views.append(render(who, motion, resolution=resolution, cameras=cams))
        out["images"].append(np.stack([c.images for c in views], axis=1))
        out["cameras"].append(np.stack([c.cameras for c in views], axis=1))
        out["landmarks"].append(np.stack([c.landmarks for c in views], axis=1))
        out["coeffs"].append(motion.coeffs())
        out["controls"].append(motion.controls)
        out["subject"].append(np.full(len(picks), s))
        out["video"].append(np.full(len(picks), v))
        out["frame"].append(picks)
        if bar is not None:
            bar.update(len(picks))
    if bar is not None:
        bar.close()
    cat = {k: np.concatenate(v) for k, v in out.items()}
    return MultiviewSet(images=cat["images"], cameras=cat["cameras"].astype(np.float32),
                        landmarks=cat["landmarks"].astype(np.float32), coeffs=cat["coeffs"].astype(np.float32),
                        controls=cat["controls"].astype(np.float32), subject=cat["subject"].astype(np.int64),
                        video=cat["video"].astype(np.int64), frame=cat["frame"].astype(np.int64))


def save_multiview(data: MultiviewSet, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **{k: getattr(data, k) for k in MultiviewSet.__dataclass_fields__})
    os.replace(tmp, path)


def load_multiview(path: str | os.PathLike) -> MultiviewSet:
    with np.load(Path(path), allow_pickle=False) as z:
        missing = [k for k in MultiviewSet.__dataclass_fields__ if k not in z.files]
        if missing:
            raise ValueError(f"{path}: not a multiview set (missing {missing})")
        return MultiviewSet(**{k: z[k] for k in MultiviewSet.__dataclass_fields__})
