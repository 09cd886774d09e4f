"""What motion transfer can gain on each reenactment metric at all: ground-truth renders scored as if models.

Round 15 of docs/training-rounds.md. Scores two ground-truth "models" with the `train evaluate` protocol (same pairs,
frames, probe and report format, so `otavatar train compare` pairs them with any model's report):

    truth          SynthHeads' render of the source identity under the driver's motion and cameras: a perfect
                   reenactment (its AKD / AED are the probe's floor)
    static-truth   the same, except the expression is held at the source portrait's (its frame 0 controls): a
                   perfect generator with no controller, the best any (c) static identity can score

Their difference is the most that motion transfer can gain on each metric with a perfect generator. --morph A
renders both on a face A of the way from the source's to the driver's (every shape, colour and texture number
interpolated; 1 is the driver's own face): a generator that transfers the motion perfectly onto a face whose
geometry is off, as an inverted portrait's is, against the same face with no motion transfer. --blur N
softens both by area-resizing every frame to N px and bilinearly back (the `tiny` generator renders at 32 px and
super-resolves to 128), which asks whether that gain survives images as soft as the generator's; --calibrate
WEIGHTS prints the mean gradient magnitude of that generator's static renders of the first pairs beside the
truth's at each blur, to say which blur matches it.

    python benchmarks/truth_headroom.py --data data/synth --what truth --json-out truth.json
    python benchmarks/truth_headroom.py --data data/synth --what static-truth --json-out static-truth.json
    otavatar train compare truth.json static-truth.json          # the headroom, pair by pair
    python benchmarks/truth_headroom.py --data data/synth --what static-truth --blur 32 --json-out st32.json
    python benchmarks/truth_headroom.py --data data/synth --what truth --morph 0.5 --json-out t-m05.json  # and so on
    python benchmarks/truth_headroom.py --data data/synth --calibrate sdk/weights/default/otavatar-tiny.safetensors
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

WHAT = ("truth", "static-truth")


def soften(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T,R,R,3] area-resized to size px and bilinearly back to R (size 0 or >= R: unchanged)."""
    res = images.shape[1]
    if size <= 0 or size >= res:
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    x = torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sharpness(images: np.ndarray) -> float:
    """Mean absolute finite difference of the grey image (0-255 units per px), over both axes and every frame."""
    grey = images.astype(np.float32).mean(-1)                               # [T,R,R]
    return float((np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=2)).mean()) / 2)


def truth_motion(truth: dict, source: int, driver: int, frames: int, what: str):
    """The synthetic.Motion that `what` renders for the pair: the driver's, or with the source's frame-0 expression."""
    from otavatar.synthetic import Motion

    controls = truth["controls"][driver][:frames]
    if what == "static-truth":
        controls = np.repeat(truth["controls"][source][:1], len(controls), axis=0)
    return Motion(controls, truth["angles"][driver][:frames], truth["translation"][driver][:frames])


def morph(source, driver, amount: float):
    """The synthetic.Identity `amount` of the way from `source` to `driver` (0: source, 1: driver's face)."""
    def lerp(a, b):
        if isinstance(a, tuple):
            return tuple(lerp(x, y) for x, y in zip(a, b))
        return a + amount * (b - a) if isinstance(a, float) else a
    return dataclasses.replace(source, **{f.name: lerp(getattr(source, f.name), getattr(driver, f.name))
                                          for f in dataclasses.fields(source) if f.name != "seed"})


def truth_renderer(truth: dict, pairs: list[tuple[str, str]], what: str, blur: int, amount: float = 0.0):
    """A `render_fn` for evaluate_reenactment rendering the ground truth `what` of each pair, in `pairs` order, on
    the source's face morphed `amount` of the way to the driver's."""
    from otavatar.synthetic import Identity, render

    index = {str(v): i for i, v in enumerate(truth["videos"])}
    queue = list(pairs)

    def render_fn(generator, controller, result, coeffs, cameras, *, batch_size: int = 8):
        source, driver = queue.pop(0)
        s, d = index[source], index[driver]
        source_face, driver_face = (Identity.sample(int(truth["identity_seed"][int(truth["subject"][i])]))
                                    for i in (s, d))
        who = morph(source_face, driver_face, amount) if amount else source_face
        clip = render(who, truth_motion(truth, s, d, len(cameras), what),
                      resolution=int(generator.config.img_resolution))
        return soften(clip.images, blur)

    return render_fn


