"""Micro fixtures for the trainers: a 3-subject SynthHeads dataset at the tiny model's 128 px, a random prior."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def micro_dataset(tmp_path_factory):
    """3 subjects (2 train, 1 test) x 1 video x 4 frames at 128 px, OTAvatar LMDB layout + truth.npz."""
    pytest.importorskip("lmdb")
    from otavatar.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, subjects=3, videos_per_subject=1, frames=4, resolution=128, seed=3, progress=False)
    return out


@pytest.fixture(scope="session")
def random_prior(tmp_path_factory):
    """A seeded random `tiny` generator saved as a weights file (the trainer's starting point)."""
    import torch

    from otavatar.models import TriplaneGenerator
    from otavatar.weights import save_models

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "prior.safetensors"
    save_models(path, generator=TriplaneGenerator.tiny())
    return path
