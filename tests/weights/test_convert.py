"""Converting official EG3D (.pth, .pkl) and OTAvatar (.pt) files built from the parity recipe."""
from __future__ import annotations

import builtins
import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from official_files import with_constants, write_eg3d_pkl, write_eg3d_pth, write_otavatar_pt
from otavatar.camera import look_at_camera
from otavatar.models import MotionController
from otavatar.weights import (ConversionReport, WeightsError, convert_official, load_models, read_official,
                              save_models, sniff_format)


def assert_matches_reference(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    want, got = reference.state_dict(), model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def assert_same_outputs(loaded, reference) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        if "generator" in reference:
            G, R = loaded.generator, reference["generator"]
            c = torch.from_numpy(np.stack([look_at_camera(0.4, -0.15), look_at_camera(-0.3, 0.2)]))
            ws = R.mapping(torch.randn(2, R.config.z_dim), c) + 0.3 * torch.randn(2, R.num_ws, R.config.w_dim)
            want, got = R.synthesis(ws, c), G.synthesis(ws, c)
            assert torch.equal(got.image, want.image) and torch.equal(got.depth, want.depth)
        if "controller" in reference:
            x = 0.5 * torch.randn(2, 70, 27)
            assert torch.equal(loaded.controller(x), reference["controller"](x))


@pytest.fixture
def pth(tmp_path, tiny_official) -> Path:
    return write_eg3d_pth(tmp_path / "ffhqrebalanced512-64.pth", tiny_official["generator"])


# -- the three formats round-trip -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pth", "pt", "pt-module-prefix", "pkl"])
def test_round_trip_into_our_format(tmp_path, fmt, tiny_official, tiny_reference, marker):
    gen, ctl = tiny_official["generator"], tiny_official["controller"]
    if fmt == "pth":
        src, networks = write_eg3d_pth(tmp_path / "eg3d.pth", gen), ("generator",)
    elif fmt == "pkl":
        src, networks = write_eg3d_pkl(tmp_path / "network-snapshot.pkl", gen, marker=marker), ("generator",)
    else:
        src = write_otavatar_pt(tmp_path / "epoch_00005_iteration_000002000_checkpoint.pt", gen, ctl,
                                ddp_prefix=fmt.endswith("prefix"))
        networks = ("generator", "controller")

    out = tmp_path / "converted.safetensors"
    report = convert_official([src], out)
    assert isinstance(report, ConversionReport)
    assert report.output == out and out.is_file() and report.output_bytes == out.stat().st_size
    assert report.preset == "tiny"  # read off the shapes
    assert report.formats == {str(src): {"pth": "eg3d-pth", "pkl": "eg3d-pkl"}.get(fmt, "otavatar-pt")}
    assert report.generator_source == src and report.generator_tensors == len(tiny_reference["generator"].state_dict())
    if "controller" in networks:
        assert report.controller_source == src and report.controller_tensors == 13
        assert report.entries[str(src)] == {"net_G_ema": len(gen), "net_Warp_ema": 21}
    else:
        assert report.controller_source is None and report.controller_tensors == 0

    loaded = load_models(out)
    assert loaded.metadata["preset"] == "tiny"
    assert loaded.metadata["converted_from"][0]["file"] == src.name
    for name in ("generator", "controller"):
        if name in networks:
            assert_matches_reference(getattr(loaded, name), tiny_reference[name])
        else:
            assert getattr(loaded, name) is None
    assert_same_outputs(loaded, {n: tiny_reference[n] for n in networks})
    assert not marker.exists(), "the pickle's embedded source was executed"


def test_recipe_values_arrive_bit_for_bit(tmp_path, recipe, tiny_keys):
    """Compare with the recipe arrays themselves, not only with a model loaded from them."""
    gen = recipe(tiny_keys["generator"], seed=4)
    src = write_eg3d_pth(tmp_path / "g.pth", with_constants(gen, tiny_keys["generator"]))
    loaded = load_models(convert_official(src, tmp_path / "g.safetensors").output)
    state = loaded.generator.state_dict()
    assert state.keys() == gen.keys()
    for k, v in gen.items():
        assert np.array_equal(state[k].numpy(), v), k


def test_official_preset_round_trip_matches_the_parity_fixtures(tmp_path, recipe, eg3d_keys, controller_keys,
                                                                controller_case0, eg3d_case0):
    """The real key sets (176 + 21 entries): preset detection, strict coverage, and the published outputs."""
    gen = with_constants(recipe(eg3d_keys, seed=0), eg3d_keys)
    ctl = with_constants(recipe(controller_keys, seed=0), controller_keys)
    assert len(gen) == 176 and len(ctl) == 21
    src = write_otavatar_pt(tmp_path / "otavatar.pt", gen, ctl, ddp_prefix=False)
    report = convert_official([src], tmp_path / "official.safetensors")
    assert report.preset == "official" and report.parameters == 30_662_136 + 869_420
    assert report.generator_tensors == 150 and report.controller_tensors == 13
    loaded = load_models(report.output)
    with torch.no_grad():
        motion = loaded.controller(torch.from_numpy(controller_case0["x"]))
        ws = loaded.generator.mapping(torch.from_numpy(eg3d_case0["z"]), torch.from_numpy(eg3d_case0["c"]))
    # tolerances from parity/README.md section 6 (20-50x the float32-vs-float64 rounding level)
    assert np.abs(motion.numpy() - controller_case0["motion"]).max() <= 1e-5
    assert np.abs(ws.numpy() - eg3d_case0["ws_mapped"]).max() <= 1e-8


# -- several inputs -----------------------------------------------------------------------------------------

def test_otavatar_generator_overrides_the_eg3d_one(tmp_path, recipe, tiny_keys, tiny_official, tiny_reference):
    finetuned = with_constants(recipe(tiny_keys["generator"], seed=7), tiny_keys["generator"])
    eg3d = write_eg3d_pth(tmp_path / "eg3d.pth", tiny_official["generator"])
    ota = write_otavatar_pt(tmp_path / "ota.pt", finetuned, tiny_official["controller"], ddp_prefix=True)
    report = convert_official([eg3d, ota], tmp_path / "both.safetensors")
    assert report.generator_source == ota and report.controller_source == ota
    assert any("finetuned" in n for n in report.notes)
    loaded = load_models(report.output)
    assert torch.equal(loaded.generator.w_avg, finetuned["backbone.mapping.w_avg"])
    assert_matches_reference(loaded.controller, tiny_reference["controller"])


def test_eg3d_generator_and_controller_only_checkpoint(tmp_path, tiny_official, tiny_reference):
    eg3d = write_eg3d_pth(tmp_path / "eg3d.pth", tiny_official["generator"])
    ota = write_otavatar_pt(tmp_path / "ota.pt", None, tiny_official["controller"], ddp_prefix=False)
    report = convert_official([ota, eg3d], tmp_path / "both.safetensors")
    assert (report.generator_source, report.controller_source) == (eg3d, ota)
    loaded = load_models(report.output)
    assert_matches_reference(loaded.generator, tiny_reference["generator"])
    assert_matches_reference(loaded.controller, tiny_reference["controller"])


def test_two_generators_of_one_kind_are_refused(tmp_path, pth, marker, tiny_official):
    pkl = write_eg3d_pkl(tmp_path / "g.pkl", tiny_official["generator"], marker=marker)
    with pytest.raises(WeightsError, match="several inputs provide the generator"):
        convert_official([pth, pkl], tmp_path / "x.safetensors")


def test_mixed_presets_are_refused(tmp_path, recipe, controller_keys, tiny_official):
    ctl = with_constants(recipe(controller_keys, seed=0), controller_keys)
    ota = write_otavatar_pt(tmp_path / "ota.pt", tiny_official["generator"], ctl, ddp_prefix=False)
    with pytest.raises(WeightsError, match="different presets.*generator: tiny, controller: official"):
        convert_official(ota, tmp_path / "x.safetensors")


# -- detection by content -----------------------------------------------------------------------------------

def test_format_is_detected_by_content_not_extension(tmp_path, tiny_official, tiny_reference, marker):
    pkl = write_eg3d_pkl(tmp_path / "looks_like.pth", tiny_official["generator"], marker=marker)
    pt = write_otavatar_pt(tmp_path / "weights.bin", None, tiny_official["controller"], ddp_prefix=True)
    assert read_official(pkl).format == "eg3d-pkl" and read_official(pt).format == "otavatar-pt"
    loaded = load_models(convert_official([pkl, pt], tmp_path / "x.safetensors").output)
    assert_matches_reference(loaded.generator, tiny_reference["generator"])
    assert_matches_reference(loaded.controller, tiny_reference["controller"])


def test_sniff_format(tmp_path, pth, tiny_official):
    legacy = tmp_path / "legacy.pth"
    torch.save({"G_ema": tiny_official["generator"]}, legacy, _use_new_zipfile_serialization=False)
    ours = save_models(tmp_path / "ours.safetensors", controller=MotionController.tiny())
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    assert [sniff_format(p) for p in (pth, legacy, ours, text, plain)] == [
        "zip", "torch-legacy", "safetensors", "unknown", "pickle"]
    assert read_official(legacy).format == "eg3d-pth"


def test_bare_state_dicts_and_non_ema_fallback(tmp_path, tiny_official, tiny_reference):
    g = tmp_path / "g.pt"
    torch.save({"module." + k: v for k, v in tiny_official["generator"].items()}, g)
    assert read_official(g).format == "state-dict" and read_official(g).generator is not None
    c = tmp_path / "c.pt"
    torch.save({"net_Warp": {"module." + k: v for k, v in tiny_official["controller"].items()}}, c)
    report = convert_official([g, c], tmp_path / "x.safetensors")
    assert any("net_Warp_ema is absent; using net_Warp" in n for n in report.notes)
    loaded = load_models(report.output)
    assert_matches_reference(loaded.generator, tiny_reference["generator"])
    assert_matches_reference(loaded.controller, tiny_reference["controller"])


def test_explicit_preset(tmp_path, pth):
    assert convert_official(pth, tmp_path / "a.safetensors", preset="tiny").preset == "tiny"
    with pytest.raises(WeightsError) as info:
        convert_official(pth, tmp_path / "b.safetensors", preset="official")
    message = str(info.value)
    assert "(preset official)" in message and "missing keys: backbone.synthesis.b128" in message
    assert "shape mismatches: " in message and "backbone.mapping.embed.weight (file [128, 25], model [512, 25])" in message
    assert not (tmp_path / "b.safetensors").exists()
    with pytest.raises(WeightsError, match="unknown preset 'huge'; valid presets: official, tiny"):
        convert_official(pth, tmp_path / "c.safetensors", preset="huge")


# -- strict coverage ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("corrupt,match", [
    (lambda s: s.pop("decoder.net.2.bias"), r"missing keys: decoder.net.2.bias"),
    (lambda s: s.update({"decoder.net.4.weight": torch.zeros(3)}), r"unexpected keys: decoder.net.4.weight"),
    (lambda s: s.update({"decoder.net.0.weight": torch.zeros(32, 15)}),
     r"shape mismatches: decoder.net.0.weight \(file \[32, 15\], model \[32, 16\]\)"),
    (lambda s: s.update({"backbone.mapping.w_avg": torch.full((128,), float("inf"))}),
     r"non-finite values in: backbone.mapping.w_avg"),
    (lambda s: s.update({"backbone.synthesis.b8.resample_filter": torch.ones(4, 4)}), "resample_filter constants differ"),
])
def test_generator_coverage_is_checked(tmp_path, tiny_official, corrupt, match):
    state = dict(tiny_official["generator"])
    corrupt(state)
    src = write_eg3d_pth(tmp_path / "bad.pth", state)
    out = tmp_path / "x.safetensors"
    with pytest.raises(WeightsError, match=match) as info:
        convert_official(src, out, preset="tiny")
    assert str(src) in str(info.value)
    assert not out.exists()


