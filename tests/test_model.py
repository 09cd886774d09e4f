"""otavatar.Model: fingerprints, the forms a `model=` argument takes, the embedded default's clear error."""
from __future__ import annotations

import pytest

from _sdk_fixtures import tiny_modules, tiny_weights_file

torch = pytest.importorskip("torch")

from otavatar.model import Model, fingerprint  # noqa: E402
from otavatar.weights import WeightsError, load_default, save_models  # noqa: E402


@pytest.fixture(scope="module")
def modules():
    return tiny_modules(0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights_file(tmp_path_factory.mktemp("model"), seed=0)


def test_fingerprint_is_the_weights_not_the_file(modules, weights):
    model = Model.from_modules(*modules)
    assert len(model.fingerprint) == 64 and int(model.fingerprint, 16) >= 0
    assert Model.load(weights).fingerprint == model.fingerprint            # same seed, saved and reloaded
    assert Model.from_modules(*tiny_modules(1)).fingerprint != model.fingerprint
    assert fingerprint(modules[0], None) != model.fingerprint              # the controller counts


def test_fingerprint_sees_one_changed_number(modules):
    G, C = tiny_modules(0)
    before = fingerprint(G, C)
    with torch.no_grad():
        next(C.parameters()).view(-1)[0] += 1e-6
    assert fingerprint(G, C) != before
    assert fingerprint(*modules) == before                                  # the fixture was not touched


def test_resolve_accepts_every_form(modules, weights):
    model = Model.from_modules(*modules)
    assert Model.resolve(model) is model
    for form in (weights, str(weights), modules):
        resolved = Model.resolve(form)
        assert isinstance(resolved, Model) and resolved.fingerprint == model.fingerprint
    assert Model.resolve(weights).source == str(weights)
    with pytest.raises(TypeError, match="model must be None"):
        Model.resolve(3.5)
    with pytest.raises(WeightsError, match="no such file"):
        Model.resolve(weights.parent / "missing.safetensors")


def test_properties(modules):
    model = Model.from_modules(*modules)
    assert (model.resolution, model.num_ws, model.w_dim, model.window) == (128, 10, 128, 27)
    assert model.device == torch.device("cpu") and "fingerprint=" in repr(model)
    assert model.reconstruction_loss() is model.reconstruction_loss()      # built once


def test_bad_modules_are_refused(modules):
    G, C = modules
    with pytest.raises(TypeError, match="generator must be an otavatar TriplaneGenerator"):
        Model.from_modules(C, C)
    with pytest.raises(TypeError, match="controller must be an otavatar MotionController"):
        Model.from_modules(G, G)
    from otavatar.models import MotionController

    with pytest.raises(ValueError, match="different presets"):
        Model.from_modules(G, MotionController.official())


def test_a_file_without_generator_is_refused(modules, tmp_path):
    path = save_models(tmp_path / "c.safetensors", controller=modules[1])
    with pytest.raises(WeightsError, match="holds no generator"):
        Model.load(path)


def test_default_missing_names_the_file_and_the_command(monkeypatch, tmp_path):
    import otavatar.weights.default as default

    monkeypatch.setattr(default, "default_path", lambda: tmp_path / "otavatar-tiny.safetensors")
    with pytest.raises(FileNotFoundError, match=r"otavatar-tiny\.safetensors.*`otavatar train`"):
        load_default()
    with pytest.raises(FileNotFoundError, match="otavatar train"):
        Model.resolve(None)


def test_default_loads_the_embedded_file(monkeypatch, weights, modules):
    import otavatar.weights.default as default

    monkeypatch.setattr(default, "default_path", lambda: weights)
    G, C = load_default()
    assert not G.training and not C.training
    model = Model.default()
    assert model.fingerprint == fingerprint(*modules) and model.source.startswith("embedded default")


def test_the_default_path_is_inside_the_package():
    from otavatar.weights import default_path

    assert default_path().name == "otavatar-tiny.safetensors" and default_path().parent.name == "default"
