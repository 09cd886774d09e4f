"""The restricted unpickler for EG3D network pickles: reads the data, executes nothing, names what it refuses."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from official_files import PersistentObject, fake_eg3d_modules, module_state, write_eg3d_pkl
from otavatar.weights import WeightsError, read_network_pickle, safe_load_pickle
from otavatar.weights.pickle_safe import EasyDict, InertObject, PersistentRecord


@pytest.fixture
def pkl(tmp_path, tiny_official, marker) -> Path:
    return write_eg3d_pkl(tmp_path / "network-snapshot.pkl", tiny_official["generator"], marker=marker)


def test_reads_every_persistent_tensor_and_nothing_else(pkl, tiny_official, marker):
    for name in ("torch_utils", "dnnlib", "training"):
        assert name not in sys.modules  # the writer's stand-ins are gone: reading must not need them
    net = read_network_pickle(pkl)
    want = tiny_official["generator"]
    assert net.tensors.keys() == want.keys()  # incl. resample_filter; not the renderer's non-persistent buffer
    for k, v in want.items():
        assert net.tensors[k].dtype == torch.float32 and torch.equal(net.tensors[k], v), k
    assert net.class_name == "training.triplane.TriPlaneGenerator"
    assert net.init_kwargs == {"z_dim": 512, "rendering_kwargs": {"depth_resolution": 48, "box_warp": 1,
                                                                  "ray_start": 2.25}}
    assert net.attributes["neural_rendering_resolution"] == 64
    assert net.attributes["rendering_kwargs"] == {"depth_resolution": 48, "ray_start": 2.25}
    for name in ("torch_utils", "dnnlib", "training"):
        assert name not in sys.modules
    assert not marker.exists()


def test_records_become_inert_data(pkl):
    data = safe_load_pickle(pkl)
    assert sorted(data) == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    assert isinstance(data["training_set_kwargs"], EasyDict) and data["training_set_kwargs"]["resolution"] == 512
    g = data["G_ema"]
    assert isinstance(g, PersistentRecord) and g.version == 6
    assert "embedded source was executed" in g.module_src  # kept as text only
    decoder = g.state["_modules"]["decoder"]
    assert isinstance(decoder, InertObject) and decoder.source_module == "training.triplane"
    seq = decoder.state["_modules"]["net"]
    assert isinstance(seq, InertObject) and (seq.source_module, seq.source_name) == (
        "torch.nn.modules.container", "Sequential")
    assert not isinstance(seq, torch.nn.Module)  # a stand-in, never the real class


def test_other_networks_and_a_missing_one(pkl):
    assert read_network_pickle(pkl, "D").tensors.keys() == {"w"}
    with pytest.raises(WeightsError, match=r"no 'G_ema' network in the pickle \(found \['a'\]\)"):
        bad = pkl.with_name("no_g.pkl")
        bad.write_bytes(pickle.dumps({"a": 1}))
        read_network_pickle(bad)


class Reduces:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("make,refused", [
    (lambda m: Reduces(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
    (lambda m: Reduces(builtins.exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
    (lambda m: Reduces(builtins.eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
    (lambda m: Reduces(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    (lambda m: Reduces(builtins.open, str(m), "w"), f"{builtins.open.__module__}.open"),  # io.open
])
def test_dangerous_globals_are_refused_before_running(tmp_path, marker, make, refused):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": make(marker)}))
    with pytest.raises(WeightsError, match=rf"refusing to load {refused} from the pickle"):
        read_network_pickle(path)
    assert not marker.exists()


def test_persistent_ids_are_refused(tmp_path):
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "0") if isinstance(obj, str) and obj == "x" else None

    path = tmp_path / "ids.pkl"
    with open(path, "wb") as f:
        WithIds(f).dump({"G_ema": "x"})
    with pytest.raises(WeightsError, match="refusing persistent id"):
        read_network_pickle(path)


def test_non_class_persistence_records_are_refused(tmp_path):
    path = tmp_path / "module_record.pkl"
    with fake_eg3d_modules() as ns:
        obj = PersistentObject(ns.reconstruct, {"type": "module", "version": 6, "module_src": "", "state": {}})
        path.write_bytes(pickle.dumps({"G_ema": obj}))
    with pytest.raises(WeightsError, match="unsupported torch_utils.persistence record"):
        read_network_pickle(path)


def test_a_record_whose_state_is_not_a_module(tmp_path):
    path = tmp_path / "odd.pkl"
    with fake_eg3d_modules() as ns:
        state = module_state({}, {}, {}, ns)
        state["_parameters"]["weight"] = [1.0, 2.0]
        obj = PersistentObject(ns.reconstruct, {"type": "class", "version": 6, "module_src": "",
                                                "class_name": "X", "state": state})
        path.write_bytes(pickle.dumps({"G_ema": obj, "H": 3}))
    with pytest.raises(WeightsError, match="weight: expected a tensor in _parameters, got list"):
        read_network_pickle(path)
    with pytest.raises(WeightsError, match="expected a pickled torch module"):
        read_network_pickle(path, "H")


@pytest.mark.parametrize("cut", [0, 100, -50])
def test_truncated_or_empty_pickles(tmp_path, pkl, cut):
    data = pkl.read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(WeightsError, match="cannot unpickle"):
        read_network_pickle(path)
