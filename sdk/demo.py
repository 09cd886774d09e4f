"""`otavatar demo`: a held-out SynthHeads portrait -> an avatar -> a talking clip, an orbit clip and a sheet.

With the embedded default model (our own tiny model trained on SynthHeads; no download) the demo:

1. renders the portrait of identity `10_000 + seed`, which no training set contains (the SynthHeads datasets use
   identities below 10,000), at the model's resolution, with its exact 68 landmarks, coefficients and camera;
2. inverts it (aligned=True: the render is already the aligned crop) with few steps so that it runs on a CPU
   (default (30, 30); the published inversion uses (100, 100));
3. drives it with `otavatar.motion.talk` from the driver's cameras (the head turns with the motion) and renders
   an orbit (OTAvatar's --rotate path) with the same motion;
4. writes, in `out_dir`: portrait.png (the input), frame.png (the avatar re-rendered from the portrait's camera),
   talk.mp4 + talk.gif, orbit.mp4 + orbit.gif, sheet.png (portrait, reconstruction, talking and orbit frames)
   and demo.avatar (the avatar file, for `otavatar render`).

`weights` (e.g. a converted official checkpoint) replaces the default model; the portrait is then rendered at
that model's resolution, and SynthHeads expressions mean little to a model trained on real faces.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["DemoResult", "render_demo", "held_out_portrait", "HELD_OUT_OFFSET"]

HELD_OUT_OFFSET = 10_000     # SynthHeads datasets sample identities 0..N-1 (N < 10,000): these are never trained on
SHEET_TILES = 16             # 4 x 4: portrait, reconstruction, 7 talking frames, 7 orbit frames


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    # portrait, frame, talk_mp4, talk_gif, orbit_mp4, orbit_gif, sheet, avatar
    files: dict[str, Path] = field(repr=False)
    model: str                                   # where the weights came from
    resolution: int
    frames: int                                  # frames per clip
    fps: float
    invert_seconds: float
    render_seconds: float
    final_loss: float | None

    @property
    def frame(self) -> Path:
        return self.files["frame"]

    @property
    def sheet(self) -> Path:
        return self.files["sheet"]

    def describe(self) -> str:
        width = max(map(len, self.files))
        lines = [f"model {self.model} ({self.resolution}x{self.resolution}); inversion {self.invert_seconds:.1f} s "
                 f"(final loss {self.final_loss if self.final_loss is None else round(self.final_loss, 4)}); "
                 f"2 clips of {self.frames} frames at {self.fps:g} fps rendered in {self.render_seconds:.1f} s"]
        lines += [f"  {name:<{width}}  {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def held_out_portrait(seed: int, resolution: int):
    """A SynthHeads clip of one frame: identity HELD_OUT_OFFSET + seed, neutral expression, frontal pose."""
    from otavatar import synthetic as S

    return S.render(S.Identity.sample(HELD_OUT_OFFSET + seed), S.neutral_motion(1), resolution)


def _sheet_rows(portrait: np.ndarray, frame: np.ndarray, talk: np.ndarray, orbit: np.ndarray) -> np.ndarray:
    each = (SHEET_TILES - 2) // 2
    pick = [np.linspace(0, len(c) - 1, min(each, len(c))).round().astype(int) for c in (talk, orbit)]
    return np.concatenate([portrait[None], frame[None], talk[pick[0]], orbit[pick[1]]])


def render_demo(out_dir: str | Path = "out/demo", *, weights: str | Path | None = None, seed: int = 0,
                steps: tuple[int, int] = (30, 30), seconds: float = 4.0, fps: float = 25.0,
                progress: bool = True, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo (module docstring) and return where everything was written.

    weights: None = the embedded default (FileNotFoundError naming the file and `otavatar train` while it is
    missing), or an otavatar weights file. steps: (W, W+) inversion steps. seconds, fps: length and rate of
    both clips. Nothing is written before the model has loaded.
    """
    from otavatar import motion as motions
    from otavatar.avatar import Avatar
    from otavatar.inversion import InversionConfig
    from otavatar.media import contact_sheet, write_video
    from otavatar.model import Model

    say = log or (lambda message: None)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    clip_motion = motions.talk(seconds=seconds, fps=fps, seed=seed)       # validates seconds and fps
    # SR joins in the last 10 steps of each stage as published, or the last third of a shorter stage
    config = InversionConfig(w_steps=steps[0], wplus_steps=steps[1], sr_steps=min(10, max(1, steps[0] // 3)))
    model = Model.resolve(weights)
    say(f"model: {model.source} ({model.resolution}x{model.resolution}, fingerprint {model.fingerprint[:12]})")

    portrait = held_out_portrait(seed, model.resolution)
    say(f"portrait: SynthHeads identity {HELD_OUT_OFFSET + seed} (held out), {model.resolution}x{model.resolution}")
    start = time.perf_counter()
    avatar = Avatar.from_portrait(portrait.images[0], model=model, coeffs=portrait.coeffs[0],
                                  camera=portrait.cameras[0], landmarks=portrait.landmarks[0], aligned=True,
                                  config=config, progress=progress)
    invert_seconds = time.perf_counter() - start

    start = time.perf_counter()
    frame = avatar.render(avatar.coeffs[None]).frames[0]
    talk = avatar.render(clip_motion, camera="driver", progress=progress)
    orbit = avatar.render(clip_motion, camera="orbit", progress=progress)
    render_seconds = time.perf_counter() - start

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"portrait": out / "portrait.png", "frame": out / "frame.png", "talk_mp4": out / "talk.mp4",
             "talk_gif": out / "talk.gif", "orbit_mp4": out / "orbit.mp4", "orbit_gif": out / "orbit.gif",
             "sheet": out / "sheet.png", "avatar": out / "demo.avatar"}
    from PIL import Image

    Image.fromarray(portrait.images[0]).save(files["portrait"])
    Image.fromarray(frame).save(files["frame"])
    for name, result in (("talk", talk), ("orbit", orbit)):
        write_video(files[f"{name}_mp4"], result.frames, fps=fps)
        write_video(files[f"{name}_gif"], result.frames, fps=min(fps, 50.0))
    tiles = _sheet_rows(portrait.images[0], frame, talk.frames, orbit.frames)
    Image.fromarray(contact_sheet(tiles, columns=4, gap=2)).save(files["sheet"])
    avatar.save(files["avatar"])
    loss = avatar.inversion.losses[-1] if avatar.inversion is not None and avatar.inversion.losses else None
    return DemoResult(out_dir=out, files=files, model=model.source, resolution=model.resolution, frames=len(talk),
                      fps=float(fps), invert_seconds=invert_seconds, render_seconds=render_seconds, final_loss=loss)
