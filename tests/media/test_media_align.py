"""FFHQ alignment: output size, landmarks where the recipe puts them, image content following the transform."""
from __future__ import annotations

import numpy as np
import pytest

from otavatar.media import align_portrait
from otavatar.media.align import ffhq_quad


def _blobs(shape, points, sigma=3.0) -> np.ndarray:
    """Bright Gaussian dots at `points` on a dark image (pixel centres at integer + 0.5)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    img = np.full(shape[:2], 20.0)
    for x, y in points:
        img += 220.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _centroid(image: np.ndarray, near, radius=10) -> np.ndarray:
    x0, y0 = int(near[0]) - radius, int(near[1]) - radius
    win = image[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1, 0].astype(float) - 20.0
    win = win.clip(0)
    gy, gx = np.mgrid[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1] + 0.5
    return np.array([(win * gx).sum() / win.sum(), (win * gy).sum() / win.sum()])


@pytest.fixture
def upright():
    """An upright face whose width term wins: eyes 100 px apart, mouth 90 px below (2*100 > 1.8*90)."""
    return np.array([[250.0, 200.0], [350.0, 200.0], [300.0, 250.0], [265.0, 290.0], [335.0, 290.0]])


def test_eyes_land_at_the_ffhq_positions(upright):
    out = align_portrait(_blobs((480, 640), upright), upright, size=256, padding="white")
    assert out.image.shape == (256, 256, 3) and out.image.dtype == np.uint8
    # FFHQ: eyes at x = (0.5 -+ 1/8) size, y = (0.5 - 0.025 |m|/|e|) size with |m|/|e| = 0.9
    y = (0.5 - 0.025 * 0.9) * 256
    assert np.allclose(out.landmarks5[:2], [[96.0, y], [160.0, y]], atol=1e-3)
    for predicted in out.landmarks5:                       # the pixels moved with the landmarks
        assert np.allclose(_centroid(out.image, predicted), predicted, atol=0.35)


def test_rotation_and_scale_are_undone(upright):
    theta = np.deg2rad(25.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    tilted = (upright - 300.0) @ rot.T * 2.5 + [400.0, 380.0]   # rotated 25 degrees, 2.5x larger
    a = align_portrait(_blobs((800, 800), tilted, sigma=7.5), tilted, size=256, padding="white")
    b = align_portrait(_blobs((480, 640), upright), upright, size=256, padding="white")
    assert np.allclose(a.landmarks5, b.landmarks5, atol=1e-3)
    assert np.isclose(np.hypot(*a.transform[:, 0]), np.hypot(*b.transform[:, 0]) / 2.5)
    for predicted in a.landmarks5:
        assert np.allclose(_centroid(a.image, predicted), predicted, atol=0.5)


def test_real_photo_padding_modes(astronaut, astronaut_face):
    crop = astronaut[75:350, 130:330]                        # face near the top edge: the square needs padding
    lm = astronaut_face.landmarks5 - [130, 75]
    quad = ffhq_quad(lm)
    assert quad[[0, 3], 1].max() < -20                       # its whole top edge is above the photo
    reflect = align_portrait(crop, lm, size=128)
    white = align_portrait(crop, lm, size=128, padding="white")
    assert reflect.image.shape == white.image.shape == (128, 128, 3)
    assert (white.image[0] == 255).all()                     # top row outside the photo: white
    assert reflect.image[0].mean() < 250                     # mirrored and blurred content instead
    # well inside the photo (photo row 0 maps to crop row ~43 here; the blur fades out within a third of
    # the pad width of the boundary) both modes show the same pixels
    edge = (white.transform[:, :2] @ [100.0, 0.0] + white.transform[:, 2])[1]
    rows, cols = slice(int(edge) + 25, 120), slice(30, 98)
    assert np.abs(reflect.image[rows, cols].astype(int) - white.image[rows, cols]).max() <= 2


def test_validation():
    img = np.zeros((64, 64, 3), np.uint8)
    lm = np.array([[20.0, 20], [40, 20], [30, 30], [22, 40], [38, 40]])
    with pytest.raises(ValueError, match=r"\[5,2\]"):
        align_portrait(img, lm[:4])
    with pytest.raises(ValueError, match="coincide"):
        align_portrait(img, np.repeat(lm[:1], 5, axis=0))
    with pytest.raises(ValueError, match="padding"):
        align_portrait(img, lm, padding="black")
    with pytest.raises(ValueError, match="uint8 RGB"):
        align_portrait(img[..., 0], lm)
