"""`otavatar export` through click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from otavatar.cli import main


def test_export_tiny_preset(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    result = CliRunner().invoke(main, ["export", "--preset", "tiny", "--out", str(out), "--no-simplify",
                                       "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "not verified" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["simplifier"] == "none" and manifest["verify"] is None
    assert sorted(manifest["files"]) == ["controller.onnx", "generator.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    from otavatar.runtime import Engine

    assert Engine(out).render is not None


@pytest.mark.parametrize("args, message", [
    (["--out", "x"], "exactly one of --weights FILE or --preset"),
    (["--out", "x", "--preset", "tiny", "--weights", "w.safetensors"], "exactly one of"),
    (["--out", "x", "--preset", "tiny", "--precision", "bf16"], "Invalid value for '--precision'"),
])
def test_usage_errors(args, message):
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 2 and message in result.output


def test_bad_opset_and_missing_weights(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    result = CliRunner().invoke(main, ["export", "--preset", "tiny", "--out", str(tmp_path / "o"), "--opset", "9"])
    assert result.exit_code == 1 and "opset must be an integer in [18," in result.output
    result = CliRunner().invoke(main, ["export", "--weights", str(tmp_path / "none.safetensors"), "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such file" in result.output
