"""`otavatar.demo.render_demo`: held-out SynthHeads portrait -> avatar -> talking + orbit clips + sheet.

A seeded random tiny weights file stands in for the embedded default (tests never depend on a trained model);
1 inversion step and 2-frame clips keep it small.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _sdk_fixtures import tiny_weights_file

pytest.importorskip("torch")

from otavatar.demo import HELD_OUT_OFFSET, render_demo  # noqa: E402

SMALL = dict(steps=(1, 0), seconds=0.2, fps=10, progress=False)      # 2 frames per clip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights_file(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def demo(weights, tmp_path_factory):
    return render_demo(tmp_path_factory.mktemp("out") / "demo", weights=weights, **SMALL)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_writes_every_file(demo):
    assert set(demo.files) == {"portrait", "frame", "talk_mp4", "talk_gif", "orbit_mp4", "orbit_gif", "sheet", "avatar"}
    for name, path in demo.files.items():
        assert path.is_file() and path.stat().st_size > 0, name
        assert path.parent == demo.out_dir
    assert _pixels(demo.frame).shape == (128, 128, 3) and _pixels(demo.files["portrait"]).shape == (128, 128, 3)
    assert demo.frames == 2 and demo.fps == 10.0 and demo.resolution == 128
    gif = Image.open(demo.files["talk_gif"])
    assert gif.n_frames == 2 and gif.info["duration"] == 100                  # 10 fps = 10 cs per frame
    sheet = _pixels(demo.sheet)                                                # 6 tiles, 4 columns, 2-px gaps
    assert sheet.shape == (2 * 128 + 2, 4 * 128 + 3 * 2, 3)
    assert "talk_mp4" in demo.describe() and str(demo.files["sheet"]) in demo.describe()


def test_the_avatar_file_reproduces_the_frame(demo, weights):
    from otavatar import Avatar

    avatar = Avatar.load(demo.files["avatar"], model=weights)
    np.testing.assert_array_equal(avatar.render(avatar.coeffs[None]).frames[0], _pixels(demo.frame))


def test_the_portrait_is_the_held_out_identity(demo):
    from otavatar import synthetic as S

    clip = S.render(S.Identity.sample(HELD_OUT_OFFSET), S.neutral_motion(1), 128)
    np.testing.assert_array_equal(_pixels(demo.files["portrait"]), clip.images[0])


def test_missing_default_is_a_clear_error_and_writes_nothing(monkeypatch, tmp_path):
    import otavatar.weights.default as default

    monkeypatch.setattr(default, "default_path", lambda: tmp_path / "otavatar-tiny.safetensors")
    with pytest.raises(FileNotFoundError, match="otavatar train"):
        render_demo(tmp_path / "out", **SMALL)
    assert not (tmp_path / "out").exists()


def test_bad_arguments_name_the_problem(tmp_path, weights):
    from otavatar.weights import WeightsError

    with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
        render_demo(tmp_path / "a", weights=weights, seconds=0)
    with pytest.raises(ValueError, match="need w_steps >= 1"):
        render_demo(tmp_path / "b", weights=weights, steps=(0, 0))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        render_demo(tmp_path / "c", weights=weights, seed=-1)
    with pytest.raises(WeightsError, match="no such file"):
        render_demo(tmp_path / "d", weights=tmp_path / "missing.safetensors")
    assert not any(tmp_path.iterdir())                                         # nothing written on failure


def test_quickstart_example_runs(weights, tmp_path):
    """examples/quickstart.py, as CI runs it: a small random weights file, 1 inversion step, 2 frames."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    video = module.main(["--model", str(weights), "--steps", "1", "0", "--seconds", "0.2", "--fps", "10",
                         "--out", str(tmp_path / "q")])
    assert video == tmp_path / "q" / "talk.mp4" and video.stat().st_size > 0
    assert (tmp_path / "q" / "me.avatar").is_file()
