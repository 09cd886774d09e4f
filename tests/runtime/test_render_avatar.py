"""Engine.render_avatar / render_many on the tiny preset: an SDK Avatar renders the same frames through the
Engine as through torch, batching is bit-identical, avatars of other models are refused, and the avatar path
stays torch-free. The shared tiny export (tests/export/tiny_export.py) is the model of every test here."""
from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from otavatar.camera import look_at_camera  # noqa: E402
from otavatar.runtime import (AvatarFileError, AvatarLatent, Engine, FrameRequest, apply_intrinsics,  # noqa: E402
                              read_manifest)
from otavatar.runtime import engine as engine_module  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_export) -> Engine:
    return Engine(tiny_export.folder, threads=1)


@pytest.fixture(scope="module")
def model(tiny_export):
    pytest.importorskip("torch")
    from otavatar.model import Model

    return Model.from_modules(*tiny_export.models())


@pytest.fixture(scope="module")
def sdk_avatar(model):
    """An SDK Avatar of the exported model: inverted with 1 + 1 steps, then given a visible intrinsics
    correction (one inversion step leaves it ~0), so the comparison exercises apply_intrinsics too."""
    import torch

    from _sdk_fixtures import fast_config, held_out_portrait
    from otavatar.avatar import Avatar

    portrait = held_out_portrait(128)
    inverted = Avatar.from_portrait(portrait.images[0], model=model, coeffs=portrait.coeffs[0],
                                    camera=portrait.cameras[0], aligned=True, config=fast_config(1, 1, 1),
                                    progress=False)
    intrinsics = torch.from_numpy(np.random.default_rng(0).normal(0, 0.05, 18).astype(np.float32))
    return Avatar(model, inverted.ws, intrinsics, inverted.camera, inverted.coeffs, inverted.metadata)


@pytest.fixture(scope="module")
def avatar_file(sdk_avatar, tmp_path_factory):
    return sdk_avatar.save(tmp_path_factory.mktemp("avatar") / "me.avatar")


def _latent(engine: Engine, seed: int) -> AvatarLatent:
    rng = np.random.default_rng(seed)
    return AvatarLatent(ws=rng.normal(0, 1, (engine.num_ws, engine.w_dim)), intrinsics=rng.normal(0, 0.02, 18),
                        camera=look_at_camera(0.0, 0.0), coeffs=np.zeros(70))


def _request(engine: Engine, seed: int, frames: int) -> FrameRequest:
    rng = np.random.default_rng(100 + seed)
    cams = np.stack([look_at_camera(y, 0.1) for y in np.linspace(-0.3, 0.3, frames)])
    return FrameRequest(_latent(engine, seed), rng.normal(0, 0.5, (frames, 70, 27)).astype(np.float32), cams)


# -- the SDK's avatar through the Engine ---------------------------------------------------------------------

def test_avatar_file_loads_without_torch_types(avatar_file, sdk_avatar, model, engine):
    latent = AvatarLatent.load(avatar_file)
    assert latent.ws.dtype == np.float32 and latent.ws.shape == (engine.num_ws, engine.w_dim)
    np.testing.assert_array_equal(latent.ws, sdk_avatar.ws.numpy())
    np.testing.assert_array_equal(latent.intrinsics, sdk_avatar.intrinsics.numpy())
    np.testing.assert_array_equal(latent.camera, sdk_avatar.camera)
    np.testing.assert_array_equal(latent.coeffs, sdk_avatar.coeffs)
    assert latent.model_fingerprint == model.fingerprint == read_manifest(engine.model_dir)["model_fingerprint"]
    assert latent.generator_config == engine.generator_config
    assert latent.metadata["file"] == str(avatar_file)
    engine.check_avatar(latent)  # the engine accepts it


