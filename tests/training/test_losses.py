"""Training losses (spec 3.5): zero at pred == target, positive otherwise, gradients reach the prediction."""
from __future__ import annotations

import pytest
import torch

from otavatar.training.losses import LossWeights, PerceptualLoss, area_resize, gram_matrix, pixel_loss
from otavatar.training.vgg import vgg19


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def vgg():
    return vgg19(None, seed=0)


@pytest.fixture
def images():
    """pred [2,3,32,32] (requires grad), target [2,3,64,64]: the target is larger, as in training."""
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    pred = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    return pred, target


def test_loss_weights_defaults_follow_spec():
    w = LossWeights()
    assert (w.perceptual, w.style, w.local, w.pixel, w.identity, w.monotonic, w.tv) == (1, 250, 10, 1, 1, 1, 1)
    with pytest.raises(Exception):
        w.pixel = 2.0  # frozen


def test_area_resize_shrinks_by_box_mean_and_grows_bilinear():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down = area_resize(x, 2)
    assert torch.allclose(down, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = area_resize(x, 8)
    assert up.shape == (1, 1, 8, 8)
    assert torch.allclose(up, torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))
    assert area_resize(x, 4) is x
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        area_resize(torch.zeros(4, 4), 2)


def test_pixel_loss_zero_positive_and_grad(images):
    pred, target = images
    same = area_resize(target, 32).clone().requires_grad_(True)
    assert pixel_loss(same, target).item() == pytest.approx(0.0, abs=1e-7)
    loss = pixel_loss(pred, target)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_pixel_loss_is_smooth_l1_beta_1():
    pred = torch.zeros(1, 3, 4, 4)
    small = torch.full((1, 3, 4, 4), 0.5)   # |d| < 1: 0.5 d^2
    large = torch.full((1, 3, 4, 4), 1.5)   # |d| >= 1: |d| - 0.5
    assert pixel_loss(pred, small).item() == pytest.approx(0.125)
    assert pixel_loss(pred, large).item() == pytest.approx(1.0)


def test_pixel_loss_validates_shapes():
    with pytest.raises(ValueError, match="share"):
        pixel_loss(torch.zeros(1, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_gram_matrix_normalisation():
    f = torch.ones(1, 2, 3, 3)
    assert torch.allclose(gram_matrix(f), torch.full((1, 2, 2), 9.0 / 18.0))


def test_perceptual_zero_positive_and_grad(vgg, images):
    pred, target = images
    loss_fn = PerceptualLoss(vgg)
    same = area_resize(target, 32).clone().requires_grad_(True)
    assert loss_fn(same, target).item() == pytest.approx(0.0, abs=1e-6)
    loss = loss_fn(pred, target)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_perceptual_scales_and_style_change_the_value(vgg, images):
    pred, target = images
    with torch.no_grad():
        one = PerceptualLoss(vgg, num_scales=1)(pred, target)
        two = PerceptualLoss(vgg, num_scales=2)(pred, target)
        no_style = PerceptualLoss(vgg, num_scales=1, style_weight=0.0)(pred, target)
    assert two > one > no_style > 0


def test_perceptual_stays_in_eval_and_validates(vgg):
    loss_fn = PerceptualLoss(vgg).train()
    assert loss_fn.training and not loss_fn.vgg.training
    with pytest.raises(ValueError, match="relu0_0"):
        PerceptualLoss(vgg, layers=("relu0_0",))
    with pytest.raises(ValueError, match="num_scales"):
        PerceptualLoss(vgg, num_scales=0)
    with pytest.raises(ValueError, match="3-channel"):
        loss_fn(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="16px"):  # 32 -> 16 -> 8 -> 4: too small for relu5_1
        PerceptualLoss(vgg, num_scales=4)(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_perceptual_default_builds_random_vgg():
    loss_fn = PerceptualLoss(layers=("relu1_1", "relu2_1"), num_scales=1)
    assert isinstance(loss_fn.vgg, torch.nn.Module)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert loss_fn(x, x).item() == pytest.approx(0.0, abs=1e-6)