def test_missing_and_unexpected_keys_are_all_listed(tmp_path, tiny_official):
    state = dict(tiny_official["generator"])
    for k in ("decoder.net.0.bias", "superresolution.block1.torgb.bias"):
        state.pop(k)
    state["renderer.plane_axes"] = torch.zeros(3, 3, 3)
    with pytest.raises(WeightsError) as info:
        convert_official(write_eg3d_pth(tmp_path / "bad.pth", state), tmp_path / "x.safetensors", preset="tiny")
    assert ("missing keys: decoder.net.0.bias, superresolution.block1.torgb.bias; "
            "unexpected keys: renderer.plane_axes") in str(info.value)


def test_controller_coverage_is_checked(tmp_path, tiny_official):
    state = dict(tiny_official["controller"])
    state["mapping_Refine.6.weight"] = state["mapping_Refine.6.weight"] * 2
    del state["direction.weight"]
    src = write_otavatar_pt(tmp_path / "bad.pt", None, state, ddp_prefix=True)
    with pytest.raises(WeightsError, match="mapping_Refine.6.weight differs from mapping_Refine.0.weight"):
        convert_official(src, tmp_path / "x.safetensors", preset="tiny")
    state["mapping_Refine.6.weight"] = state["mapping_Refine.0.weight"]
    src = write_otavatar_pt(tmp_path / "bad.pt", None, state, ddp_prefix=True)
    with pytest.raises(WeightsError, match="missing keys: direction.weight"):
        convert_official(src, tmp_path / "x.safetensors", preset="tiny")


