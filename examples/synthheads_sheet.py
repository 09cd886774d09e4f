"""SynthHeads example: a 4x4 contact sheet (identities x expressions) and one 512x512 frame.

    python examples/synthheads_sheet.py --out examples/synthheads
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from otavatar import synthetic as S

EXPRESSIONS = {                       # rows of the sheet: semantic controls, pose (pitch, yaw, roll)
    "neutral": ({}, (0.0, 0.0, 0.0)),
    "talk + smile": ({"jaw_open": 0.8, "smile": 0.8}, (0.0, 0.25, 0.0)),
    "blink + brows": ({"blink_left": 1.0, "blink_right": 1.0, "brow_raise": 1.0}, (0.1, -0.25, 0.05)),
    "pucker + puff": ({"pucker": 1.0, "cheek_puff": 1.0, "brow_furrow": 1.0}, (-0.1, 0.0, -0.08)),
}


def expression_motion() -> S.Motion:
    controls = np.zeros((len(EXPRESSIONS), S.N_CONTROLS))
    angles = np.zeros((len(EXPRESSIONS), 3))
    for i, (values, pose) in enumerate(EXPRESSIONS.values()):
        for name, v in values.items():
            controls[i, S.CONTROLS.index(name)] = v
        angles[i] = pose
    return S.Motion(controls, angles, np.zeros_like(angles))


def main(out: str | Path = "examples/synthheads", resolution: int = 128, big: int = 512, seeds=(0, 1, 2, 3)):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    motion = expression_motion()
    sheet = np.full((len(EXPRESSIONS) * resolution, len(seeds) * resolution, 3), 255, np.uint8)
    for col, seed in enumerate(seeds):                           # columns: identities
        clip = S.render(S.Identity.sample(seed), motion, resolution=resolution)
        for row in range(len(EXPRESSIONS)):                      # rows: expressions
            sheet[row * resolution:(row + 1) * resolution, col * resolution:(col + 1) * resolution] = clip.images[row]
    Image.fromarray(sheet).save(out / "sheet.png")
    frame = S.render(S.Identity.sample(seeds[0]), motion[1], resolution=big)
    Image.fromarray(frame.images[0]).save(out / f"frame_{big}.png")
    return out / "sheet.png", out / f"frame_{big}.png"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/synthheads")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--big", type=int, default=512)
    args = parser.parse_args()
    for path in main(args.out, args.resolution, args.big):
        print(path)
