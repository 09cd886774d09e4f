"""Where the inversion's intrinsics correction ends: the camera it fits a portrait with (round 26).

The published inversion (spec 4.2) optimises an 18-number correction of the portrait camera's intrinsics with the
code; every driven frame is rendered with it. On SynthHeads the cameras are exact, so any correction is an error.
For each named portrait of a SynthHeads set, invert it as `train evaluate` does (30 + 30 steps by default), with the
weights file's controller and without it, and print the corrected focal lengths as factors of the true ones and the
principal point's move in pixels of the generator's frame:

    python benchmarks/inversion_intrinsics.py --weights runs/r25L-successive/ema.safetensors --data data/heldout-s1 \
        --videos 'synth0078#00,synth0077#01'

(about 15 s per portrait and mode on one CPU thread at 30 + 30 steps).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def corrected_intrinsics(camera: np.ndarray, correction: torch.Tensor, resolution: int) -> dict[str, float]:
    """camera [25], correction [18] -> fx and fy as factors of the camera's, cx and cy moves in pixels."""
    from otavatar.training.objective import apply_intrinsics

    cam = torch.as_tensor(camera, dtype=torch.float32)
    k0 = cam[16:].reshape(3, 3)
    k1 = apply_intrinsics(cam[None], correction[None].float())[0, 16:].reshape(3, 3)
    return {"fx": float(k1[0, 0] / k0[0, 0]), "fy": float(k1[1, 1] / k0[1, 1]),
            "cx_px": float((k1[0, 2] - k0[0, 2]) * resolution), "cy_px": float((k1[1, 2] - k0[1, 2]) * resolution)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="generator + controller weights")
    parser.add_argument("--data", required=True, help="a SynthHeads dataset folder")
    parser.add_argument("--videos", required=True, help="comma-separated video names; frame 0 is the portrait")
    parser.add_argument("--steps", type=int, nargs=2, default=(30, 30), metavar=("W", "WPLUS"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    from otavatar.training.evaluate import evaluation_inversion, evaluation_inverter
    from otavatar.training.lmdb_dataset import LmdbDataset
    from otavatar.weights import load_models

    torch.set_num_threads(args.threads)
    models = load_models(args.weights)
    generator = models.generator.eval()
    controller = models.controller.eval() if models.controller is not None else None
    config = evaluation_inversion(*args.steps)
    invert, _ = evaluation_inverter(generator, config)
    modes = ([("controller", controller)] if controller is not None else []) + [("static", None)]
    rows = []
    print("| portrait | inverted with | fx | fy | cx px | cy px | final loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with LmdbDataset(args.data) as ds:
        for video in args.videos.split(","):
            image = np.array(ds.frame(video, 0))
            camera = ds.cameras(video)[0]
            for mode, ctrl in modes:
                torch.manual_seed(0)
                result = invert(generator, ctrl, image, coeffs=ds.controller_input(video)[0], camera=camera,
                                landmarks=ds.keypoints(video, resolution=image.shape[0])[0], config=config)
                k = corrected_intrinsics(camera, result.intrinsics, generator.config.img_resolution)
                rows.append({"video": video, "mode": mode, **k, "loss": result.losses[-1]})
                print(f"| {video} | {mode} | x{k['fx']:.3f} | x{k['fy']:.3f} | {k['cx_px']:+.1f} | {k['cy_px']:+.1f} "
                      f"| {result.losses[-1]:.3f} |", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"weights": args.weights, "data": args.data, "steps": list(args.steps), "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
