"""Motion controller behaviour beyond the parity fixture."""
from __future__ import annotations

import pytest
import torch

from otavatar.config import ControllerConfig
from otavatar.models import MotionController
from otavatar.weights.state import WeightsError


def official_layout(controller: MotionController) -> dict[str, torch.Tensor]:
    """Native state dict -> the published layout with the shared Linear repeated under 0, 2, 4, 6, 8."""
    state = {k: v.clone() for k, v in controller.state_dict().items()}
    for i in range(1, controller.config.mlp_layers):
        for p in ("weight", "bias"):
            state[f"mapping_Refine.{2 * i}.{p}"] = state[f"mapping_Refine.0.{p}"]
    return state


def trained_looking_controller() -> MotionController:
    """A tiny controller with N(0, 0.1^2) parameters: a large constant part, unlike a fresh one's zero motion."""
    torch.manual_seed(0)
    controller = MotionController.tiny()
    with torch.no_grad():
        for p in controller.parameters():
            p.normal_(std=0.1)
    return controller


def test_parameter_count_is_the_published_one():
    assert sum(p.numel() for p in MotionController.official().parameters()) == 869_420


def test_official_layout_round_trip_with_ddp_prefix():
    torch.manual_seed(0)
    src = MotionController.tiny()
    dst = MotionController.tiny()
    dst.load_official_state_dict({"module." + k: v for k, v in official_layout(src).items()})
    x = torch.randn(3, 70, 27)
    assert torch.equal(src(x), dst(x))


def test_alias_that_differs_is_refused():
    state = official_layout(MotionController.tiny())
    state["mapping_Refine.4.weight"] = state["mapping_Refine.4.weight"] + 1
    with pytest.raises(WeightsError, match="mapping_Refine.4.weight differs from mapping_Refine.0.weight"):
        MotionController.tiny().load_official_state_dict(state)


def test_missing_key_is_listed():
    state = official_layout(MotionController.tiny())
    del state["direction.weight"]
    with pytest.raises(WeightsError, match="missing keys: direction.weight"):
        MotionController.tiny().load_official_state_dict(state)


def test_basis_is_orthonormal_and_motion_lies_in_its_span():
    C = MotionController.tiny()
    q = C.basis()
    assert torch.allclose(q.t() @ q, torch.eye(C.config.directions), atol=1e-5)
    out = C.forward_details(torch.randn(2, 70, 27))
    assert out.motion.shape == (2, C.config.num_ws, C.config.w_dim)
    projected = out.motion @ q @ q.t()
    assert torch.allclose(projected, out.motion, atol=1e-5)


def test_gradients_flow_through_qr():
    C = MotionController.tiny()
    C(torch.randn(2, 70, 27)).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in C.parameters())


@pytest.mark.parametrize("shape", [(2, 70, 26), (2, 73, 27), (70, 27)])
def test_input_shape_is_validated(shape):
    with pytest.raises(ValueError, match=r"controller input must be \[B,70,27\]"):
        MotionController.tiny()(torch.zeros(shape))


def test_config_rejects_short_window():
    with pytest.raises(ValueError, match="too short"):
        ControllerConfig(window=13)


def test_pin_neutral_zeroes_the_neutral_motion_and_keeps_every_difference():
    controller = trained_looking_controller()
    x = torch.randn(3, 70, 27)
    neutral = controller.neutral_window()
    assert neutral.shape == (1, 70, 27) and not neutral.any()
    before = controller(x) - controller(neutral)
    assert controller(neutral).abs().max() > 0.1
    assert controller.pin_neutral_() is controller
    torch.testing.assert_close(controller(neutral), torch.zeros_like(controller(neutral)), atol=1e-6, rtol=0)
    torch.testing.assert_close(controller(x), before, atol=1e-5, rtol=0)


def test_pin_mean_zeroes_the_mean_motion_over_its_windows_and_keeps_every_difference():
    controller = trained_looking_controller()
    reference, x = torch.randn(16, 70, 27), torch.randn(3, 70, 27)
    before = controller(x) - controller(reference).mean(0)
    assert controller(reference).mean(0).abs().max() > 0.1
    assert controller.pin_mean_(reference) is controller
    torch.testing.assert_close(controller(reference).mean(0), torch.zeros(controller.config.num_ws,
                                                                          controller.config.w_dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(controller(x), before, atol=1e-5, rtol=0)


def test_scale_motion_multiplies_every_motion():
    controller = trained_looking_controller()
    x = torch.randn(3, 70, 27)
    before = controller(x)
    assert controller.scale_motion_(0.5) is controller
    torch.testing.assert_close(controller(x), 0.5 * before, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="finite"):
        controller.scale_motion_(float("nan"))


def test_use_pose_false_ignores_the_pose_inputs_and_keeps_the_state_dict():
    torch.manual_seed(0)
    with_pose = MotionController.tiny()
    without = with_pose.without_pose()                          # same keys and shapes
    assert without.config.use_pose is False and with_pose.config.use_pose is True
    with torch.no_grad():
        for p in without.parameters():
            p.normal_(std=0.1)
    x = torch.randn(2, 70, 27)
    moved = x.clone()
    moved[:, 64:] = torch.randn(2, 6, 27)                        # other angles and translation
    torch.testing.assert_close(without(x), without(moved), atol=0, rtol=0)
    expression_only = x.clone()
    expression_only[:, 64:] = 0
    torch.testing.assert_close(without(x), without(expression_only), atol=0, rtol=0)
    assert not torch.equal(without(x), without(torch.randn(2, 70, 27)))
