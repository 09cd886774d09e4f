"""The embedded default model ships in the package, loads with no arguments and stays small."""
from __future__ import annotations

import torch

from otavatar.config import GeneratorConfig
from otavatar.weights import load_default, load_models
from otavatar.weights.default import default_path

MAX_BYTES = 25 * 2**20      # the cap for generator + controller + identity encoder


def test_default_files_exist_and_fit_the_cap():
    folder = default_path().parent
    shipped = [default_path(), folder / "identity_encoder.safetensors"]
    assert all(p.is_file() for p in shipped), [str(p) for p in shipped if not p.is_file()]
    assert sum(p.stat().st_size for p in shipped) <= MAX_BYTES


def test_load_default_gives_the_trained_tiny_pair_with_provenance():
    G, C = load_default()
    assert G.config == GeneratorConfig.tiny() and C.config.num_ws == G.config.num_ws
    assert not G.training and not C.training
    provenance = load_models(default_path()).metadata["provenance"]
    assert {"commands", "data", "seconds"} <= set(provenance)
    # trained, not an initialisation: w_avg is the prior's mean code, not the mapping network's zero init
    assert G.w_avg.abs().sum() > 0
    with torch.no_grad():
        motion = C(torch.zeros(1, 70, 27))
    assert torch.isfinite(motion).all()