def test_avatar_renders_as_through_torch(avatar_file, sdk_avatar, engine):
    from otavatar import motion as motions
    from otavatar.coeffs import windows

    drive = motions.talk(seconds=0.2, fps=25)                       # 5 frames of speech with head motion
    ref = sdk_avatar.render(drive, camera="driver", batch_size=3)    # torch: fused modconv, reference kernels
    out = engine.render_avatar(AvatarLatent.load(avatar_file), windows(drive.coeffs), ref.cameras, batch_size=2)
    assert out.frames.shape == ref.frames.shape == (5, 128, 128, 3) and out.frames.dtype == np.uint8
    assert out.image is None  # frames only by default
    diff = np.abs(out.frames.astype(int) - ref.frames.astype(int))
    # float outputs agree to ~1e-5 (fp32 tolerance 1e-3 = 0.13 levels); uint8 rounding edges may flip by 1
    assert diff.max() <= 1, diff.max()
    assert diff.mean() < 0.01, diff.mean()


def test_apply_intrinsics_matches_torch():
    torch = pytest.importorskip("torch")
    from otavatar.training.objective import apply_intrinsics as torch_apply

    rng = np.random.default_rng(0)
    cams = np.stack([look_at_camera(y, -0.1) for y in (-0.2, 0.0, 0.3)]).astype(np.float32)
    for corr in (rng.normal(0, 0.3, 18), rng.normal(0, 0.3, (3, 18))):
        corr = corr.astype(np.float32)
        got = apply_intrinsics(cams, corr)
        want = torch_apply(torch.from_numpy(cams), torch.from_numpy(corr)).numpy()
        assert got.dtype == np.float32 and got.shape == (3, 25)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[:, :16], cams[:, :16])   # extrinsics untouched


def test_avatar_format_matches_the_sdk():
    pytest.importorskip("torch")
    from otavatar import avatar as sdk
    from otavatar.runtime import avatar as runtime

    assert (runtime.AVATAR_FORMAT, runtime.AVATAR_FORMAT_VERSION) == (sdk.AVATAR_FORMAT, sdk.AVATAR_FORMAT_VERSION)


# -- refusals ---------------------------------------------------------------------------------------------------

def test_refuses_an_avatar_of_another_model(sdk_avatar, tmp_path, engine):
    from _sdk_fixtures import tiny_modules
    from otavatar.avatar import Avatar
    from otavatar.model import Model

    other = Model.from_modules(*tiny_modules(1))       # same architecture, other weights
    path = Avatar(other, sdk_avatar.ws, sdk_avatar.intrinsics, sdk_avatar.camera, sdk_avatar.coeffs).save(
        tmp_path / "other.avatar")
    latent = AvatarLatent.load(path)
    with pytest.raises(AvatarFileError, match="was made with model .* but .* was exported from model"):
        engine.render_avatar(latent, np.zeros((1, 70, 27)), look_at_camera(0.0, 0.0)[None])


def test_refuses_other_shapes_and_configs(engine):
    good = _latent(engine, 0)
    wide = replace(good, ws=np.zeros((engine.num_ws, engine.w_dim + 1)))
    with pytest.raises(AvatarFileError, match=rf"ws is \[{engine.num_ws}, {engine.w_dim + 1}\] but this engine"):
        engine.check_avatar(wide)
    config = {**engine.generator_config, "img_resolution": 512}
    with pytest.raises(AvatarFileError, match="another generator config .*img_resolution"):
        engine.check_avatar(replace(good, generator_config=config))
    with pytest.raises(TypeError, match="must be an otavatar.runtime.AvatarLatent"):
        engine.check_avatar(good.ws)


def test_avatar_latent_validation_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"intrinsics must be \[18\], got \[9\]"):
        AvatarLatent(ws=np.zeros((2, 4)), intrinsics=np.zeros(9), camera=np.zeros(25), coeffs=np.zeros(70))
    with pytest.raises(ValueError, match="ws holds NaN"):
        AvatarLatent(ws=np.full((2, 4), np.nan), intrinsics=np.zeros(18), camera=np.zeros(25), coeffs=np.zeros(70))
    with pytest.raises(FileNotFoundError, match="avatar file not found"):
        AvatarLatent.load(tmp_path / "none.avatar")
    (tmp_path / "junk.avatar").write_bytes(b"not safetensors")
    with pytest.raises(AvatarFileError, match="not a readable avatar file"):
        AvatarLatent.load(tmp_path / "junk.avatar")
    from safetensors.numpy import save_file

    save_file({"ws": np.zeros((2, 4), np.float32)}, str(tmp_path / "w.safetensors"), metadata={"format": "x"})
    with pytest.raises(AvatarFileError, match="not an otavatar avatar file .*'x'"):
        AvatarLatent.load(tmp_path / "w.safetensors")


