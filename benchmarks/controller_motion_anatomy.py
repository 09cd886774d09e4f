"""What does a trained controller's motion encode? Expression, or the video (identity) it was trained on?

For every frame of every video of a SynthHeads split, run the controller on its window and split the motion
[frames, num_ws * w_dim] into:

    rms            sqrt(mean motion^2) per element (the size of the offsets)
    between-video  the share of the motion's variance carried by per-video means (a video's frames share its
                   identity, not its expression; a motion that depends on the video, not the frame, is identity-like)
    expression R2  the share of the variance a linear map of SynthHeads' 8 TRUE expression controls explains
    +pose R2       the same with the 6 true pose numbers added (what the pose inputs add)

and the same split for the motion with the pose inputs zeroed. A controller that learnt motion has most of its
variance explained by the controls and little between-video variance; one that absorbed identity has the reverse.
Used in docs/training-rounds.md (round 6). Only controller forwards: seconds on a CPU.

It also reports where the motion can point at all: every motion is a mix of the K orthonormal directions of the
controller's basis (QR of `direction.weight`), so it lives in a K-dimensional subspace of W. `basis` gives the
direction matrix's rms (its scale; the basis does not depend on it) and the overlap of the basis with that of the
fresh controller the trainer starts from with `--init-seed` (the mean squared cosine of their principal angles: 1 =
the same subspace, K / w_dim = unrelated), and with every other file's (round 17 of docs/training-rounds.md).

    python benchmarks/controller_motion_anatomy.py runs/r11-successive/ema.safetensors runs/r11-joint/ema.safetensors \
        --data data/synth [--split train|test]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from otavatar.coeffs import windows
from otavatar.weights import load_models


def _r2(features: np.ndarray, target: np.ndarray) -> float:
    """Variance share of target [N,D] explained by least squares on features [N,F] (+ intercept)."""
    x = np.concatenate([features, np.ones((len(features), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    resid = target - x @ coef
    total = ((target - target.mean(0)) ** 2).sum()
    return float(1 - (resid ** 2).sum() / total) if total > 0 else float("nan")


def anatomy(controller, truth: dict, lmdb_dir: Path, split: str) -> dict:
    from otavatar.training.lmdb_dataset import LmdbDataset

    picked = [i for i, s in enumerate(truth["split"]) if str(s) == split]
    motions, video_of, controls, pose = [], [], [], []
    with LmdbDataset(lmdb_dir) as ds, torch.no_grad():
        for i in picked:
            win = torch.from_numpy(windows(ds.coeffs(str(truth["videos"][i])), window=controller.config.window))
            motions.append(controller(win.float()).flatten(1).numpy())          # [T, num_ws*w_dim]
            video_of += [i] * len(win)
            controls.append(truth["controls"][i])
            pose.append(np.concatenate([truth["angles"][i], truth["translation"][i]], 1))
    m = np.concatenate(motions).astype(np.float64)
    video_of = np.asarray(video_of)
    c, p = np.concatenate(controls), np.concatenate(pose)
    total = ((m - m.mean(0)) ** 2).sum()
    videos, index = np.unique(video_of, return_inverse=True)
    means = np.stack([m[index == k].mean(0) for k in range(len(videos))])[index]      # each frame's video mean
    between = ((means - m.mean(0)) ** 2).sum() / total
    return {"rms": float(np.sqrt((m ** 2).mean())), "std": float(np.sqrt(total / m.size)),
            "between_video": float(between), "expression_r2": _r2(c, m), "expression_pose_r2": _r2(
                np.concatenate([c, p], 1), m), "frames": int(len(m))}


def basis_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between the column spaces of two orthonormal [w_dim, K] bases."""
    return float((a.T @ b).pow(2).sum() / a.shape[1])


def basis_report(controllers: dict, seed: int) -> dict:
    """Per controller: its direction matrix's rms, and its basis's overlap with the seeded fresh start's and with
    every other controller's (module docstring)."""
    from otavatar.training.decouple import fresh_controller_for

    first = next(iter(controllers.values()))
    torch.manual_seed(seed)              # the trainer seeds its fresh controller with config.seed the same way
    start = fresh_controller_for(first.config, use_pose=first.config.use_pose).eval()
    with torch.no_grad():
        bases = {name: c.basis() for name, c in controllers.items()}
        start_basis = start.basis()
    return {name: {"scale": float(c.direction.weight.detach().pow(2).mean().sqrt()),
                   "overlap_with_start": basis_overlap(bases[name], start_basis),
                   "overlap_unrelated": bases[name].shape[1] / bases[name].shape[0],
                   "overlap_with": {other: basis_overlap(bases[name], bases[other]) for other in bases
                                    if other != name}}
            for name, c in controllers.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", required=True, help="A SynthHeads dataset folder (truth.npz + LMDB).")
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--init-seed", type=int, default=0, help="The runs' --seed (their fresh controller's).")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    data = Path(args.data)
    with np.load(data / "truth.npz") as z:
        truth = {k: z[k] for k in z.files}
    lmdb_dir = data / str(int(truth["resolution"]))
    report = {}
    controllers = {path: load_models(path).controller.eval() for path in args.weights}
    bases = basis_report(controllers, args.init_seed)
    for path, controller in controllers.items():
        full = anatomy(controller, truth, lmdb_dir, args.split)
        no_pose = anatomy(controller.without_pose().eval(), truth, lmdb_dir, args.split)
        report[path] = {"motion": full, "pose_inputs_zeroed": no_pose, "basis": bases[path]}
        b = bases[path]
        print(f"{path}\n  motion:          {_fmt(full)}\n  pose zeroed:     {_fmt(no_pose)}\n"
              f"  basis:           scale {b['scale']:.3f}  overlap with the fresh start {b['overlap_with_start']:.3f} "
              f"(unrelated: {b['overlap_unrelated']:.3f})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


def _fmt(r: dict) -> str:
    return (f"rms {r['rms']:.3f}  std {r['std']:.3f}  between-video {r['between_video']:.2f}  "
            f"expression R2 {r['expression_r2']:.2f}  +pose R2 {r['expression_pose_r2']:.2f}")


if __name__ == "__main__":
    main()
