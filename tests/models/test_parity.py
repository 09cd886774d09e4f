"""Numerical parity with the published networks (golden arrays of shared/parity, recipe seed 0).

Tolerances are parity/README.md section 6's: each is 20-50x the measured float32-vs-float64 rounding
level of the published networks, so they admit a different order of operations but no semantic change.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otavatar.kernels import sample_importance
from otavatar.models.rays import rays_from_cameras

ATOL = {
    "ws_mapped": 1e-8, "planes": 2e-4, "planes_mean": 5e-5, "planes_std": 2e-5, "planes_minmax": 2e-4,
    "ray_origins": 1e-6, "ray_directions": 5e-6, "depths_coarse": 5e-6, "weights_coarse": 1e-5,
    "depths_fine": 2e-5, "image_feature": 5e-5, "image_raw": 5e-5, "image_depth": 2e-5, "weights_sum": 2e-5,
    "image": 1e-4, "descriptor": 1e-5, "head": 2e-5, "alpha": 2e-5, "motion": 1e-5, "Q": 2e-6,
}


def assert_close(ours, golden, name: str) -> None:
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    assert ours.shape == golden.shape, f"{name}: shape {ours.shape} != {golden.shape}"
    assert np.isfinite(ours).all(), f"{name}: non-finite values"
    err = float(np.abs(ours.astype(np.float64) - golden).max())
    assert err <= ATOL[name], f"{name}: max abs error {err:.3g} > {ATOL[name]:.0e}"


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.fixture(scope="module")
def rendered0(official_generator, case0_planes, eg3d_case0):
    with torch.no_grad():
        return official_generator.render_planes(case0_planes, t(eg3d_case0["c"]))


# -- controller --------------------------------------------------------------------------------------------------

def test_controller_matches_every_array(official_controller, controller_case0):
    with torch.no_grad():
        out = official_controller.forward_details(t(controller_case0["x"]))
    for name in ("descriptor", "head", "alpha", "motion"):
        assert_close(getattr(out, name), controller_case0[name], name)
    assert_close(out.basis, controller_case0["Q"], "Q")


def test_controller_precomputed_basis_gives_same_motion(official_controller, controller_case0):
    x = t(controller_case0["x"])
    with torch.no_grad():
        motion = official_controller(x, basis=official_controller.basis())
    assert_close(motion, controller_case0["motion"], "motion")


# -- generator, stage by stage ------------------------------------------------------------------------------------

def test_mapping(official_generator, eg3d_case0):
    with torch.no_grad():
        ws = official_generator.mapping(t(eg3d_case0["z"]), t(eg3d_case0["c"]))
    assert_close(ws, eg3d_case0["ws_mapped"], "ws_mapped")


@pytest.mark.slow
@pytest.mark.parametrize("fused_modconv", [None, False], ids=["auto-fused", "shared-conv"])
def test_backbone_planes(official_generator, eg3d_case0, eg3d_planes0_or_none, fused_modconv):
    with torch.no_grad():
        planes = official_generator.planes(t(eg3d_case0["ws"]), fused_modconv=fused_modconv)
    assert tuple(planes.shape) == (1, 3, 32, 256, 256)
    assert_close(planes[:, :, :, ::8, ::8], eg3d_case0["planes_sub"], "planes")
    p64 = planes.double().flatten(3)
    assert_close(p64.mean(-1), eg3d_case0["planes_mean"], "planes_mean")
    assert_close(p64.std(-1, unbiased=False), eg3d_case0["planes_std"], "planes_std")
    assert_close(p64.amin(-1), eg3d_case0["planes_min"], "planes_minmax")
    assert_close(p64.amax(-1), eg3d_case0["planes_max"], "planes_minmax")
    if eg3d_planes0_or_none is not None:
        assert_close(planes, eg3d_planes0_or_none, "planes")


def test_rays(eg3d_case0):
    origins, directions = rays_from_cameras(t(eg3d_case0["c"]), 64)
    assert_close(origins, eg3d_case0["ray_origins"], "ray_origins")
    assert_close(directions, eg3d_case0["ray_directions"], "ray_directions")


def test_importance_sampler_alone(eg3d_case0):
    depths = t(eg3d_case0["depths_coarse"]).reshape(1, 1, 48, 1).expand(1, 4096, 48, 1)
    weights = t(eg3d_case0["weights_coarse"]).reshape(1, 4096, 47, 1)
    fine = sample_importance(depths, weights, 48)
    assert_close(fine.reshape(1, 64, 64, 48), eg3d_case0["depths_fine"], "depths_fine")


def test_renderer_alone(official_generator, case0_planes, eg3d_case0, rendered0):
    from otavatar.kernels.reference import render_rays

    origins, directions = rays_from_cameras(t(eg3d_case0["c"]), 64)
    with torch.no_grad():
        detail = render_rays(case0_planes, official_generator.decoder.weights(), origins, directions,
                             official_generator.ray_settings)
    assert_close(detail.depths_coarse[0, 0, :, 0], eg3d_case0["depths_coarse"], "depths_coarse")
    assert_close(detail.weights_coarse.reshape(1, 64, 64, 47), eg3d_case0["weights_coarse"], "weights_coarse")
    assert_close(detail.depths_fine.reshape(1, 64, 64, 48), eg3d_case0["depths_fine"], "depths_fine")
    assert_close(rendered0.features, eg3d_case0["image_feature"], "image_feature")
    assert_close(rendered0.image_raw, eg3d_case0["image_raw"], "image_raw")
    assert_close(rendered0.depth, eg3d_case0["image_depth"], "image_depth")
    assert_close(rendered0.weights_sum, eg3d_case0["weights_sum"], "weights_sum")


@pytest.mark.slow
@pytest.mark.parametrize("fused_modconv", [False, True], ids=["unfused", "fused"])
def test_superresolution_alone(official_generator, eg3d_case0, fused_modconv):
    with torch.no_grad():
        image = official_generator.super_resolve(t(eg3d_case0["image_raw"]), t(eg3d_case0["image_feature"]),
                                                 t(eg3d_case0["ws"]), fused_modconv=fused_modconv)
    assert_close(image, eg3d_case0["image"], "image")


@pytest.mark.slow
def test_renderer_then_superresolution(official_generator, rendered0, eg3d_case0):
    with torch.no_grad():
        image = official_generator.super_resolve(rendered0.image_raw, rendered0.features, t(eg3d_case0["ws"]))
    assert_close(image, eg3d_case0["image"], "image")


@pytest.mark.slow
def test_whole_chain(official_generator, eg3d_case0):
    with torch.no_grad():
        out = official_generator.synthesis(t(eg3d_case0["ws"]), t(eg3d_case0["c"]))
    assert_close(out.image, eg3d_case0["image"], "image")
    assert_close(out.image_raw, eg3d_case0["image_raw"], "image_raw")
    assert_close(out.features, eg3d_case0["image_feature"], "image_feature")
    assert_close(out.depth, eg3d_case0["image_depth"], "image_depth")
    assert_close(out.weights_sum, eg3d_case0["weights_sum"], "weights_sum")
    assert_close(out.planes[:, :, :, ::8, ::8], eg3d_case0["planes_sub"], "planes")
