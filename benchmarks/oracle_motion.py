"""How far can a motion offset in W move this generator's landmarks? The per-frame inversion ceiling.

Round 14 of docs/training-rounds.md. The `train evaluate` protocol in static mode (the source portrait inverted
without a controller, W 30 + W+ 30 steps, the SynthHeads identity term), except that every driving frame gets its
own offset delta [w_dim], added to every ws row of the inverted identity, found by inverting THAT frame's ground truth
(the source identity under the driver's motion and camera) for --steps steps from 0 with the published losses
(low-res, plus the super-resolved image unless --low-res-only). No controller can know more about a frame than
its ground truth, and this offset has the form a controller's has, so its AKD / AED is roughly the best a
controller could reach with this generator and these losses (roughly: --steps limits it, and the offset also
absorbs what the static inversion got wrong about the identity, so it can only flatter the ceiling).

The report is an ordinary `train evaluate` JSON, so `train compare` pairs it with the static row scored on the same
pairs (with --pairs N here, give that `train evaluate --mode static` the same --pairs N and --videos-per-subject):

    python benchmarks/oracle_motion.py --weights sdk/weights/default/otavatar-tiny.safetensors --data data/synth \
        --videos-per-subject 2 --json-out oracle.json
    otavatar train compare oracle.json static.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def oracle_renderer(truth: dict, pairs: list[tuple[str, str]], losses, *, steps: int, lr: float, sr: bool,
                    batch: int = 8):
    """A `render_fn` for evaluate_reenactment that renders each frame from its own inverted offset. It is called
    once per pair, in `pairs` order, and rebuilds that pair's ground truth as the harness does."""
    from otavatar.training.evaluate import pair_truth
    from otavatar.training.objective import apply_intrinsics
    from otavatar.training.run import to_uint8

    index = {str(v): i for i, v in enumerate(truth["videos"])}
    queue = list(pairs)
    t0 = time.perf_counter()

    def render_fn(generator, controller, result, coeffs, cameras, *, batch_size: int = 8):
        source, driver = queue.pop(0)
        t = len(cameras)
        _, gt = pair_truth(truth, index[source], index[driver], t, int(generator.config.img_resolution))
        generator.requires_grad_(False)          # only the offsets learn (the harness's inversion restores flags)
        frames, moved = [], []
        for i in range(0, t, batch):
            target = torch.from_numpy(gt.images[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            marks = torch.from_numpy(np.asarray(gt.landmarks[i:i + batch], dtype=np.float32))
            cams = apply_intrinsics(torch.from_numpy(np.asarray(cameras[i:i + batch], dtype=np.float32)),
                                    result.intrinsics[None].detach())
            delta = torch.zeros(len(target), 1, result.ws.shape[-1], requires_grad=True)      # [b,1,w_dim]
            opt = torch.optim.Adam([delta], lr=lr)
            for _ in range(steps):
                loss = losses(generator, result.ws[None].detach() + delta, cams, target, marks,
                              super_resolve=sr).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([delta], 1.0)
                opt.step()
            with torch.no_grad():
                frames.append(to_uint8(generator.synthesis(result.ws[None] + delta, cams).image))
            moved.append(delta.detach()[:, 0])
        rms = float(torch.cat(moved).pow(2).mean().sqrt())
        print(f"{source} <- {driver}: offset rms {rms:.4f} per element ({time.perf_counter() - t0:.0f} s)", flush=True)
        return np.concatenate(frames)

    return render_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True, help="A SynthHeads dataset folder (truth.npz + LMDB).")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--videos-per-subject", type=int, default=2)
    parser.add_argument("--inversion-steps", type=int, nargs=2, default=(30, 30), help="the portrait's: W, W+")
    parser.add_argument("--steps", type=int, default=12, help="per-frame offset steps")
    parser.add_argument("--lr", type=float, default=0.01, help="per-frame offset lr")
    parser.add_argument("--low-res-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    from otavatar.training.evaluate import (default_pairs, evaluate_reenactment, evaluation_inversion,
                                            evaluation_inverter)
    from otavatar.weights import load_models

    torch.set_num_threads(args.threads)
    generator = load_models(args.weights).generator.eval()
    config = evaluation_inversion(*args.inversion_steps)
    invert_fn, losses = evaluation_inverter(generator, config)     # the portrait's, as `train evaluate` inverts it
    truth_path = Path(args.data) / "truth.npz"
    with np.load(truth_path) as z:
        truth = {k: z[k] for k in z.files}
    pairs = default_pairs(truth, args.videos_per_subject)[:args.pairs]
    render_fn = oracle_renderer(truth, pairs, losses, steps=args.steps, lr=args.lr, sr=not args.low_res_only)
    report = evaluate_reenactment(generator, None, truth_npz=str(truth_path), pairs=pairs, frames=args.frames,
                                  mode="static", inversion=config, render_fn=render_fn,
                                  invert_fn=invert_fn)
    print(report.table())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))


if __name__ == "__main__":
    main()
