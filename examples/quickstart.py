"""Quickstart: one portrait -> an avatar -> a talking clip, in a dozen lines of the Python SDK.

    python examples/quickstart.py                              # the embedded default model
    python examples/quickstart.py --model my.safetensors       # a model file (e.g. from `otavatar convert`)
    python examples/quickstart.py --portrait me.jpg            # your own photo (detected and aligned)

Without --portrait it uses a held-out SynthHeads portrait (identity 10000, never in a training set) whose
landmarks, coefficients and camera are known exactly, so the inversion gets the best inputs. CI runs it with a
small random weights file and `--steps 1 0 --seconds 0.2`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import otavatar


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="otavatar weights file (default: the embedded model)")
    parser.add_argument("--portrait", default=None, help="a portrait photo (default: a SynthHeads portrait)")
    parser.add_argument("--steps", type=int, nargs=2, default=(30, 30), metavar=("W", "WPLUS"),
                        help="inversion steps: W stage, W+ stage (the published inversion uses 100 100)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the talking clip")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--out", default="out/quickstart", help="output folder")
    args = parser.parse_args(argv)

    model = otavatar.Model.resolve(args.model)                  # load once; every call below reuses it
    if args.portrait is not None:                               # a photo: detect, align, estimate the pose
        avatar = otavatar.Avatar.from_portrait(args.portrait, model=model, steps=tuple(args.steps))
    else:                                                       # SynthHeads: exact landmarks, coeffs, camera
        from otavatar.demo import held_out_portrait

        clip = held_out_portrait(seed=0, resolution=model.resolution)
        avatar = otavatar.Avatar.from_portrait(clip.images[0], model=model, aligned=True, coeffs=clip.coeffs[0],
                                               camera=clip.cameras[0], landmarks=clip.landmarks[0],
                                               steps=tuple(args.steps))

    talk = otavatar.motion.talk(seconds=args.seconds, fps=args.fps)          # a built-in procedural motion
    result = avatar.render(talk, camera="driver", progress=True)              # the head follows the motion
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = result.save(out / "talk.mp4")
    avatar.save(out / "me.avatar")                              # reload with otavatar.Avatar.load(path, model=...)
    print(f"{len(result)} frames at {result.per_frame_ms:.0f} ms/frame -> {video}")
    return video


if __name__ == "__main__":
    main()
