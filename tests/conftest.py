"""Shared fixtures: the parity recipe and golden arrays, deterministic torch settings."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from otavatar import _grpcenv  # noqa: F401  (before any test module imports grpc: grpc/grpc#43055, see there)

REPO = Path(__file__).resolve().parents[1]
VENDORED_PARITY = REPO / "tests" / "fixtures" / "parity"


def parity_dirs() -> list[Path]:
    """Where the parity files may live, most specific first."""
    dirs = []
    if os.environ.get("OTAVATAR_PARITY_DIR"):
        dirs.append(Path(os.environ["OTAVATAR_PARITY_DIR"]))
    dirs += [REPO.parent / "shared" / "parity", VENDORED_PARITY]
    return dirs


def parity_file(name: str) -> Path | None:
    for d in parity_dirs():
        if (d / name).is_file():
            return d / name
    return None


@pytest.fixture(scope="session")
def recipe():
    """`recipe_state_dict(keys, seed)` from the parity folder's recipe.py."""
    path = parity_file("recipe.py")
    spec = importlib.util.spec_from_file_location("parity_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.recipe_state_dict


@pytest.fixture(scope="session")
def eg3d_keys() -> list:
    return json.loads(parity_file("eg3d_keys.json").read_text())


@pytest.fixture(scope="session")
def controller_keys() -> list:
    return json.loads(parity_file("controller_keys.json").read_text())


@pytest.fixture(scope="session")
def eg3d_case0() -> dict[str, np.ndarray]:
    return dict(np.load(parity_file("eg3d_case0.npz")))


@pytest.fixture(scope="session")
def controller_case0() -> dict[str, np.ndarray]:
    return dict(np.load(parity_file("controller_case0.npz")))


@pytest.fixture(scope="session")
def eg3d_planes0_or_none() -> np.ndarray | None:
    """The full case-0 planes [1,3,32,256,256] (22.6 MB, not vendored) or None when absent."""
    path = parity_file("eg3d_case0_planes.npz")
    return None if path is None else np.load(path)["planes"]


@pytest.fixture(scope="session")
def eg3d_planes0(eg3d_planes0_or_none) -> np.ndarray:
    if eg3d_planes0_or_none is None:
        pytest.skip("eg3d_case0_planes.npz not available (set OTAVATAR_PARITY_DIR)")
    return eg3d_planes0_or_none


@pytest.fixture(autouse=True)
def _torch_determinism():
    """The CI machine's 2 cores shared between pytest-xdist workers, and no TF32, so float32 parity holds.

    Two threads in each of `-n 2` workers oversubscribes 2 cores (4 busy threads): the weights tests ran
    5x slower (73 s instead of 15 s). Results are compared within one process, so the count does not matter.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