# -- bad inputs -----------------------------------------------------------------------------------------------

def test_bad_inputs_are_named(tmp_path, pth):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    no_nets = tmp_path / "opt.pt"
    torch.save({"opt_G": {"state": {}}, "current_epoch": 3}, no_nets)
    not_tensors = tmp_path / "weird.pt"
    torch.save({"G_ema": {"backbone.x": [1, 2]}}, not_tensors)
    ours = save_models(tmp_path / "ours.safetensors", controller=MotionController.tiny())
    out = tmp_path / "x.safetensors"
    cases = [
        ([tmp_path / "missing.pth"], "missing.pth: no such file"),
        ([text], "not a recognised checkpoint"),
        ([no_nets], "no generator or controller found; top-level entries: current_epoch, opt_G"),
        ([not_tensors], r"\[G_ema\]: entries that are not tensors: backbone.x"),
        ([ours], "a safetensors file, not an official checkpoint"),
        ([], "no input files given"),
    ]
    for inputs, match in cases:
        with pytest.raises(WeightsError, match=match):
            convert_official(inputs, out)
    assert not out.exists()
    with pytest.raises(WeightsError, match="the output would overwrite an input"):
        convert_official([pth], pth)


# -- nothing in a checkpoint is ever executed -----------------------------------------------------------------

class RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsPython:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


class SmugglesThroughStorageBytes:
    """A 'storage' whose bytes are a pickle that runs a command if loaded without weights_only."""

    def __init__(self, marker: Path):
        self.payload = pickle.dumps(RunsCommand(marker))

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.payload,)


def test_malicious_pickle_is_refused_naming_the_global(tmp_path, marker):
    src = tmp_path / "ffhq.pkl"
    src.write_bytes(pickle.dumps({"G_ema": RunsCommand(marker)}))
    with pytest.raises(WeightsError, match=rf"refusing to load {os.system.__module__}\.system from the pickle"):
        convert_official(src, tmp_path / "x.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "x.safetensors").exists()


def test_payload_hidden_inside_an_eg3d_record_is_refused(tmp_path, tiny_official, marker):
    src = write_eg3d_pkl(tmp_path / "ffhq.pkl", tiny_official["generator"], marker=marker,
                         extra=lambda ns: {"training_set_kwargs": ns.EasyDict(hook=RunsPython(marker))})
    with pytest.raises(WeightsError, match=r"refusing to load builtins\.exec"):
        convert_official(src, tmp_path / "x.safetensors")
    assert not marker.exists()


def test_payload_inside_storage_bytes_is_refused(tmp_path, marker):
    src = tmp_path / "ffhq.pkl"
    src.write_bytes(pickle.dumps({"G_ema": collections.OrderedDict(w=SmugglesThroughStorageBytes(marker))}))
    with pytest.raises(WeightsError, match=r"not a plain torch storage; torch.load\(weights_only=True\) refused it"):
        convert_official(src, tmp_path / "x.safetensors")
    assert not marker.exists()


def test_malicious_torch_checkpoint_is_refused(tmp_path, marker):
    src = tmp_path / "otavatar.pt"
    torch.save({"net_G_ema": RunsCommand(marker)}, src)
    with pytest.raises(WeightsError, match=rf"torch.load\(weights_only=True\) cannot read it .*{os.system.__module__}\.system"):
        convert_official(src, tmp_path / "x.safetensors")
    assert not marker.exists()
