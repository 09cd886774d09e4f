"""SynthIdentityEncoder: shapes and normalisation, verification statistics, micro training, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from otavatar.training.identity_encoder import (
    DEFAULT_IDENTITY_ENCODER, IdentityEncoderConfig, SynthIdentityEncoder, load_identity_encoder,
    train_identity_encoder, verification,
)

TINY = IdentityEncoderConfig(size=32, pool=1, widths=(8, 8, 16), embedding=16)


def small_crop(images, landmarks):
    """arcface_crop at 32 px (the real crop, smaller): keeps the micro training cheap."""
    from otavatar.training.losses import arcface_crop

    return arcface_crop(images, landmarks, size=32)


@pytest.fixture(scope="module")
def micro_dataset(tmp_path_factory):
    from otavatar.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth")
    # the last max(1, N // 8) subjects are the test split; verification needs 2 of them: 17 -> 15 train + 2 test
    return write_dataset(out / "d", subjects=17, videos_per_subject=1, frames=2, resolution=32, progress=False)


def test_forward_is_unit_norm_and_validates():
    torch.manual_seed(0)
    enc = SynthIdentityEncoder(TINY).eval()
    e = enc(torch.rand(3, 1, 32, 32) * 2 - 1)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"\[B,1,32,32\]"):
        enc(torch.zeros(1, 3, 32, 32))


def test_default_config_takes_arcface_crop_output():
    from otavatar.training.losses import arcface_crop

    enc = SynthIdentityEncoder().eval()
    rng = np.random.default_rng(0)
    lm = torch.from_numpy(rng.uniform(40, 90, (2, 68, 2)).astype(np.float32))
    crop = arcface_crop(torch.rand(2, 3, 128, 128) * 2 - 1, lm)
    assert enc(crop).shape == (2, 128)


def test_verification_statistics():
    e = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1).numpy()
    same, diff, auc = verification(e, np.array([0, 0, 1, 1]))
    assert same > 0.9 and diff < 0.2 and auc == 1.0
    same, diff, auc = verification(e, np.array([0, 1, 0, 1]))             # labels that ignore the geometry
    assert auc < 0.5
    with pytest.raises(ValueError, match="two identities"):
        verification(e, np.zeros(4))


def test_micro_training_lowers_loss_and_round_trips(micro_dataset, tmp_path):
    out = tmp_path / "enc.safetensors"
    enc, report = train_identity_encoder(micro_dataset.out_dir, steps=20, batch=16, seed=0, out=out, lr=5e-3,
                                         config=TINY, crop=small_crop)
    assert report.train_identities == 15 and report.test_identities == 2
    assert report.final_loss < report.first_loss
    assert -1 <= report.different_cosine <= 1 and -1 <= report.same_cosine <= 1 and 0 <= report.auc <= 1
    loaded = load_identity_encoder(out)
    assert loaded.config == TINY and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), enc.eval()(x), rtol=0, atol=5e-3)   # float16 storage
    with pytest.raises(ValueError, match="synth_identity_encoder"):
        from otavatar.training.probe import FaceProbe, ProbeConfig, save_probe

        save_probe(FaceProbe(ProbeConfig(size=32, widths=(8,), hidden=8)), tmp_path / "p.safetensors")
        load_identity_encoder(tmp_path / "p.safetensors")


@pytest.mark.skipif(not DEFAULT_IDENTITY_ENCODER.is_file(), reason="the default encoder weights are not built yet")
def test_shipped_encoder_loads():
    enc = load_identity_encoder()
    assert enc.config.size == 128 and DEFAULT_IDENTITY_ENCODER.stat().st_size < 3 * 2**20
    assert torch.isfinite(enc(torch.zeros(1, 1, 128, 128))).all()
