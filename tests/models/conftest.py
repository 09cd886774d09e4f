"""Official-preset networks loaded with the parity recipe (module-scoped: building them takes seconds)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def official_generator(recipe, eg3d_keys):
    from otavatar.models import TriplaneGenerator

    G = TriplaneGenerator.official().eval().requires_grad_(False)
    G.load_official_state_dict(recipe(eg3d_keys, seed=0))
    return G


@pytest.fixture(scope="session")
def official_controller(recipe, controller_keys):
    from otavatar.models import MotionController

    C = MotionController.official().eval().requires_grad_(False)
    C.load_official_state_dict(recipe(controller_keys, seed=0))
    return C


@pytest.fixture(scope="session")
def case0_planes(official_generator, eg3d_case0, eg3d_planes0_or_none):
    """The stored planes when available, else ours (checked against planes_sub/statistics elsewhere)."""
    if eg3d_planes0_or_none is not None:
        return torch.from_numpy(eg3d_planes0_or_none)
    with torch.no_grad():
        return official_generator.planes(torch.from_numpy(eg3d_case0["ws"]))
