"""Our safetensors format: round trips, header configs, strict loading, clear errors, atomic writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from otavatar.camera import look_at_camera
from otavatar.config import ControllerConfig, GeneratorConfig, RenderConfig
from otavatar.models import MotionController, TriplaneGenerator
from otavatar.weights import FORMAT_VERSION, LoadedModels, WeightsError, load_models, read_header, save_models


@pytest.fixture(scope="module")
def models() -> tuple[TriplaneGenerator, MotionController]:
    torch.manual_seed(0)
    G = TriplaneGenerator.tiny().eval()
    with torch.no_grad():  # the trained-from-scratch init leaves some parameters at 0/1: make every one distinct
        for p in G.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return G, MotionController.tiny().eval()


@pytest.fixture
def saved(tmp_path, models) -> Path:
    G, C = models
    return save_models(tmp_path / "both.safetensors", generator=G, controller=C, metadata={"note": "x", "n": [1, 2]})


def rewrite(path: Path, out: Path, *, tensors=None, header=None) -> Path:
    """Copy an otavatar file with its tensors and/or header changed by the given functions."""
    with safe_open(str(path), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        h = dict(f.metadata())
    if tensors:
        tensors(t)
    if header:
        header(h)
    save_file(t, str(out), metadata=h)
    return out


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_rebuilds_both_models_from_the_header(saved, models):
    G, C = models
    loaded = load_models(saved)
    assert isinstance(loaded, LoadedModels)
    assert loaded.metadata == {"note": "x", "n": [1, 2]}
    assert loaded.generator.config == G.config and loaded.controller.config == C.config
    assert not loaded.generator.training and not loaded.controller.training
    assert_same_state(G, loaded.generator)
    assert_same_state(C, loaded.controller)
    x = torch.randn(2, 70, 27)
    c = torch.from_numpy(look_at_camera(0.3, -0.1))[None]
    with torch.no_grad():
        assert torch.equal(C(x), loaded.controller(x))
        ws = G.mapping(torch.randn(1, G.config.z_dim), c)
        assert torch.equal(G.synthesis(ws, c).image, loaded.generator.synthesis(ws, c).image)


def test_header_holds_format_configs_and_user_metadata(saved, models):
    header = read_header(saved)
    assert header["format"] == "otavatar" and header["format_version"] == str(FORMAT_VERSION)
    assert GeneratorConfig.from_dict(json.loads(header["generator_config"])) == models[0].config
    assert ControllerConfig.from_dict(json.loads(header["controller_config"])) == models[1].config
    assert json.loads(header["user_metadata"]) == {"note": "x", "n": [1, 2]}
    with safe_open(str(saved), framework="pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(("generator.", "controller.")) for k in keys)
    assert "generator.decoder.net.2.bias" in keys and "controller.mapping_Refine.0.weight" in keys
    assert not any(k.endswith("resample_filter") for k in keys)  # constants are rebuilt, not stored


def test_a_non_default_config_comes_back(tmp_path):
    cfg = GeneratorConfig.tiny()
    cfg = GeneratorConfig(**{**cfg.to_dict(), "render": RenderConfig(resolution=16, depth_samples=8,
                                                                      importance_samples=0)})
    G = TriplaneGenerator(cfg)
    loaded = load_models(save_models(tmp_path / "g.safetensors", generator=G))
    assert loaded.generator.config == cfg and loaded.controller is None and loaded.metadata == {}


def test_controller_only_and_device(tmp_path, models):
    path = save_models(tmp_path / "sub" / "c.safetensors", controller=models[1])  # creates the folder
    loaded = load_models(path, device=torch.device("cpu"))
    assert loaded.generator is None
    assert all(p.device.type == "cpu" for p in loaded.controller.parameters())
    assert_same_state(models[1], loaded.controller)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600


def test_save_refuses_bad_arguments(tmp_path, models):
    with pytest.raises(WeightsError, match="needs a generator, a controller or both"):
        save_models(tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="metadata must be JSON-serialisable"):
        save_models(tmp_path / "x.safetensors", controller=models[1], metadata={"x": object()})
    with pytest.raises(WeightsError, match="generator must be a TriplaneGenerator, got MotionController"):
        save_models(tmp_path / "x.safetensors", generator=models[1])
    assert list(tmp_path.iterdir()) == []


# -- atomic writes --------------------------------------------------------------------------------------------

def test_failed_write_leaves_the_old_file_intact(tmp_path, saved, models, monkeypatch):
    import safetensors.torch

    before = saved.read_bytes()

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"trunc")  # a truncated file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_models(saved, controller=models[1])
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved.name]  # no temp file left behind
    load_models(saved)


def test_interrupted_rename_leaves_the_old_file_intact(tmp_path, saved, models, monkeypatch):
    before = saved.read_bytes()

    def no_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(KeyboardInterrupt):
        save_models(saved, controller=models[1])
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved.name]


def test_non_finite_weights_are_refused_before_writing(saved, models):
    before = saved.read_bytes()
    C = MotionController.tiny()
    with torch.no_grad():
        C.direction.weight[0, 0] = float("inf")
    with pytest.raises(WeightsError, match="refusing to save non-finite values in: controller.direction.weight"):
        save_models(saved, controller=C)
    assert saved.read_bytes() == before


# -- loading errors -------------------------------------------------------------------------------------------

def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_models(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="not a file"):
        load_models(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello world, not weights", b"PK\x03\x04" + bytes(100),
                                     b"\xff" * 8 + b"{}"])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_models(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not an otavatar weights file.*otavatar convert"):
        load_models(path)


@pytest.mark.parametrize("header,match", [
    (lambda h: h.update(format_version="2"), "format version '2', but this otavatar reads version 1"),
    (lambda h: h.pop("format_version"), "format version None"),
    (lambda h: h.pop("generator_config"), "holds 118 generator tensors but no generator_config"),
    (lambda h: h.update(generator_config="{not json"), "invalid generator_config"),
    (lambda h: h.update(controller_config=json.dumps({"bogus": 1})), "invalid controller_config.*unknown ControllerConfig"),
    (lambda h: h.update(user_metadata="]"), "user_metadata in the header is not JSON"),
])
def test_bad_header(tmp_path, saved, header, match):
    with pytest.raises(WeightsError, match=match):
        load_models(rewrite(saved, tmp_path / "bad.safetensors", header=header))


@pytest.mark.parametrize("tensors,match", [
    (lambda t: t.pop("generator.decoder.net.2.bias"), "cannot load the generator: missing keys: decoder.net.2.bias"),
    (lambda t: t.update({"controller.mapping_Refine.2.weight": torch.zeros(2)}),
     "cannot load the controller: unexpected keys: mapping_Refine.2.weight"),
    (lambda t: t.update({"encoder.weight": torch.zeros(2)}), r"unexpected keys \(neither generator. nor controller.\): encoder.weight"),
    (lambda t: t.update({"controller.direction.weight": torch.zeros(3, 3)}),
     r"shape mismatches: direction.weight \(file \[3, 3\], model \[128, 20\]\)"),
    (lambda t: t.update({"generator.backbone.mapping.w_avg": torch.zeros(128, dtype=torch.int64)}),
     r"backbone.mapping.w_avg \(dtype torch.int64, expected floating point\)"),
    (lambda t: t["generator.backbone.mapping.w_avg"].__setitem__(3, float("nan")),
     "non-finite values in: backbone.mapping.w_avg"),
    (lambda t: [t.pop(k) for k in list(t) if k.startswith("controller.")],
     r"missing keys: direction.weight, mapping_3DMM.*\(13 in all\)"),
])
def test_strict_load_lists_every_problem(tmp_path, saved, tensors, match):
    with pytest.raises(WeightsError, match=match):
        load_models(rewrite(saved, tmp_path / "bad.safetensors", tensors=tensors))


def test_several_problems_are_reported_together(tmp_path, saved):
    def corrupt(t):
        t.pop("generator.decoder.net.0.bias")
        t["generator.decoder.net.9.weight"] = torch.zeros(1)
        t["generator.decoder.net.2.weight"] = torch.zeros(5)

    with pytest.raises(WeightsError) as info:
        load_models(rewrite(saved, tmp_path / "bad.safetensors", tensors=corrupt))
    message = str(info.value)
    for part in ("missing keys: decoder.net.0.bias", "unexpected keys: decoder.net.9.weight",
                 "shape mismatches: decoder.net.2.weight"):
        assert part in message


def test_half_precision_file_loads_as_float32(tmp_path, saved, models):
    def to_half(t):
        for k in t:
            if k.startswith("controller."):
                t[k] = t[k].half()

    loaded = load_models(rewrite(saved, tmp_path / "half.safetensors", tensors=to_half))
    w = loaded.controller.direction.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, models[1].direction.weight.half().float())


def test_public_names_resolve():
    import otavatar.weights as weights

    for name in weights.__all__:
        assert getattr(weights, name) is not None, name
    assert set(weights.__all__) <= set(dir(weights))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        weights.nope  # noqa: B018
