"""`otavatar.demo.render_demo`: the whole torch pipeline on the tiny preset, written as PNGs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from otavatar.demo import render_demo
from otavatar.models import MotionController, TriplaneGenerator
from otavatar.weights import WeightsError, save_models


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_writes_frontal_frame_and_sheet(tmp_path):
    result = render_demo(tmp_path, views=3, progress=False)
    frame, sheet = _pixels(result.frame), _pixels(result.sheet)
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8      # tiny preset: SR to 128^2
    assert sheet.shape == (128, 3 * 128, 3)
    assert np.array_equal(sheet[:, 128:256], frame)                       # the middle view is frontal
    assert not np.array_equal(sheet[:, :128], sheet[:, 256:])             # the cameras differ
    assert result.weights == "seeded random init" and result.views == 3


def test_same_seed_same_pixels_other_seed_differs(tmp_path):
    a = _pixels(render_demo(tmp_path / "a", views=1, progress=False).frame)
    b = _pixels(render_demo(tmp_path / "b", views=1, progress=False).frame)
    c = _pixels(render_demo(tmp_path / "c", views=1, seed=1, progress=False).frame)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_weights_file_gives_the_saved_models(tmp_path):
    import torch

    torch.manual_seed(7)
    G, C = TriplaneGenerator.tiny().eval(), MotionController.tiny().eval()
    path = save_models(tmp_path / "m.safetensors", generator=G, controller=C)
    from_file = render_demo(tmp_path / "f", weights=path, views=1, seed=7, progress=False)
    seeded = render_demo(tmp_path / "s", views=1, seed=7, progress=False)   # seed 7 draws the same init
    assert from_file.weights == str(path)
    assert np.array_equal(_pixels(from_file.frame), _pixels(seeded.frame))


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="views must be >= 1"):
        render_demo(tmp_path, views=0)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        render_demo(tmp_path, preset="huge")
    with pytest.raises(WeightsError):
        render_demo(tmp_path, weights=tmp_path / "missing.safetensors")
    assert not any(tmp_path.iterdir())                                     # nothing written on failure
