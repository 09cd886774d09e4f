"""The reenactment harness on a micro SynthHeads dataset with stand-in invert/render_motion."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from otavatar.coeffs import CONTROLLER_ANGLE, CONTROLLER_EXP, CONTROLLER_TRANS
from otavatar.synthetic import CONTROLS, Identity, Motion, exp_to_controls, render
from otavatar.training.evaluate import default_pairs, evaluate_reenactment
from otavatar.training.probe import FaceProbe, ProbeConfig

RES = 32


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from otavatar.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth")
    summary = write_dataset(out / "d", subjects=3, videos_per_subject=1, frames=4, resolution=RES, progress=False)
    return summary.out_dir / "truth.npz"


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    return FaceProbe(ProbeConfig(size=32, widths=(8, 8, 16), plain_blocks=1, hidden=32)).eval()


@pytest.fixture
def generator():
    return SimpleNamespace(config=SimpleNamespace(img_resolution=RES))


class Stand:
    """Fake invert/render_motion: remembers what it was given; renders the exact truth of `who` (perfect) or
    white frames."""

    def __init__(self, truth_npz, perfect: bool):
        self.truth = np.load(truth_npz)
        self.perfect = perfect
        self.calls = []

    def invert(self, generator, controller, image, *, coeffs, camera, landmarks, config, progress):
        assert image.dtype == np.uint8 and image.shape == (RES, RES, 3)
        assert coeffs.shape == (70,) and camera.shape == (25,) and landmarks.shape == (68, 2)
        # find the source subject by its portrait camera (unique per video in SynthHeads)
        i = int(np.argmin(np.abs(self.truth["cameras"][:, 0] - camera).sum(-1)))
        self.calls.append(("invert", controller))
        return SimpleNamespace(subject=int(self.truth["subject"][i]), losses=[0.25])

    def render(self, generator, controller, result, coeffs, cameras, *, batch_size):
        self.calls.append(("render", controller))
        if not self.perfect:
            return np.full((len(coeffs), RES, RES, 3), 255, np.uint8)
        motion = Motion(exp_to_controls(coeffs[:, CONTROLLER_EXP]), coeffs[:, CONTROLLER_ANGLE],
                        coeffs[:, CONTROLLER_TRANS])
        who = Identity.sample(int(self.truth["identity_seed"][result.subject]))
        return render(who, motion, resolution=RES, cameras=cameras).images


def run(micro, generator, probe, stand, **kw):
    kw.setdefault("frames", 3)
    return evaluate_reenactment(generator, kw.pop("controller", object()), truth_npz=micro, probe=probe,
                                progress=False, invert_fn=stand.invert, render_fn=stand.render, inversion="cfg", **kw)


def test_default_pairs_cycle_through_test_subjects(micro):
    truth = np.load(micro)
    assert default_pairs(truth) == [("synth0002#00", "synth0002#00")]       # 3 subjects -> one test subject
    fake = {"videos": np.array(["a#0", "a#1", "b#0", "c#0"]), "subject": np.array([0, 0, 1, 2]),
            "split": np.array(["test", "test", "train", "test"])}
    assert default_pairs(fake) == [("a#0", "c#0"), ("c#0", "a#0")]
    # video k drives with the next subject's video k, or its last when it has fewer
    assert default_pairs(fake, 2) == [("a#0", "c#0"), ("c#0", "a#0"), ("a#1", "c#0")]
    with pytest.raises(ValueError, match="videos_per_subject"):
        default_pairs(fake, 0)
    # the identities training saw, or the first N subjects of a split
    assert default_pairs(fake, split="train") == [("b#0", "b#0")]
    assert default_pairs(fake, 2, subjects=1) == [("a#0", "a#0"), ("a#1", "a#1")]
    with pytest.raises(ValueError, match="split must be"):
        default_pairs(fake, split="val")
    with pytest.raises(ValueError, match="subjects must be"):
        default_pairs(fake, subjects=0)


def test_perfect_renderer_hits_the_probe_floor(micro, generator, probe):
    stand = Stand(micro, perfect=True)
    report = run(micro, generator, probe, stand, pairs=[("synth0002#00", "synth0000#00")])
    (pair,) = report.pairs
    assert pair.frames == 3 and report.frames == 3 and report.resolution == RES and report.mode == "controller"
    assert math.isinf(pair.psnr) and pair.ssim == pytest.approx(1.0)
    assert pair.akd == pytest.approx(pair.floor_akd) and pair.aed == pytest.approx(pair.floor_aed)
    assert pair.inversion_loss == 0.25
    assert report.mean["psnr"] == math.inf
    d = report.to_dict()
    assert d["mean"]["psnr"] == "inf"
    json.dumps(d, allow_nan=False)
    table = report.table()
    assert table.count("\n") == 5 and "synth0002#00" in table and "**mean**" in table
    assert "AED over the controls the probe reads" in table
    assert set(report.controls) == set(CONTROLS) and len(pair.aed_controls) == len(CONTROLS)
    assert np.mean(pair.aed_controls) == pytest.approx(pair.aed)
    assert len(pair.akd_landmarks) == 68 and np.mean(pair.akd_landmarks) == pytest.approx(pair.akd)
    assert report.mean["akd_mouth"] == pytest.approx(np.mean(pair.akd_landmarks[48:]))
    assert report.mean["floor_akd_jaw"] == pytest.approx(np.mean(pair.floor_akd_landmarks[:17]))
    assert set(report.readable_controls) <= set(CONTROLS)
    # one detector on both images: a perfect render reads exactly as the truth does
    assert pair.akd_detected == 0.0 and pair.aed_detected == 0.0
    assert len(pair.akd_detected_landmarks) == 68 and len(pair.aed_detected_controls) == len(CONTROLS)
    assert report.mean["akd_detected"] == 0.0 and report.mean["akd_detected_mouth"] == 0.0
    assert pair.akd_aligned == pytest.approx(0.0, abs=1e-9) and pair.registration_shift == pytest.approx(0.0, abs=1e-9)
    assert pair.registration_scale == pytest.approx(1.0) and len(pair.akd_aligned_landmarks) == 68
    assert report.mean["akd_aligned_mouth"] == pytest.approx(0.0, abs=1e-9)


def test_wrong_renderer_scores_worse_and_static_mode_drops_the_controller(micro, generator, probe):
    stand = Stand(micro, perfect=False)
    report = run(micro, generator, probe, stand, mode="static")
    (pair,) = report.pairs
    assert math.isfinite(pair.psnr) and pair.psnr < 30 and pair.ssim < 0.9
    assert pair.akd_detected > 0 and np.mean(pair.akd_detected_landmarks) == pytest.approx(pair.akd_detected)
    assert np.mean(pair.aed_detected_controls) == pytest.approx(pair.aed_detected)
    assert pair.akd_aligned > 0 and np.mean(pair.akd_aligned_landmarks) == pytest.approx(pair.akd_aligned)
    assert pair.registration_shift > 0 and report.mean["registration_scale"] == pytest.approx(pair.registration_scale)
    assert pair.source == pair.driver == "synth0002#00"
    assert all(c is None for _, c in stand.calls) and len(stand.calls) == 2
    seen = []
    run(micro, generator, probe, Stand(micro, perfect=False), on_pair=lambda p, g, t: seen.append((g.shape, t.shape)))
    assert seen == [((3, RES, RES, 3), (3, RES, RES, 3))]


@pytest.mark.parametrize("kw, match", [
    ({"mode": "joint"}, "mode must be one of"),
    ({"controller": None}, "needs a controller"),
    ({"frames": 0}, "frames"),
    ({"pairs": [("nope#00", "synth0000#00")]}, "not in"),
])
def test_validation(micro, generator, probe, kw, match):
    with pytest.raises(ValueError, match=match):
        run(micro, generator, probe, Stand(micro, perfect=True), **kw)


def test_readable_aed_keeps_only_the_controls_the_probe_reads_on_the_truth():
    from otavatar.training.evaluate import READABLE_RATIO, _readable_controls

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (50, len(CONTROLS)))
    truth[:, 7] = 0.3                                         # a control that never varies: never readable
    floor = truth + rng.normal(0, 0.5, truth.shape)           # the probe reads nothing...
    floor[:, :2] = truth[:, :2] + 0.01                        # ...but the first two controls
    generated = truth.copy()
    generated[:, 0] += 0.2                                    # off by 0.2 on a readable control
    generated[:, 5] += 0.9                                    # a large error on an unreadable one does not count
    truth[:, 3] = np.where(np.arange(50) % 4 == 0, 1.0, 0.0)   # a blink: 0 in 3 of 4 frames
    floor[:, 3] = 0.0                                          # a probe that always answers 0 scores the median
    generated[:, 3] = 0.0
    table, readable = _readable_controls(generated, floor, truth)
    assert readable == list(CONTROLS[:2])
    assert table[CONTROLS[3]]["floor"] == pytest.approx(table[CONTROLS[3]]["baseline"])    # not read
    assert table[CONTROLS[0]]["aed"] == pytest.approx(0.2) and table[CONTROLS[1]]["aed"] == pytest.approx(0.0)
    assert table[CONTROLS[0]]["floor"] <= READABLE_RATIO * table[CONTROLS[0]]["baseline"]
    assert table[CONTROLS[7]]["baseline"] == pytest.approx(0, abs=1e-12)
