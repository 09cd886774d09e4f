"""Fixtures: the parity recipe drawn for the tiny preset in the official layout (writers: official_files.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from official_files import official_controller_keys, official_generator_keys, with_constants
from otavatar.models import MotionController, TriplaneGenerator


@pytest.fixture(autouse=True)
def _no_thread_oversubscription():
    """Under pytest-xdist, share the cores between the workers instead of giving each worker 2 threads.

    The root conftest sets 2 threads (the CI machine's cores); with `-n 2` that is 4 busy threads on 2 cores,
    and these tests ran 5x slower (73 s instead of 15 s). Results here are compared within one process,
    so the thread count does not affect them.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield


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
