"""otavatar.runtime.Engine on the tiny preset: equals torch, refuses modified folders, validates, no torch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from otavatar.camera import look_at_camera  # noqa: E402
from otavatar.runtime import Engine, ManifestError  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_export) -> Engine:
    return Engine(tiny_export.folder)


def _inputs(batch: int, num_ws: int, w_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ws = rng.normal(0, 1, (batch, num_ws, w_dim)).astype(np.float32)
    cams = np.stack([look_at_camera(y, 0.1) for y in np.linspace(-0.3, 0.3, batch)]).astype(np.float32)
    x = rng.normal(0, 0.5, (batch, 70, 27)).astype(np.float32)
    return x, ws, cams


def test_engine_equals_torch(engine, tiny_export):
    torch = pytest.importorskip("torch")
    generator, controller = tiny_export.models()
    x, ws, cams = _inputs(2, generator.num_ws, generator.config.w_dim)
    motion = engine.motion(x)
    out = engine.render(ws + motion, cams)
    with torch.no_grad():
        ref_motion = controller(torch.from_numpy(x))
        ref = generator.synthesis(torch.from_numpy(ws) + ref_motion, torch.from_numpy(cams), backend="torch")
    np.testing.assert_allclose(motion, ref_motion.numpy(), atol=1e-5, rtol=0)
    # atol 1e-3: the export's fp32 tolerance; measured ~8e-6 on the tiny preset
    np.testing.assert_allclose(out.image, ref.image.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(out.depth, ref.depth.numpy(), atol=1e-3, rtol=0)
    size = generator.config.img_resolution
    assert out.frames.shape == (2, size, size, 3) and out.frames.dtype == np.uint8
    ref_frames = ((ref.image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out.frames.astype(int) - ref_frames).max() <= 1


def test_engine_picks_cpu_and_batches(engine):
    assert engine.providers == ["CPUExecutionProvider"] or "CUDAExecutionProvider" in engine.providers
    cfg = engine.generator_config
    num_ws = engine.controller_config["num_ws"]
    for batch in (1, 3):
        x, ws, cams = _inputs(batch, num_ws, cfg["w_dim"], seed=batch)
        assert engine.motion(x).shape == (batch, num_ws, cfg["w_dim"])
        assert engine.render(ws, cams).frames.shape[0] == batch


@pytest.fixture
def copied(tiny_export, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_export.folder, folder)
    return folder


def test_refuses_a_modified_file(copied):
    with open(copied / "generator.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="generator.onnx: sha256 .* does not match the manifest"):
        Engine(copied)


def test_refuses_missing_file_and_manifest(copied):
    (copied / "controller.onnx").unlink()
    with pytest.raises(ManifestError, match="controller.onnx is listed in the manifest but missing"):
        Engine(copied)
    (copied / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="no manifest.json"):
        Engine(copied)


def test_refuses_metadata_that_disagrees_with_the_manifest(copied):
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["generator_config"]["img_resolution"] = 512
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="metadata does not match the manifest .*generator_config"):
        Engine(copied)


def test_input_validation(engine):
    num_ws, w_dim = engine.controller_config["num_ws"], engine.controller_config["w_dim"]
    with pytest.raises(ValueError, match=r"controller input x must have shape \[B,70,27\], got \[2, 27, 70\]"):
        engine.motion(np.zeros((2, 27, 70)))
    with pytest.raises(ValueError, match="disagree on the batch size: 2 and 1"):
        engine.render(np.zeros((2, num_ws, w_dim)), np.zeros((1, 25)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine.motion(np.full((1, 70, 27), np.nan))
    with pytest.raises(TypeError, match="must be numeric"):
        engine.motion(np.full((1, 70, 27), "a"))


def test_unknown_providers(tiny_export):
    with pytest.raises(ValueError, match="unknown providers 'gpu'; valid: auto, cpu, cuda, tensorrt"):
        Engine(tiny_export.folder, providers="gpu")
    with pytest.raises(ValueError, match="not available here"):
        Engine(tiny_export.folder, providers=["NoSuchExecutionProvider"])


def test_runtime_never_imports_torch(tiny_export):
    code = (
        "import sys, numpy as np\n"
        "from otavatar.runtime import Engine\n"
        f"e = Engine({str(tiny_export.folder)!r})\n"
        "e.motion(np.zeros((1, 70, 27), np.float32))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'onnx', 'onnxscript'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_imports_stay_light():
    # importing the runtime or the export package loads neither torch nor onnxruntime (both load on use)
    code = ("import sys, otavatar.runtime, otavatar.export\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'onnx', 'triton'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
