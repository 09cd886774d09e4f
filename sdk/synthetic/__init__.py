"""SynthHeads: a procedural talking-head world with exact ground truth (issue 4).

    from otavatar import synthetic as S
    who = S.Identity.sample(seed=7)
    motion = S.talking_motion(seed=8, frames=60)
    clip = S.render(who, motion, resolution=128)   # images, coeffs [T,70], cameras [T,25], landmarks [T,68,2]

Identities, motions and coefficients are numpy only; `render` imports torch on first use.
"""
from __future__ import annotations

from otavatar.synthetic.params import (
    CONTROLS, EXP_DIM, EXPRESSION_SCALE, N_CONTROLS, TRACKER_FOCAL, Identity, Motion, controls_to_exp,
    exp_to_controls, expression_basis, neutral_motion, talking_motion,
)
from otavatar.synthetic.render import PARTS, Clip, landmarks_canonical, landmarks_world, render
from otavatar.synthetic.dataset import DatasetSummary, write_dataset

__all__ = [
    "CONTROLS", "EXP_DIM", "EXPRESSION_SCALE", "N_CONTROLS", "TRACKER_FOCAL", "PARTS", "Identity", "Motion",
    "Clip", "controls_to_exp", "exp_to_controls", "expression_basis", "neutral_motion", "talking_motion",
    "render", "landmarks_canonical", "landmarks_world", "write_dataset", "DatasetSummary",
]
