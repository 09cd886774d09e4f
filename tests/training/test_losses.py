"""Training losses (spec 3.5): zero at pred == target, positive otherwise, gradients reach the prediction."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from otavatar.training.arcface import arcface_resnet18
from otavatar.config import GeneratorConfig, RenderConfig
from otavatar.training.losses import (ARCFACE_TEMPLATE_112, DensityLosses, IdentityLoss, LossWeights, PerceptualLoss,
                                      arcface_crop, area_resize, crop_boxes, density_regularizers, five_points,
                                      gram_matrix, local_loss, pixel_loss, similarity_transform)
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


# --------------------------------------------------------------------------------------------------- identity


def landmarks_with_five(points: torch.Tensor) -> torch.Tensor:
    """[B,5,2] -> [B,68,2] whose derived 5 points are exactly `points` (other landmarks at the centroid)."""
    lm = points.mean(dim=1, keepdim=True).repeat(1, 68, 1)
    lm[:, 36] = lm[:, 39] = points[:, 0]
    lm[:, 42] = lm[:, 45] = points[:, 1]
    lm[:, 30], lm[:, 48], lm[:, 54] = points[:, 2], points[:, 3], points[:, 4]
    return lm


def template(size: int, batch: int = 2) -> torch.Tensor:
    return (torch.tensor(ARCFACE_TEMPLATE_112) * (size / 112)).expand(batch, 5, 2).clone()


def grey(x: torch.Tensor) -> torch.Tensor:
    return 0.2989 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]


@pytest.fixture(scope="module")
def arcface():
    torch.manual_seed(0)
    return arcface_resnet18(None)


def test_five_points_from_68():
    lm = torch.randn(1, 68, 2)
    pts = five_points(lm)
    assert torch.allclose(pts[0, 0], (lm[0, 36] + lm[0, 39]) / 2)
    assert torch.allclose(pts[0, 1], (lm[0, 42] + lm[0, 45]) / 2)
    assert torch.equal(pts[0, 2:], lm[0, [30, 48, 54]])
    assert torch.equal(five_points(landmarks_with_five(template(64))), template(64))


def test_similarity_transform_recovers_rotation_scale_shift_and_refuses_reflection():
    src = torch.randn(3, 5, 2, dtype=torch.float64)
    angle = torch.tensor(0.3, dtype=torch.float64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    dst = 1.7 * src @ rot.T + torch.tensor([4.0, -2.0], dtype=torch.float64)
    m = similarity_transform(src, dst)
    assert torch.allclose(m[:, :, :2], (1.7 * rot).expand(3, 2, 2), atol=1e-9)
    assert torch.allclose(m[:, :, 2], torch.tensor([4.0, -2.0], dtype=torch.float64).expand(3, 2), atol=1e-9)
    mirrored = dst * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert (torch.linalg.det(similarity_transform(src, mirrored)[:, :, :2]) > 0).all()  # never a reflection


def test_arcface_crop_is_identity_when_points_are_the_template():
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    crop = arcface_crop(images, landmarks_with_five(template(64)), size=64)
    assert crop.shape == (2, 1, 64, 64)
    assert torch.allclose(crop, grey(images), atol=1e-5)


def test_arcface_crop_maps_the_five_points_onto_the_template():
    """Dots drawn at the 5 derived points of a shifted, rotated, scaled face land on the template after cropping."""
    size, big = 64, 96
    angle = torch.tensor(0.2)
    rot = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    pts = (template(size, 1) - size / 2) @ rot.T * 1.25 + torch.tensor([50.0, 44.0])   # [1,5,2] in a 96px image
    images = -torch.ones(1, 3, big, big)
    for x, y in pts[0].round().long().tolist():
        images[0, :, y, x] = 1.0  # bright dots at whole pixels
    pts = pts.round()
    crop = arcface_crop(images, landmarks_with_five(pts), size=size)[0, 0]
    expected = template(size, 1)[0]
    for (tx, ty) in expected.tolist():
        window = crop[int(ty) - 2:int(ty) + 3, int(tx) - 2:int(tx) + 3]
        iy, ix = divmod(int(window.argmax()), 5)
        assert abs(int(ty) - 2 + iy - ty) <= 1.0 and abs(int(tx) - 2 + ix - tx) <= 1.0
    assert crop.max() > -0.5  # the dots survived the warp


def test_arcface_crop_gradient_reaches_images_not_landmarks():
    images = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    lm = landmarks_with_five(template(32, 1) * 0.8 + 3).requires_grad_(True)
    arcface_crop(images, lm, size=16).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert lm.grad is None


def test_arcface_crop_validates():
    with pytest.raises(ValueError, match=r"\[B,68,2\]"):
        arcface_crop(torch.zeros(1, 3, 32, 32), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="coincide"):
        arcface_crop(torch.zeros(1, 3, 32, 32), torch.zeros(1, 68, 2))


def test_identity_loss_zero_positive_and_grad(arcface):
    lm = landmarks_with_five(template(64) * 0.9 + 3)
    target = torch.rand(2, 3, 128, 128) * 2 - 1
    loss_fn = IdentityLoss(arcface)
    same = area_resize(target, 64).requires_grad_(True)
    assert loss_fn(same, target, lm).item() == pytest.approx(0.0, abs=1e-5)
    pred = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    loss = loss_fn(pred, target, lm)
    assert 0 < loss.item() <= 2
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in arcface.parameters())
    assert not loss_fn.train().encoder.training


# ------------------------------------------------------------------------------------------------------ local


def face_landmarks(size: int, batch: int = 2) -> torch.Tensor:
    """[B,68,2] with eyes around y = 0.31 S and the mouth around y = 0.72 S (boxes far apart); others at centre."""
    lm = torch.full((68, 2), size / 2)
    ring = torch.linspace(0, 2 * torch.pi, 7)[:6]
    for start, cx in ((36, 0.3), (42, 0.7)):
        lm[start:start + 6, 0] = size * cx + size * 0.08 * ring.cos()
        lm[start:start + 6, 1] = size * 0.31 + size * 0.03 * ring.sin()
    mouth = torch.linspace(0, 2 * torch.pi, 21)[:20]
    lm[48:68, 0] = size * 0.5 + size * 0.12 * mouth.cos()
    lm[48:68, 1] = size * 0.72 + size * 0.05 * mouth.sin()
    return lm.expand(batch, 68, 2).clone()


def test_crop_boxes_whole_image_is_identity_and_half_is_a_half():
    x = torch.rand(1, 2, 16, 16)
    whole = torch.tensor([[-0.5, -0.5, 15.5, 15.5]])
    assert torch.allclose(crop_boxes(x, whole, 16), x, atol=1e-6)
    left = torch.tensor([[-0.5, -0.5, 7.5, 15.5]])  # left half, stretched to 8 wide by 16 tall -> 8x8 grid
    assert torch.allclose(crop_boxes(x, left, 8), torch.nn.functional.avg_pool2d(x[..., :8], (2, 1)), atol=1e-6)


def test_local_loss_zero_positive_and_grad():
    target = torch.rand(2, 3, 128, 128) * 2 - 1
    lm = face_landmarks(64)
    same = area_resize(target, 64).requires_grad_(True)
    assert local_loss(same, target, lm).item() == pytest.approx(0.0, abs=1e-7)
    pred = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    loss = local_loss(pred, target, lm)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # only the mouth and eye boxes receive gradient: the forehead row 2 and the chin row 62 get none
    assert pred.grad[..., 2, :].abs().sum() == 0 and pred.grad[..., 62, :].abs().sum() == 0


def test_local_loss_eye_term_is_live_when_only_eyes_differ():
    """The published eye crops compared the target with itself (always 0); here eyes alone move the loss."""
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    lm = face_landmarks(64, 1)
    eyes_differ = target.clone()
    eyes_differ[..., 10:30, :] = -eyes_differ[..., 10:30, :]   # rows of the eye boxes only (mouth box: 42-51)
    mouth_differ = target.clone()
    mouth_differ[..., 40:56, :] = -mouth_differ[..., 40:56, :]
    assert local_loss(eyes_differ, target, lm).item() > 0.1
    assert local_loss(mouth_differ, target, lm).item() > 0.1
    assert local_loss(target, target, lm).item() == 0.0


def test_local_loss_small_render_and_validation():
    target = torch.rand(1, 3, 128, 128) * 2 - 1
    pred = torch.rand(1, 3, 32, 32) * 2 - 1
    assert local_loss(pred, target, face_landmarks(32, 1)).item() > 0  # 8 px crops at 32^2
    with pytest.raises(ValueError, match=r"\[B,68,2\]"):
        local_loss(pred, target, torch.zeros(2, 68, 2))


# ---------------------------------------------------------------------------------------------------- density


def stub_generator(box_warp: float):
    """sigma = feature channel 0 (so a plane ramp sets the density field directly)."""
    return SimpleNamespace(config=SimpleNamespace(render=RenderConfig(box_warp=box_warp)),
                           decoder=lambda f: (f[..., 1:], f[..., :1]))


def z_ramp(slope_sign: float, p: int = 16) -> torch.Tensor:
    """planes [1,3,2,P,P]: channel 0 of the XZ plane rises (sign +1) or falls (-1) linearly with z (its rows)."""
    planes = torch.zeros(1, 3, 2, p, p)
    planes[0, 1, 0] = slope_sign * torch.linspace(-1, 1, p)[:, None].expand(p, p)
    return planes


def test_density_zero_planes_give_zero_losses():
    out = density_regularizers(stub_generator(1.0), torch.zeros(2, 3, 2, 8, 8), points=64)
    assert isinstance(out, DensityLosses)
    assert out.monotonic.item() == 0.0 and out.tv.item() == 0.0


def test_monotonic_sign_penalises_density_falling_into_the_head():
    """The head faces +z: density rising with z falls going into the head (-z) and is penalised; the mirror is not.

    box_warp 4 keeps every point of [-1,1]^3 inside the cube, so the ramp is linear at all samples; expected value
    = ramp slope (P/(P-1) per normalised unit) / 3 planes x dz (box_warp/256 world = 1/128 normalised)."""
    gen = torch.Generator().manual_seed(0)
    falling_inwards = density_regularizers(stub_generator(4.0), z_ramp(+1.0), points=256, rng=gen)
    rising_inwards = density_regularizers(stub_generator(4.0), z_ramp(-1.0), points=256, rng=gen)
    assert falling_inwards.monotonic.item() == pytest.approx(16 / 15 / 3 / 128, rel=1e-3)
    assert rising_inwards.monotonic.item() == 0.0
    assert falling_inwards.tv.item() > 0 and rising_inwards.tv.item() > 0


def test_density_rng_reproducible():
    planes = torch.randn(1, 3, 2, 8, 8)
    a = density_regularizers(stub_generator(1.0), planes, points=32, rng=torch.Generator().manual_seed(5))
    b = density_regularizers(stub_generator(1.0), planes, points=32, rng=torch.Generator().manual_seed(5))
    assert torch.equal(a.monotonic, b.monotonic) and torch.equal(a.tv, b.tv)


def test_density_gradients_reach_planes_and_decoder():
    from otavatar.models.decoder import OSGDecoder

    cfg = GeneratorConfig.tiny()
    decoder = OSGDecoder(cfg.plane_channels, cfg.plane_channels, hidden=cfg.decoder_hidden)
    generator = SimpleNamespace(config=cfg, decoder=decoder)
    planes = torch.randn(1, 3, cfg.plane_channels, 16, 16, requires_grad=True)
    out = density_regularizers(generator, planes, points=500, rng=torch.Generator().manual_seed(0))
    assert out.monotonic.item() > 0 and out.tv.item() > 0
    (out.monotonic + out.tv).backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())
    with pytest.raises(ValueError, match=r"\[B,3,C,P,P\]"):
        density_regularizers(generator, torch.zeros(1, 2, 4, 8, 8))
