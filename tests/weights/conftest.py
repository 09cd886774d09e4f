"""Fixtures: the parity recipe drawn for the tiny preset in the official layout (writers: official_files.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from official_files import official_controller_keys, official_generator_keys, with_constants
from otavatar.models import MotionController, TriplaneGenerator


@pytest.fixture(scope="session")
def tiny_keys() -> dict[str, list]:
    return {"generator": official_generator_keys(TriplaneGenerator.tiny()),
            "controller": official_controller_keys(MotionController.tiny())}


@pytest.fixture(scope="session")
def tiny_official(recipe, tiny_keys) -> dict[str, dict[str, torch.Tensor]]:
    """The recipe (seed 1) drawn for the tiny preset, in the official layout: {'generator': ..., 'controller': ...}."""
    return {"generator": with_constants(recipe(tiny_keys["generator"], seed=1), tiny_keys["generator"]),
            "controller": with_constants(recipe(tiny_keys["controller"], seed=1), tiny_keys["controller"])}


@pytest.fixture(scope="session")
def tiny_reference(tiny_official) -> dict[str, nn.Module]:
    """Models loaded straight from the recipe dicts: what every conversion must reproduce."""
    G = TriplaneGenerator.tiny().eval()
    G.load_official_state_dict(tiny_official["generator"])
    C = MotionController.tiny().eval()
    C.load_official_state_dict(tiny_official["controller"])
    return {"generator": G, "controller": C}


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file that only appears if something executes code from a checkpoint."""
    return tmp_path / "EXECUTED"
