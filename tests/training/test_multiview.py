"""Multi-view SynthHeads sets: view 0 is the frame's own camera, extra views differ, files round-trip."""
from __future__ import annotations

import numpy as np
import pytest

from otavatar.training.multiview import load_multiview, render_multiview, save_multiview


@pytest.fixture(scope="module")
def views(micro_dataset):
    return render_multiview(micro_dataset / "truth.npz", frames_per_video=2, extra_views=1, resolution=32,
                            progress=False)


def test_shapes_and_own_camera_first(views, micro_dataset):
    truth = np.load(micro_dataset / "truth.npz")
    assert views.images.shape == (4, 2, 32, 32, 3)                 # 2 train videos x 2 frames, 2 views
    assert views.cameras.shape == (4, 2, 25) and views.landmarks.shape == (4, 2, 68, 2)
    assert set(views.subject.tolist()) == {0, 1}                     # the test subject (2) is never used
    v, f = views.video[1], views.frame[1]
    np.testing.assert_allclose(views.cameras[1, 0], truth["cameras"][v, f], atol=1e-6)
    assert not np.allclose(views.cameras[:, 1], views.cameras[:, 0])
    assert not np.array_equal(views.images[:, 1], views.images[:, 0])


def test_save_load_round_trip(views, tmp_path):
    save_multiview(views, tmp_path / "mv.npz")
    back = load_multiview(tmp_path / "mv.npz")
    for name in views.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(back, name), getattr(views, name))


def test_bad_arguments(micro_dataset, tmp_path):
    with pytest.raises(ValueError, match="no 'valid' videos"):
        render_multiview(micro_dataset / "truth.npz", split="valid", progress=False)
    with pytest.raises(ValueError, match="frames_per_video"):
        render_multiview(micro_dataset / "truth.npz", frames_per_video=0, progress=False)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a multiview set"):
        load_multiview(tmp_path / "other.npz")
