"""otavatar.Avatar on a seeded random tiny model: every input form, render modes, files, blending, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _sdk_fixtures import assert_uint8_frames, fast_config, held_out_portrait, png_bomb, tiny_modules

torch = pytest.importorskip("torch")

from otavatar import motion as motions  # noqa: E402
from otavatar.avatar import (Avatar, AvatarError, RenderResult, driving_rows, portrait_camera,  # noqa: E402
                             portrait_coeffs, prepare_portrait)
from otavatar.camera import look_at_camera, orbit_cameras  # noqa: E402
from otavatar.coeffs import ANGLE, CROP, EXP, TRANS  # noqa: E402
from otavatar.inversion import render_motion  # noqa: E402
from otavatar.media import ImageDecodeError, ImageTooLargeError, NoFaceError  # noqa: E402
from otavatar.model import Model  # noqa: E402

R = 128   # the tiny preset's output resolution


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.from_modules(*tiny_modules(0))


@pytest.fixture(scope="module")
def other_model() -> Model:
    return Model.from_modules(*tiny_modules(1))


@pytest.fixture(scope="module")
def portrait():
    return held_out_portrait(R)


@pytest.fixture(scope="module")
def avatar(model, portrait) -> Avatar:
    return Avatar.from_portrait(portrait.images[0], model=model, coeffs=portrait.coeffs[0],
                                camera=portrait.cameras[0], landmarks=portrait.landmarks[0], aligned=True,
                                config=fast_config(), progress=False)


@pytest.fixture(scope="module")
def drive() -> motions.Motion:
    return motions.talk(seconds=0.12, fps=25)     # 3 frames


def _wide_rows(rows70: np.ndarray, width: int) -> np.ndarray:
    """Deep3DFaceRecon-layout rows holding the same exp/angle/trans, other columns random (ignored)."""
    rows = np.random.default_rng(0).normal(size=(len(rows70), width)).astype(np.float32)
    rows[:, EXP], rows[:, ANGLE], rows[:, TRANS] = rows70[:, :64], rows70[:, 64:67], rows70[:, 67:70]
    return rows


# -- from_portrait ------------------------------------------------------------------------------------------

def test_from_portrait_uses_the_given_coefficients_and_camera(avatar, portrait, model):
    assert avatar.model is model and avatar.resolution == R
    assert avatar.ws.shape == (model.num_ws, model.w_dim) and avatar.intrinsics.shape == (18,)
    np.testing.assert_array_equal(avatar.coeffs, portrait.coeffs[0])
    np.testing.assert_array_equal(avatar.camera, portrait.cameras[0])
    assert avatar.metadata["pose"] == "given" and avatar.metadata["landmarks"] is True
    assert avatar.metadata["steps"] == 4 and len(avatar.inversion.losses) == 4
    # ws stays within w_avg +- 5 (the clamp after every step)
    assert (avatar.ws - model.generator.w_avg).abs().max() <= 5.0 + 1e-5


def test_every_image_form_gives_the_same_avatar(model, portrait, tmp_path):
    pixels = portrait.images[0]
    path = tmp_path / "portrait.png"
    Image.fromarray(pixels).save(path)
    forms = {"path": path, "str": str(path), "bytes": path.read_bytes(), "PIL": Image.open(path)}
    for name, image in forms.items():                      # what inversion receives is the same for every form
        prepared = prepare_portrait(image, aligned=True)
        np.testing.assert_array_equal(prepared.image, pixels, err_msg=name)
    kwargs = dict(model=model, coeffs=portrait.coeffs[0], camera=portrait.cameras[0], aligned=True,
                  config=fast_config(1, 0, 0), progress=False)
    from_bytes, from_array = Avatar.from_portrait(forms["bytes"], **kwargs), Avatar.from_portrait(pixels, **kwargs)
    assert torch.equal(from_bytes.ws, from_array.ws)                 # and inversion is deterministic
    assert from_bytes.metadata["landmarks"] is False                 # no landmarks: local/ID terms skipped


def test_unaligned_portrait_is_detected_and_its_pose_estimated(model, portrait):
    a = Avatar.from_portrait(portrait.images[0], model=model, config=fast_config(1, 0, 0), progress=False)
    assert a.metadata["pose"] == "estimated" and a.metadata["aligned"] is False
    assert np.all(a.coeffs[:64] == 0)                                # neutral expression
    assert np.abs(a.coeffs[64:67]).max() > 0                         # the estimated angles, not zeros
    assert not np.array_equal(a.camera, look_at_camera(0.0, 0.0))


def test_aligned_without_camera_or_landmarks_is_frontal(model, portrait):
    a = Avatar.from_portrait(portrait.images[0], model=model, aligned=True, config=fast_config(1, 0, 0),
                             progress=False)
    assert a.metadata["pose"] == "frontal"
    np.testing.assert_array_equal(a.camera, look_at_camera(0.0, 0.0))
    np.testing.assert_array_equal(a.coeffs, np.zeros(70, np.float32))


def test_portrait_coefficient_and_camera_forms(portrait, tmp_path):
    from scipy.io import savemat

    x = portrait.coeffs[0]
    np.save(tmp_path / "c.npy", x[None])
    np.savetxt(tmp_path / "c.txt", _wide_rows(x[None], TRANS.stop))
    savemat(tmp_path / "c.mat", {"coeff": _wide_rows(x[None], CROP.stop)})
    for form in (x, x[None], _wide_rows(x[None], 257)[0], _wide_rows(x[None], 260), tmp_path / "c.npy",
                 str(tmp_path / "c.txt"), tmp_path / "c.mat"):
        np.testing.assert_allclose(portrait_coeffs(form), x, rtol=1e-6, atol=1e-6)
    c = portrait.cameras[0]
    np.save(tmp_path / "cam.npy", c)
    np.savetxt(tmp_path / "cam.txt", c[None])
    for form in (c, c[None], tmp_path / "cam.npy", tmp_path / "cam.txt"):
        np.testing.assert_allclose(portrait_camera(form), c, atol=1e-6)


def test_callback_steps_and_early_stop(model, portrait):
    seen = []

    def callback(step):
        seen.append(step)
        return step.step < 1                                         # stop after the second step

    a = Avatar.from_portrait(portrait.images[0], model=model, aligned=True, config=fast_config(5, 5, 0),
                             steps=(3, 3), early_stop=0.5, callback=callback, preview_every=1, progress=False)
    assert [s.step for s in seen] == [0, 1] and all(np.isfinite(s.loss) for s in seen)
    assert seen[0].preview is not None and seen[0].preview.shape[0] == 3
    assert a.metadata["stopped_early"] is True and a.metadata["steps"] == 2
    assert (a.metadata["w_steps"], a.metadata["wplus_steps"]) == (3, 3)          # steps= overrides the config
    assert a.inversion is not None and len(a.inversion.losses) == 2


# -- render ------------------------------------------------------------------------------------------------

def test_render_result(avatar, drive, tmp_path):
    result = avatar.render(drive)
    assert isinstance(result, RenderResult) and len(result) == 3
    assert_uint8_frames(result.frames, 3, R)
    assert result.fps == 25.0 and result.seconds > 0 and result.per_frame_ms > 0 and result.fps_rendered > 0
    assert result.cameras.shape == (3, 25)
    for suffix in (".mp4", ".gif", ".png"):
        assert result.save(tmp_path / f"clip{suffix}").stat().st_size > 0
    assert Avatar.save_video(tmp_path / "again.gif", result, fps=10).is_file()
    assert avatar.render(drive.coeffs[:1], fps=10).fps == 10.0 and avatar.render(drive.coeffs[:1]).fps == 25.0


def test_every_coefficient_form(avatar, drive, tmp_path):
    rows = drive.coeffs
    np.save(tmp_path / "drive.npy", _wide_rows(rows, 260))
    np.savetxt(tmp_path / "drive.txt", rows)
    for form in (rows, rows.tolist(), _wide_rows(rows, 257), _wide_rows(rows, 260), tmp_path / "drive.npy",
                 str(tmp_path / "drive.txt")):
        resolved, motion = driving_rows(form)
        np.testing.assert_allclose(resolved, rows, atol=1e-6)
        assert motion is None
    assert driving_rows(drive)[1] is drive
    # rows of another layout render the very same frames
    np.testing.assert_array_equal(avatar.render(_wide_rows(rows, 257)).frames, avatar.render(drive).frames)


def test_expression_changes_the_frames(avatar):
    a = avatar.render(np.zeros((1, 70))).frames
    b = avatar.render(motions.smile(seconds=1, fps=4).coeffs[2:3]).frames          # mid-smile
    assert not np.array_equal(a, b)


def test_camera_modes(avatar, drive, tmp_path):
    portrait = avatar.render(drive).frames
    np.testing.assert_array_equal(avatar.render(drive, camera="portrait").frames, portrait)
    np.testing.assert_array_equal(avatar.render(drive, camera=avatar.camera).frames, portrait)        # [25]
    driver = avatar.render(drive, camera="driver")
    np.testing.assert_array_equal(driver.cameras, drive.cameras())
    np.testing.assert_array_equal(avatar.render(drive, camera=drive.cameras()).frames, driver.frames)  # [T,25]
    np.save(tmp_path / "cams.npy", drive.cameras())
    np.testing.assert_array_equal(avatar.render(drive, camera=tmp_path / "cams.npy").frames, driver.frames)
    orbit = avatar.render(drive, camera="orbit")
    np.testing.assert_array_equal(orbit.cameras, orbit_cameras(3))
    assert not np.array_equal(orbit.frames, portrait)
    # raw rows use camera_from_coeffs for "driver"
    assert avatar.render(drive.coeffs, camera="driver").cameras.shape == (3, 25)


def test_render_matches_render_motion_and_stream(avatar, drive, model):
    result = avatar.render(drive, camera="driver", batch_size=2)
    reference = render_motion(model.generator, model.controller, avatar.inversion, drive.coeffs, result.cameras,
                              batch_size=2)
    np.testing.assert_array_equal(result.frames, reference)
    streamed = list(avatar.stream(drive, camera="driver", batch_size=2))
    assert len(streamed) == 3 and streamed[0].shape == (R, R, 3)
    np.testing.assert_array_equal(np.stack(streamed), result.frames)
    causal = avatar.render(drive, window="causal", batch_size=2).frames
    assert not np.array_equal(causal[0], avatar.render(drive, batch_size=2).frames[0])  # frame 0 sees no future


def test_render_view(avatar):
    front = avatar.render_view(0.0, 0.0)
    assert front.shape == (R, R, 3) and front.dtype == np.uint8
    np.testing.assert_array_equal(front, avatar.render(avatar.coeffs[None], camera=look_at_camera(0.0, 0.0)).frames[0])
    assert not np.array_equal(front, avatar.render_view(0.4, 0.0))


# -- files -------------------------------------------------------------------------------------------------

def test_save_load_round_trip_renders_identical_frames(avatar, model, drive, tmp_path):
    path = avatar.save(tmp_path / "a.avatar")
    loaded = Avatar.load(path, model=model)
    assert torch.equal(loaded.ws, avatar.ws) and torch.equal(loaded.intrinsics, avatar.intrinsics)
    np.testing.assert_array_equal(loaded.camera, avatar.camera)
    np.testing.assert_array_equal(loaded.coeffs, avatar.coeffs)
    np.testing.assert_array_equal(loaded.render(drive, camera="orbit").frames,
                                  avatar.render(drive, camera="orbit").frames)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header, keys = f.metadata(), set(f.keys())
    assert keys == {"ws", "intrinsics", "camera", "coeffs"}
    assert header["format"] == "otavatar-avatar" and header["format_version"] == "1"
    assert header["model_fingerprint"] == model.fingerprint and '"img_resolution": 128' in header["generator_config"]
    assert header["created"] and header["otavatar_version"] == "0.1.0"
    # the same weights loaded from a file have the same fingerprint: loading with a path works too
    from otavatar.weights import save_models

    weights = save_models(tmp_path / "m.safetensors", generator=model.generator, controller=model.controller)
    assert torch.equal(Avatar.load(path, model=weights).ws, avatar.ws)


def test_load_refuses_a_mismatched_model(avatar, other_model, tmp_path):
    path = avatar.save(tmp_path / "a.avatar")
    with pytest.raises(AvatarError, match=f"{avatar.model.fingerprint}.*{other_model.fingerprint}"):
        Avatar.load(path, model=other_model)


def test_load_refuses_other_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.avatar"):
        Avatar.load(tmp_path / "missing.avatar", model=model)
    (tmp_path / "junk.avatar").write_bytes(b"\x00" * 100)
    with pytest.raises(AvatarError, match="not a readable avatar file"):
        Avatar.load(tmp_path / "junk.avatar", model=model)
    from otavatar.weights import save_models

    weights = save_models(tmp_path / "m.safetensors", generator=model.generator)
    with pytest.raises(AvatarError, match="not an otavatar avatar file"):
        Avatar.load(weights, model=model)


def test_save_is_atomic_and_needs_the_folder(avatar, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        avatar.save(tmp_path / "nowhere" / "a.avatar")
    avatar.save(tmp_path / "a.avatar")
    avatar.save(tmp_path / "a.avatar")                              # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.avatar"]     # no temp files left behind


# -- interpolate -------------------------------------------------------------------------------------------

def test_interpolate_endpoints_and_midpoint(avatar, model, portrait):
    other = Avatar(model, avatar.ws + 0.5, avatar.intrinsics + 0.1, look_at_camera(0.3, 0.0), portrait.coeffs[0] * 0)
    start, end = Avatar.interpolate(avatar, other, 0.0), Avatar.interpolate(avatar, other, 1.0)
    assert torch.equal(start.ws, avatar.ws) and torch.equal(start.intrinsics, avatar.intrinsics)
    assert torch.equal(end.ws, other.ws) and torch.equal(end.intrinsics, other.intrinsics)
    np.testing.assert_array_equal(start.coeffs, avatar.coeffs)
    np.testing.assert_array_equal(end.camera, other.camera)
    np.testing.assert_array_equal(start.render_view(), avatar.render_view())
    mid = Avatar.interpolate(avatar, other, 0.5)
    torch.testing.assert_close(mid.ws, avatar.ws + 0.25)


def test_interpolate_needs_one_model_and_a_finite_alpha(avatar, other_model):
    stranger = Avatar(other_model, avatar.ws, avatar.intrinsics, avatar.camera, avatar.coeffs)
    with pytest.raises(AvatarError, match="different models"):
        Avatar.interpolate(avatar, stranger, 0.5)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        Avatar.interpolate(avatar, avatar, float("nan"))


# -- bad inputs --------------------------------------------------------------------------------------------

def test_bad_images_raise_clear_errors(model, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(ImageDecodeError, match="corrupt.png"):
        Avatar.from_portrait(tmp_path / "corrupt.png", model=model, progress=False)
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        Avatar.from_portrait(png_bomb(), model=model, progress=False)
    grey = np.full((256, 256, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        Avatar.from_portrait(grey, model=model, progress=False)
    with pytest.raises(ValueError, match="must be square, got 200x100"):
        Avatar.from_portrait(np.zeros((100, 200, 3), np.uint8), model=model, aligned=True, progress=False)


def test_bad_portrait_arrays_raise_clear_errors(model, portrait):
    image = portrait.images[0]
    with pytest.raises(ValueError, match="have 71 columns; accepted widths: 70 .*257 .*260"):
        Avatar.from_portrait(image, model=model, aligned=True, coeffs=np.zeros(71), progress=False)
    with pytest.raises(ValueError, match="one frame, got 2 rows"):
        Avatar.from_portrait(image, model=model, aligned=True, coeffs=np.zeros((2, 70)), progress=False)
    with pytest.raises(ValueError, match=r"camera label must have shape \[25\]"):
        Avatar.from_portrait(image, model=model, aligned=True, camera=np.zeros(16), progress=False)
    with pytest.raises(ValueError, match=r"landmarks must be \[68,2\]"):
        Avatar.from_portrait(image, model=model, aligned=True, landmarks=np.zeros((5, 2)), progress=False)
    with pytest.raises(ValueError, match="steps must be two ints"):
        Avatar.from_portrait(image, model=model, aligned=True, steps=(1,), progress=False)
    with pytest.raises(TypeError, match="model must be None"):
        Avatar.from_portrait(image, model=42, aligned=True, progress=False)


def test_bad_driving_coefficients_raise_clear_errors(avatar, drive):
    with pytest.raises(ValueError, match="50 columns; accepted widths: 70 .*257 .*260"):
        avatar.render(np.zeros((4, 50)))
    rows = np.zeros((4, 70), np.float32)
    rows[2, 5] = np.nan
    with pytest.raises(ValueError, match="frame 2, column 5"):
        avatar.render(rows)
    rows = _wide_rows(np.zeros((4, 70), np.float32), 257)
    rows[1, 225] = np.inf
    with pytest.raises(ValueError, match="frame 1, column 65 .*column 225 of the 257-column row"):
        avatar.render(rows)
    with pytest.raises(ValueError, match="no frames"):
        avatar.render(np.zeros((0, 70)))
    with pytest.raises(ValueError, match="unknown camera mode 'sideways'"):
        avatar.render(drive, camera="sideways")
    with pytest.raises(ValueError, match="expected 1 or 3 camera labels, got 2"):
        avatar.render(drive, camera=np.stack([avatar.camera] * 2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        avatar.render(drive, batch_size=0)
    with pytest.raises(ValueError, match="finite number of radians"):
        avatar.render_view(float("inf"))


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path, portrait):
    import otavatar.weights.default as default

    monkeypatch.setattr(default, "default_path", lambda: tmp_path / "otavatar-tiny.safetensors")
    with pytest.raises(FileNotFoundError, match="otavatar-tiny.safetensors.*otavatar train"):
        Avatar.from_portrait(portrait.images[0], aligned=True, progress=False)


def test_import_otavatar_exposes_the_sdk_lazily():
    import otavatar

    assert otavatar.Avatar is Avatar and otavatar.Model is Model and otavatar.motion is motions
    assert {"Avatar", "Model", "motion", "media", "inversion"} <= set(dir(otavatar))
