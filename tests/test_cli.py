"""The `otavatar` command line: convert, env, demo (click's CliRunner; one subprocess for the import cost)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from otavatar.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory) -> Path:
    """An EG3D-layout .pth of the tiny generator (resample_filter constants included)."""
    import torch

    from otavatar.models import TriplaneGenerator
    from otavatar.models.layers import fir_filter

    torch.manual_seed(0)
    G = TriplaneGenerator.tiny()
    state = dict(G.state_dict())
    state.update({k: fir_filter() for k, _ in G.named_buffers() if k.endswith("resample_filter")})
    path = tmp_path_factory.mktemp("cli") / "eg3d.pth"
    torch.save({"G_ema": state}, path)
    return path


def test_help_and_version(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("convert", "env", "demo", "invert", "render"):
        assert command in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "otavatar, version 0.1.0" in result.output


# -- convert --------------------------------------------------------------------------------------------------

def test_convert_writes_the_file_and_reports(runner, tiny_pth, tmp_path):
    out = tmp_path / "sub" / "g.safetensors"
    result = runner.invoke(main, ["convert", str(tiny_pth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"reading {tiny_pth}" in result.output and "preset: tiny (from the tensor shapes)" in result.output
    assert f"wrote {out}" in result.output and "generator:  118 tensors" in result.output
    from otavatar.weights import load_models

    assert load_models(out).generator is not None


def test_convert_with_explicit_preset_that_does_not_fit(runner, tiny_pth, tmp_path):
    out = tmp_path / "g.safetensors"
    result = runner.invoke(main, ["convert", str(tiny_pth), "-o", str(out), "--preset", "official"])
    assert result.exit_code == 1
    assert "Error: " in result.output and "missing keys: backbone.synthesis.b128" in result.output
    assert "shape mismatches:" in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("setup,message", [
    (lambda d: d / "missing.pth", "no such file"),
    (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", "not a recognised checkpoint"),
    (lambda d: (d / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Reduces(os.system, "touch EXECUTED")}))
     and d / "evil.pkl", f"refusing to load {os.system.__module__}.system"),
])
def test_convert_bad_input_exits_non_zero_without_traceback(runner, tmp_path, monkeypatch, setup, message):
    monkeypatch.chdir(tmp_path)  # the malicious pickle would create ./EXECUTED
    src = setup(tmp_path)
    result = runner.invoke(main, ["convert", str(src), "--out", "x.safetensors"])
    assert not (tmp_path / "EXECUTED").exists() and not (tmp_path / "x.safetensors").exists()
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_convert_usage_errors(runner, tiny_pth):
    assert runner.invoke(main, ["convert", "--out", "x.safetensors"]).exit_code == 2  # no input
    assert runner.invoke(main, ["convert", str(tiny_pth)]).exit_code == 2            # no --out
    result = runner.invoke(main, ["convert", str(tiny_pth), "--out", "x", "--preset", "huge"])
    assert result.exit_code == 2 and "'official', 'tiny'" in result.output


class Reduces:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# -- env ------------------------------------------------------------------------------------------------------

def test_env_text_and_json(runner):
    result = runner.invoke(main, ["env"])
    assert result.exit_code == 0, result.output
    for label in ("python", "numpy", "torch", "triton", "onnxruntime", "onnx", "grpc", "ORT providers", "CUDA"):
        assert label in result.output
    result = runner.invoke(main, ["env", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(info["versions"]) >= {"numpy", "torch", "triton", "onnxruntime", "onnx", "grpc"}
    assert isinstance(info["cuda"]["available"], bool) and isinstance(info["cuda"]["devices"], list)


def test_env_survives_missing_and_broken_packages(runner, monkeypatch):
    real_version = importlib_metadata.version

    def version(dist):
        if dist in ("torch", "onnxruntime", "onnxruntime-gpu", "grpcio"):
            raise importlib_metadata.PackageNotFoundError(dist)
        if dist == "onnx":
            raise RuntimeError("corrupt METADATA")
        return real_version(dist)

    monkeypatch.setattr(importlib_metadata, "version", version)
    monkeypatch.setitem(sys.modules, "torch", None)        # `import torch` now raises ImportError
    broken = types.ModuleType("onnxruntime")                # imports, but its native part is broken
    broken.get_available_providers = lambda: (_ for _ in ()).throw(OSError("libonnxruntime.so: cannot open"))
    monkeypatch.setitem(sys.modules, "onnxruntime", broken)
    result = runner.invoke(main, ["env", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["versions"]["torch"] == info["versions"]["onnxruntime"] == info["versions"]["grpc"] == "not installed"
    assert info["versions"]["onnx"] == "unreadable (RuntimeError)"
    assert info["onnxruntime_providers"].startswith("unavailable (OSError")
    assert info["cuda"] == {"available": False, "reason": "torch not installed", "devices": []}
    assert runner.invoke(main, ["env"]).exit_code == 0


def test_env_lists_ort_providers_when_present(runner, monkeypatch):
    fake = types.ModuleType("onnxruntime")
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    result = runner.invoke(main, ["env"])
    assert "CUDAExecutionProvider, CPUExecutionProvider" in result.output


# -- demo, invert, render ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A seeded random tiny model file: stands in for the embedded default (tests never need a trained one)."""
    from _sdk_fixtures import tiny_weights_file

    return tiny_weights_file(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="module")