def test_request_validation(engine):
    req = _request(engine, 0, 2)
    with pytest.raises(ValueError, match=r"cameras must be \[T,25\] with T = 2 .*got \[3, 25\]"):
        engine.render_avatar(req.avatar, req.windows, np.zeros((3, 25)))
    with pytest.raises(ValueError, match=r"controller input x must have shape \[B,70,27\]"):
        engine.render_avatar(req.avatar, np.zeros((2, 27, 70)), req.cameras)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        engine.render_avatar(req.avatar, req.windows, req.cameras, batch_size=0)
    with pytest.raises(ValueError, match="non-empty sequence of FrameRequest"):
        engine.render_many([])
    with pytest.raises(TypeError, match="request 1 must be a FrameRequest, got tuple"):
        engine.render_many([req, (req.avatar, req.windows, req.cameras)])


# -- batching ---------------------------------------------------------------------------------------------------

def test_render_many_is_bit_identical_to_one_by_one(engine):
    requests = [_request(engine, seed, n) for seed, n in ((1, 3), (2, 1), (3, 2))]
    together = engine.render_many(requests, float_outputs=True)
    assert [len(o) for o in together] == [3, 1, 2]
    for req, got in zip(requests, together):
        alone = engine.render_avatar(req.avatar, req.windows, req.cameras, batch_size=1, float_outputs=True)
        np.testing.assert_array_equal(got.frames, alone.frames)
        for name in ("image", "image_raw", "depth"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name))
    # and equals the plain render of ws + motion with the corrected cameras
    req = requests[0]
    plain = engine.render(req.avatar.ws + engine.motion(req.windows),
                          apply_intrinsics(req.cameras, req.avatar.intrinsics))
    np.testing.assert_array_equal(together[0].frames, plain.frames)


def test_device_path_glue_matches_the_host_path(engine, monkeypatch):
    """The CUDA IO-binding path (cannot run without a GPU) with numpy standing in for cupy and session.run for
    the bound run: the same frames and float outputs as the host path, and only the steps it is meant to do."""
    fake_cupy = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("_")})
    fake_cupy.asnumpy = np.asarray
    calls = []

    def run_bound(graph, inputs, batch):
        calls.append((graph, sorted(inputs), batch))
        names = [o["name"] for o in engine._io[graph]["outputs"]]
        return dict(zip(names, engine._sessions[graph].run(None, {k: np.asarray(v, np.float32)
                                                                  for k, v in inputs.items()})))

    req = _request(engine, 4, 3)
    want = engine.render_avatar(req.avatar, req.windows, req.cameras, float_outputs=True)
    monkeypatch.setattr(engine, "_cupy", fake_cupy)
    monkeypatch.setattr(engine, "_run_bound", run_bound)
    assert engine.io_binding
    got = engine.render_avatar(req.avatar, req.windows, req.cameras, float_outputs=True)
    frames_only = engine.render_avatar(req.avatar, req.windows, req.cameras)
    assert calls[:2] == [("controller", ["x"], 3), ("generator", ["c", "ws"], 3)]
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(frames_only.frames, want.frames)
    assert frames_only.image is None


def test_device_arrays_only_with_a_gpu_provider():
    assert engine_module._device_arrays(["CPUExecutionProvider"]) is None


# -- torch-free -------------------------------------------------------------------------------------------------

def test_avatar_path_never_imports_torch(tiny_export, avatar_file):
    code = (
        "import sys, numpy as np\n"
        "from otavatar.runtime import AvatarLatent, Engine\n"
        f"e = Engine({str(tiny_export.folder)!r}, threads=1)\n"
        f"a = AvatarLatent.load({str(avatar_file)!r})\n"
        "out = e.render_avatar(a, np.zeros((2, 70, 27), np.float32), np.stack([a.camera, a.camera]))\n"
        "assert out.frames.shape[0] == 2\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'onnx', 'onnxscript'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
