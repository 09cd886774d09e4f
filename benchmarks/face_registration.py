"""Where an inverted face sits against the truth: the registration of its detected landmarks, at other views.

Round 19 of docs/training-rounds.md. `train evaluate` splits the detected AKD of every pair into the best similarity
between the generated frame's landmarks and the truth's (registration_shift px, registration_scale) and the shape
left after it (akd_aligned). This script asks whether that registration error comes from driving the face or from
the generator and its inversion: it scores the static identity (no controller) with the same protocol on

    --self        each source driven by its OWN video (its own motion and cameras: frame 0 is the portrait the
                  inversion fitted), instead of the next subject's
    --split train sources (and drivers) from the TRAINING subjects, whose frames the prior was fitted to
    --no-intrinsics  the inversion without its 18-number intrinsics correction (spec 4.2)

and prints the registration beside the detected and aligned AKD. The reports are `train evaluate` reports.

    python benchmarks/face_registration.py --weights sdk/weights/default/otavatar-tiny.safetensors \\
        --data data/synth --self --pairs 5 --json-out self.json
    python benchmarks/face_registration.py --weights ... --data data/synth --split train --pairs 6
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def source_pairs(truth: dict, split: str, videos_per_subject: int, own: bool) -> list[tuple[str, str]]:
    """`train evaluate`'s pairs (evaluate.default_pairs) drawn from `split`'s subjects; own: each source drives
    itself."""
    from otavatar.training.evaluate import default_pairs

    pairs = default_pairs(truth, videos_per_subject, split=split)
    return [(s, s) for s, _ in pairs] if own else pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="generator weights (e.g. the shipped default)")
    parser.add_argument("--data", required=True, help="a SynthHeads dataset folder (truth.npz + LMDB)")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--self", dest="own", action="store_true", help="each source drives itself")
    parser.add_argument("--no-intrinsics", action="store_true", help="invert without the intrinsics correction")
    parser.add_argument("--steps", type=int, nargs=2, default=(30, 30), metavar=("W", "WPLUS"))
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--videos-per-subject", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    from otavatar.training.evaluate import evaluate_reenactment, evaluation_inversion, evaluation_inverter
    from otavatar.weights.io import load_models

    torch.set_num_threads(args.threads)
    truth_path = Path(args.data) / "truth.npz"
    with np.load(truth_path) as z:
        truth = {k: z[k] for k in z.files}
    pairs = source_pairs(truth, args.split, args.videos_per_subject, args.own)[:args.pairs]
    generator = load_models(args.weights).generator.eval()
    inversion = evaluation_inversion(*args.steps, intrinsics=not args.no_intrinsics)
    invert_fn, _ = evaluation_inverter(generator, inversion)
    report = evaluate_reenactment(generator, None, truth_npz=str(truth_path), pairs=pairs, frames=args.frames,
                                  mode="static", inversion=inversion, invert_fn=invert_fn)
    report.notes.append(f"benchmarks/face_registration.py: {args.split} subjects, "
                        f"{'each driving itself' if args.own else 'driven by the next subject'}, intrinsics "
                        f"correction {'off' if args.no_intrinsics else 'on'}")
    print("| source | driver | detected AKD px | shift px | scale | aligned AKD px |\n|---|---|---|---|---|---|")
    for p in report.pairs:
        print(f"| {p.source} | {p.driver} | {p.akd_detected:.2f} | {p.registration_shift:.2f} | "
              f"{p.registration_scale:.3f} | {p.akd_aligned:.2f} |")
    m = report.mean
    print(f"| **mean** | {len(report.pairs)} pairs | {m['akd_detected']:.2f} | {m['registration_shift']:.2f} | "
          f"{m['registration_scale']:.3f} | {m['akd_aligned']:.2f} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))


if __name__ == "__main__":
    main()