def avatar_file(tiny_weights, tmp_path_factory) -> Path:
    from otavatar.demo import held_out_portrait

    folder = tmp_path_factory.mktemp("avatar")
    Image.fromarray(held_out_portrait(0, 128).images[0]).save(folder / "portrait.png")
    out = folder / "me.avatar"
    result = CliRunner().invoke(main, ["invert", str(folder / "portrait.png"), "--out", str(out), "--model",
                                       str(tiny_weights), "--steps", "1", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and "pose estimated" in result.stderr
    return out


@pytest.fixture
def no_default(monkeypatch, tmp_path):
    import otavatar.weights.default as default

    monkeypatch.setattr(default, "default_path", lambda: tmp_path / "otavatar-tiny.safetensors")


def test_demo_writes_clips_sheet_and_avatar(runner, tmp_path, tiny_weights):
    out = tmp_path / "d"
    result = runner.invoke(main, ["demo", "--out", str(out), "--weights", str(tiny_weights), "--steps", "1", "0",
                                  "--seconds", "0.2", "--fps", "10", "-q"])
    assert result.exit_code == 0, result.output
    names = ["portrait.png", "frame.png", "talk.mp4", "talk.gif", "orbit.mp4", "orbit.gif", "sheet.png", "demo.avatar"]
    assert result.stdout.split() == [str(out / n) for n in names]
    assert all((out / n).is_file() for n in names)
    assert "held out" in result.stderr and "inversion" in result.stderr


def test_demo_without_the_default_model_says_how_to_get_it(runner, tmp_path, no_default):
    result = runner.invoke(main, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "otavatar train" in result.output and "--weights" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "d").exists()


def test_demo_bad_weights_is_a_clear_error(runner, tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    result = runner.invoke(main, ["demo", "--out", str(tmp_path / "d"), "--weights", str(bogus)])
    assert result.exit_code == 1 and "bogus.safetensors" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d" / "frame.png").exists()


def test_demo_missing_torch_is_a_clear_error(runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "otavatar.demo", None)
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == 1 and "train" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("suffix,extra", [(".mp4", []), (".gif", ["--orbit"]), (".png", ["--camera", "driver"])])
def test_render_writes_every_format(runner, avatar_file, tiny_weights, tmp_path, suffix, extra):
    out = tmp_path / f"clip{suffix}"
    result = runner.invoke(main, ["render", str(avatar_file), "--motion", "nod", "--seconds", "0.2", "--fps", "10",
                                  "--out", str(out), "--model", str(tiny_weights), "-q", *extra])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and out.stat().st_size > 0
    assert "2 frames of nod at 128x128" in result.stderr


def test_render_from_a_coefficient_file(runner, avatar_file, tiny_weights, tmp_path):
    import numpy as np

    np.save(tmp_path / "drive.npy", np.zeros((3, 257), np.float32))
    result = runner.invoke(main, ["render", str(avatar_file), "--motion", str(tmp_path / "drive.npy"),
                                  "--out", str(tmp_path / "c.gif"), "--model", str(tiny_weights), "-q"])
    assert result.exit_code == 0, result.output
    assert "3 frames of drive at 128x128" in result.stderr and (tmp_path / "c.gif").is_file()


@pytest.mark.parametrize("args,code,message", [
    (["--motion", "dance"], 1, "unknown motion 'dance'"),
    (["--out", "clip.avi"], 2, "the suffix must be one of .mp4, .gif, .png"),
    (["--orbit", "--camera", "driver"], 2, "contradict"),
    (["--camera", "sideways"], 1, "unknown camera mode 'sideways'"),
    (["--motion", "missing.npy"], 1, "coefficient file not found"),
])
def test_render_bad_input_is_a_clear_error(runner, avatar_file, tiny_weights, tmp_path, monkeypatch, args, code,
                                           message):
    monkeypatch.chdir(tmp_path)
    base = ["render", str(avatar_file), "--seconds", "0.1", "--model", str(tiny_weights), "-q"]
    result = runner.invoke(main, base + (args if "--out" in args else args + ["--out", "clip.mp4"]))
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_render_with_another_model_names_both_hashes(runner, avatar_file, tmp_path):
    from _sdk_fixtures import tiny_weights_file

    other = tiny_weights_file(tmp_path, seed=1)
    result = runner.invoke(main, ["render", str(avatar_file), "--out", str(tmp_path / "c.mp4"), "--model", str(other)])
    assert result.exit_code == 1 and "was made with model" in result.output and "Traceback" not in result.output


def test_invert_bad_portraits_are_clear_errors(runner, tiny_weights, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "grey.png")
    for name, message in (("corrupt.jpg", "corrupt.jpg"), ("grey.png", "no face found"),
                          ("missing.png", "missing.png")):
        result = runner.invoke(main, ["invert", str(tmp_path / name), "--out", str(tmp_path / "a.avatar"),
                                      "--model", str(tiny_weights), "-q"])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a.avatar").exists()
    result = runner.invoke(main, ["invert", str(tmp_path / "grey.png"), "--out", "a.avatar", "--steps", "0", "1"])
    assert result.exit_code == 2


# -- import cost ----------------------------------------------------------------------------------------------

def test_cli_import_stays_light():
    """`otavatar --help` must not pay for torch, triton, onnxruntime or grpc (commands import them when run)."""
    code = ("import sys, otavatar, otavatar.cli\n"
            "heavy = [m for m in ('torch', 'triton', 'onnxruntime', 'grpc', 'safetensors') if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serve_passes_keepalive_and_render_failure_settings(runner, tmp_path, monkeypatch):
    pytest.importorskip("grpc")
    import otavatar.server

    seen = {}

    def fake_run(config):
        seen["config"] = config
        return 0

    monkeypatch.setattr(otavatar.server, "run", fake_run)
    result = runner.invoke(main, ["serve", "--models", str(tmp_path), "--data", str(tmp_path / "data"),
                                  "--keepalive", "5", "2.5", "--max-render-failures", "7"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.keepalive_time_s, config.keepalive_timeout_s, config.max_render_failures) == (5.0, 2.5, 7)
    bad = runner.invoke(main, ["serve", "--models", str(tmp_path), "--data", str(tmp_path / "data"),
                               "--keepalive", "0", "1"])
    assert bad.exit_code == 2 and "--keepalive" in bad.output
