"""How much of a subject's identity a video's driving coefficients carry on SynthHeads (training-rounds.md, round 23).

The paper's case for decoupling-by-inverting is that a controller trained jointly with the identity code learns to
read identity from its input, which then leaks the driver's identity into a cross-identity reenactment. That needs
coefficients that carry identity. This script measures it: a ridge regression, scored leaving one subject out, from
a video's coefficient statistics (mean and spread over its frames of the 64 expression, 3 angle and 3 translation
coefficients: 140 features) to each of its subject's identity parameters (standardised). The same regression from
the video's mean true landmarks (136 features: the face's geometry, which does carry identity) is the positive
control that shows the instrument can find identity where there is some.

    python benchmarks/coefficient_identity.py data/synth data/heldout-s1 data/heldout-s2 [--json-out r.json]

Prints, for each input, the cross-validated R^2 (1 - residual / variance; 0 = no better than the mean; negative =
worse) averaged over the identity parameters, the best single parameter's, and how many parameters it reads above 0.5.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# On standardised features. For ridge 1-1000 the coefficients' best R^2 stays under 0.02 and the landmarks read
# 6-14 parameters above 0.5, so the answer does not hinge on it.
RIDGE = 10.0


def _load(folders: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(coefficient features [V,140], landmark features [V,136], identity targets [V,P], subject id [V], names)."""
    coeff, marks, targets, groups, names = [], [], [], [], None
    for k, folder in enumerate(folders):
        truth = np.load(Path(folder) / "truth.npz")
        fields = [str(f) for f in truth["identity_fields"]]
        keep = [i for i, f in enumerate(fields) if f != "seed"]       # the seed is a label, not a trait
        names = names or [fields[i] for i in keep]
        rows = np.concatenate([truth["exp"], truth["angles"], truth["translation"]], axis=2)  # [V,T,70]
        coeff.append(np.concatenate([rows.mean(1), rows.std(1)], axis=1))
        marks.append(truth["landmarks"].mean(1).reshape(len(rows), -1))
        subject = truth["subject"].astype(np.int64)
        targets.append(truth["identity_params"][subject][:, keep])
        groups.append(subject + 100_000 * k)                         # subjects of different sets are different
    return (np.concatenate(coeff), np.concatenate(marks), np.concatenate(targets), np.concatenate(groups), names)


def _standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std(0)
    return (x - x.mean(0)) / np.where(spread > 0, spread, 1.0)


def leave_subject_out_r2(features: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cross-validated R^2 [P] of a ridge regression features [V,F] -> targets [V,P], one subject held out per fold."""
    x, y = _standardise(features), _standardise(targets)
    predicted = np.zeros_like(y)
    for g in np.unique(groups):
        test = groups == g
        xt, yt = x[~test], y[~test]
        mx, my = xt.mean(0), yt.mean(0)
        a = xt - mx
        weights = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ (yt - my))
        predicted[test] = (x[test] - mx) @ weights + my
    return 1.0 - ((y - predicted) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help="SynthHeads folders (otavatar synth --out ...)")
    parser.add_argument("--json-out", help="write the per-parameter R^2 here")
    args = parser.parse_args()
    coeff, marks, targets, groups, names = _load(args.datasets)
    result = {"videos": int(len(groups)), "subjects": int(len(np.unique(groups))), "ridge": RIDGE}
    for label, features in (("coefficients", coeff), ("landmarks", marks)):
        r2 = leave_subject_out_r2(features, targets, groups)
        best = int(np.argmax(r2))
        readable = int((r2 > 0.5).sum())
        result[label] = {"mean_r2": float(r2.mean()), "best": names[best], "best_r2": float(r2[best]),
                         "parameters_above_half": readable, "per_parameter": dict(zip(names, map(float, r2)))}
        print(f"{label:>12}: mean R^2 {r2.mean():+.3f} over {len(names)} identity parameters; "
              f"best {names[best]} {r2[best]:+.3f}; {readable} above 0.5")
    print(f"({result['videos']} videos of {result['subjects']} subjects, leave one subject out, ridge {RIDGE})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
