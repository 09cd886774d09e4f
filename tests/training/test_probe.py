"""FaceProbe: shapes, augmentation geometry, a micro training that lowers the loss, save/load round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otavatar.training.probe import (
    DEFAULT_PROBE, FaceProbe, ProbeConfig, load_probe, load_synth_frames, random_similarity, save_network,
    train_probe, warp,
)

TINY = ProbeConfig(size=32, widths=(8, 8, 16), plain_blocks=1, hidden=32)


@pytest.fixture(scope="module")
def micro_dataset(tmp_path_factory):
    from otavatar.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth")
    return write_dataset(out / "d", subjects=3, videos_per_subject=1, frames=4, resolution=32, progress=False)


def test_forward_and_predict_shapes():
    torch.manual_seed(0)
    probe = FaceProbe(TINY)
    lm, c = probe(torch.zeros(2, 3, 32, 32))
    assert lm.shape == (2, 68, 2) and c.shape == (2, 8)
    out = probe.predict(np.zeros((3, 48, 64, 3), np.uint8))          # resized; pixels of the INPUT size
    assert out.landmarks.shape == (3, 68, 2) and out.controls.shape == (3, 8)
    assert np.allclose(out.landmarks.mean(axis=(0, 1)) / [64, 48], lm.detach().mean(axis=(0, 1)), atol=0.2)
    with pytest.raises(ValueError, match=r"\[B,3,32,32\]"):
        probe(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="uint8"):
        probe.predict(np.zeros((1, 32, 32, 3), np.float32))


def test_warp_moves_points_with_the_image():
    gen = torch.Generator().manual_seed(1)
    x = torch.ones(4, 1, 64, 64)
    x[:, :, 38, 19] = -1.0                                             # a dark pixel at (19.5, 38.5) px
    pts = torch.tensor([[[19.5 / 64, 38.5 / 64]]]).repeat(4, 1, 1)
    y, p = warp(x, pts, random_similarity(4, gen, shift=0.1, scale=0.1, rotate=0.1))
    for b in range(4):
        r, c = divmod(int(torch.argmin(y[b, 0])), 64)
        assert abs((c + 0.5) / 64 - p[b, 0, 0]) < 1.5 / 64 and abs((r + 0.5) / 64 - p[b, 0, 1]) < 1.5 / 64
    # outside the source image is white (+1), the SynthHeads background: shift a black image by half its side
    theta = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    y, _ = warp(-torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 2), theta)
    assert torch.all(y[0, 0, :, :3] == -1) and torch.all(y[0, 0, :, 5:] == 1)


def test_micro_training_lowers_loss_and_round_trips(micro_dataset, tmp_path):
    frames = load_synth_frames(micro_dataset.out_dir, split="train")
    assert frames.images.shape == (8, 32, 32, 3) and frames.landmarks.shape == (8, 68, 2)
    out = tmp_path / "probe.safetensors"
    probe, report = train_probe(micro_dataset.out_dir, steps=20, batch=8, seed=0, out=out, lr=5e-3, config=TINY,
                                other_views=False)
    assert report.final_loss < report.first_loss
    assert np.isfinite(report.test_landmark_px) and np.isfinite(report.test_control_l1)
    loaded = load_probe(out)
    assert loaded.config == TINY and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    imgs = frames.images[:2]
    a, b = probe.predict(imgs), loaded.predict(imgs)
    # float16 storage: ~5e-4 relative per weight; 0.05 px at 32 px is 0.16% of the side
    np.testing.assert_allclose(a.landmarks, b.landmarks, rtol=0, atol=0.05)
    np.testing.assert_allclose(a.controls, b.controls, rtol=0, atol=5e-3)
    exact = tmp_path / "exact.safetensors"
    save_network(exact, probe, kind="otavatar.face_probe", config=probe.config, half=False)
    c = load_probe(exact).predict(imgs)
    np.testing.assert_array_equal(a.landmarks, c.landmarks)
    np.testing.assert_array_equal(a.controls, c.controls)


def test_load_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"kind": "something else", "format": "1"})
    with pytest.raises(ValueError, match="face_probe"):
        load_probe(bad)
    with pytest.raises(FileNotFoundError):
        load_probe(tmp_path / "missing.safetensors")


@pytest.mark.skipif(not DEFAULT_PROBE.is_file(), reason="the default probe weights are not built yet")
def test_shipped_probe_loads():
    probe = load_probe()
    assert probe.config.size == 128
    assert DEFAULT_PROBE.stat().st_size < 3 * 2**20
    out = probe.predict(np.full((1, 128, 128, 3), 255, np.uint8))
    assert np.isfinite(out.landmarks).all()


def test_l2_control_loss_trains_and_bad_loss_names_are_refused(micro_dataset):
    _, report = train_probe(micro_dataset.out_dir, steps=3, batch=4, seed=0, config=TINY, other_views=False,
                            control_loss="l2", control_weight=10.0)
    assert np.isfinite(report.final_loss) and np.isfinite(report.test_control_l1)
    with pytest.raises(ValueError, match="control_loss"):
        train_probe(micro_dataset.out_dir, steps=1, config=TINY, other_views=False, control_loss="huber")