def calibrate(weights: str, truth_path: Path, pairs: list[tuple[str, str]], frames: int, blurs: list[int]) -> None:
    """Print the sharpness of `weights`' static renders of `pairs` beside the truth's at each blur."""
    from otavatar import inversion
    from otavatar.training.evaluate import evaluate_reenactment, evaluation_inversion, evaluation_inverter
    from otavatar.weights import load_models

    generator = load_models(weights).generator.eval()
    config = evaluation_inversion(30, 30)
    invert_fn, _ = evaluation_inverter(generator, config)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    evaluate_reenactment(generator, None, truth_npz=str(truth_path), pairs=pairs, frames=frames, mode="static",
                         inversion=config, render_fn=inversion.render_motion, invert_fn=invert_fn,
                         on_pair=lambda result, generated, gt: seen.append((generated, gt)))
    generated = np.concatenate([g for g, _ in seen])
    gt = np.concatenate([t for _, t in seen])
    print(f"sharpness (mean |grey difference| per px) over {len(pairs)} pairs x {frames} frames:")
    print(f"  {weights} static renders: {sharpness(generated):.3f}")
    for size in blurs:
        print(f"  truth, blur {size or 'none'}: {sharpness(soften(gt, size)):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="A SynthHeads dataset folder (truth.npz + LMDB).")
    parser.add_argument("--what", choices=WHAT, default="static-truth")
    parser.add_argument("--blur", type=int, default=0, help="soften through N px (0: sharp)")
    parser.add_argument("--morph", type=float, default=0.0, help="the face: this far from the source's to the driver's")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--videos-per-subject", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibrate", metavar="WEIGHTS", help="print sharpness of WEIGHTS' static renders instead")
    parser.add_argument("--calibrate-blurs", type=int, nargs="+", default=[0, 96, 64, 48, 32])
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.blur < 0:
        parser.error(f"--blur must be >= 0, got {args.blur}")
    if not 0.0 <= args.morph <= 1.0:
        parser.error(f"--morph must be in [0, 1], got {args.morph}")

    from otavatar.training.evaluate import default_pairs, evaluate_reenactment
    from otavatar.training.metrics import LANDMARK_REGIONS

    torch.set_num_threads(args.threads)
    truth_path = Path(args.data) / "truth.npz"
    with np.load(truth_path) as z:
        truth = {k: z[k] for k in z.files}
    pairs = default_pairs(truth, args.videos_per_subject)[:args.pairs]
    if args.calibrate:
        calibrate(args.calibrate, truth_path, pairs, args.frames, args.calibrate_blurs)
        return
    stand_in = SimpleNamespace(config=SimpleNamespace(img_resolution=args.resolution))
    report = evaluate_reenactment(stand_in, None, truth_npz=str(truth_path), pairs=pairs, frames=args.frames,
                                  mode="static", inversion=SimpleNamespace(),
                                  invert_fn=lambda *a, **k: SimpleNamespace(losses=None),
                                  render_fn=truth_renderer(truth, pairs, args.what, args.blur, args.morph))
    report.notes.append(f"benchmarks/truth_headroom.py: generated = {args.what}, blur {args.blur or 'none'}, "
                        f"face morphed {args.morph} of the way to the driver's")
    print(report.table())
    m = report.mean
    for name, prefix in (("AKD", "akd_"), ("detected AKD", "akd_detected_"), ("aligned AKD", "akd_aligned_")):
        print(f"{name} {m[prefix.rstrip('_')]:.3f} px; by region: "
              + ", ".join(f"{region} {m[prefix + region]:.3f}" for region in LANDMARK_REGIONS))
    print(f"detected AED {m['aed_detected']:.4f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))


if __name__ == "__main__":
    main()
