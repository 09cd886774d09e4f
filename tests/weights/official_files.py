"""Writers of official-format checkpoint files built from the parity recipe, in a temp dir.

* `.pth` as EG3D/OTAvatar ship it: `torch.save({'G_ema': state_dict})` (all official keys, including the
  `resample_filter` constants);
* `.pt` as OTAvatar's trainer writes it: `net_G_ema` / `net_Warp_ema` (plus the DDP-wrapped `net_G` /
  `net_Warp` and optimiser entries), with the shared Linear repeated under mapping_Refine.{0,2,4,6,8};
* `.pkl` imitating EG3D's network pickles: a plain pickle whose networks reduce to
  `torch_utils.persistence._reconstruct_persistent_obj(meta)` records (class name, embedded `module_src`,
  the module's `__dict__` as state), with `dnnlib.util.EasyDict` kwargs, EG3D's non-persistent classes
  (`training.triplane.OSGDecoder`, the renderer) and `torch.nn` containers pickled by class reference, and
  tensors pickled the way a plain pickle does it: `torch._utils._rebuild_tensor_v2` /
  `_rebuild_parameter` over storages that reduce to `torch.storage._load_from_bytes`.

The fake `torch_utils`, `dnnlib` and `training` modules exist only while a pickle is being written, so
reading it proves that nothing is imported. The embedded `module_src` writes a marker file if executed.
"""
from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from otavatar.models import MotionController, TriplaneGenerator
from otavatar.models.layers import fir_filter

BUFFER_NAMES = ("w_avg", "noise_const", "resample_filter")  # EG3D registers these as (persistent) buffers
SHARED_ALIASES = ("2", "4", "6", "8")


def official_generator_keys(model: TriplaneGenerator) -> list[tuple[str, list[int]]]:
    """[official key, shape] of a generator: our state dict plus the constant resample_filter buffers."""
    keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    keys += [(k, list(v.shape)) for k, v in model.named_buffers() if k.endswith("resample_filter")]
    return keys


def official_controller_keys(model: MotionController) -> list[tuple[str, list[int]]]:
    keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    keys += [(f"mapping_Refine.{i}.{p}", list(model.state_dict()[f"mapping_Refine.0.{p}"].shape))
             for i in SHARED_ALIASES for p in ("weight", "bias")]
    return keys


def with_constants(state: dict[str, np.ndarray], keys: list) -> dict[str, torch.Tensor]:
    """Recipe arrays as tensors, plus the resample_filter constants a real G_ema state dict carries."""
    out = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    for key, _ in keys:
        if key.endswith("resample_filter"):
            out[key] = fir_filter().clone()
    return out


# -- the three official formats ---------------------------------------------------------------------------

def write_eg3d_pth(path: Path, generator_state: dict[str, torch.Tensor]) -> Path:
    torch.save({"G_ema": collections.OrderedDict(generator_state)}, path)
    return path


def write_otavatar_pt(path: Path, generator_state: dict[str, torch.Tensor] | None,
                      controller_state: dict[str, torch.Tensor] | None, *, ddp_prefix: bool) -> Path:
    """OTAvatar's checkpoint; with `ddp_prefix` the EMA entries carry `module.` too (the spec leaves it open)."""
    def prefixed(state, on):
        return collections.OrderedDict((("module." if on else "") + k, v) for k, v in state.items())

    data: dict[str, Any] = {"current_epoch": 5, "current_iteration": 2000,
                            "opt_Warp": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}
    if generator_state is not None:
        data["net_G_ema"] = prefixed(generator_state, ddp_prefix)
        data["net_G"] = prefixed(generator_state, True)
    if controller_state is not None:
        data["net_Warp_ema"] = prefixed(controller_state, ddp_prefix)
        data["net_Warp"] = prefixed(controller_state, True)
    torch.save(data, path)
    return path


def _fake_function(module: str, name: str) -> Callable[..., Any]:
    def fn(*args: Any) -> None:
        raise AssertionError("the fake EG3D helpers are only for writing pickles")
    fn.__module__, fn.__name__, fn.__qualname__ = module, name, name
    return fn


def _fake_class(module: str, name: str, base: type = object) -> type:
    return type(name, (base,), {"__module__": module, "__qualname__": name})


@contextlib.contextmanager
def fake_eg3d_modules() -> Iterator[types.SimpleNamespace]:
    """Register stand-ins of EG3D's modules in sys.modules so that pickle can name them; removed on exit."""
    ns = types.SimpleNamespace(
        reconstruct=_fake_function("torch_utils.persistence", "_reconstruct_persistent_obj"),
        EasyDict=_fake_class("dnnlib.util", "EasyDict", dict),
        OSGDecoder=_fake_class("training.triplane", "OSGDecoder"),
        ImportanceRenderer=_fake_class("training.volumetric_rendering.renderer", "ImportanceRenderer"),
    )
    modules = {
        "torch_utils": {}, "torch_utils.persistence": {"_reconstruct_persistent_obj": ns.reconstruct},
        "dnnlib": {}, "dnnlib.util": {"EasyDict": ns.EasyDict},
        "training": {}, "training.triplane": {"OSGDecoder": ns.OSGDecoder},
        "training.volumetric_rendering": {},
        "training.volumetric_rendering.renderer": {"ImportanceRenderer": ns.ImportanceRenderer},
    }
    saved = {name: sys.modules.get(name) for name in modules}
    try:
        for name, attrs in modules.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
        yield ns
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class PersistentObject:
    """Pickles exactly as an EG3D persistent-class instance does: a call of the reconstruct function."""

    def __init__(self, reconstruct: Callable[..., Any], meta: dict[str, Any]):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def module_state(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 modules: dict[str, Any], ns: types.SimpleNamespace, **extra: Any) -> dict[str, Any]:
    """An nn.Module-like `__dict__`."""
    return {"training": False,
            "_parameters": collections.OrderedDict((k, nn.Parameter(v.clone(), requires_grad=False))
                                                   for k, v in params.items()),
            "_buffers": collections.OrderedDict((k, v.clone()) for k, v in buffers.items()),
            "_non_persistent_buffers_set": set(), "_modules": collections.OrderedDict(modules),
            "_forward_hooks": collections.OrderedDict(), "_init_args": (),
            "_init_kwargs": ns.EasyDict(), **extra}


def build_network(flat: dict[str, torch.Tensor], ns: types.SimpleNamespace, module_src: str,
                  path: str = "") -> Any:
    """A pickled-module tree holding `flat` (official names), shaped as EG3D's G_ema is."""
    leaves = {k: v for k, v in flat.items() if "." not in k}
    children: dict[str, dict[str, torch.Tensor]] = collections.defaultdict(dict)
    for k, v in flat.items():
        if "." in k:
            head, rest = k.split(".", 1)
            children[head][rest] = v
    modules = {name: build_network(sub, ns, module_src, f"{path}{name}.") for name, sub in children.items()}
    params = {k: v for k, v in leaves.items() if k not in BUFFER_NAMES}
    buffers = {k: v for k, v in leaves.items() if k in BUFFER_NAMES}
    if path == "decoder.net.":   # nn.Sequential(FC, Softplus, FC): real torch classes, pickled by reference
        modules = {"0": modules["0"], "1": nn.Softplus(), "2": modules["2"]}
        seq = nn.Sequential()
        seq.__dict__["_modules"] = collections.OrderedDict(modules)
        return seq
    if path == "decoder.":       # EG3D's OSGDecoder is not a persistent class: pickled by reference
        obj = object.__new__(ns.OSGDecoder)
        obj.__dict__.update(module_state(params, buffers, modules, ns, hidden_dim=64))
        return obj
    state = module_state(params, buffers, modules, ns)
    if path == "":               # the generator itself: kwargs, attributes and a renderer without saved state
        renderer = object.__new__(ns.ImportanceRenderer)
        renderer.__dict__.update(module_state({}, {"scratch": torch.zeros(2)}, {}, ns,
                                              plane_axes=torch.eye(3).expand(3, 3, 3).clone()))
        renderer.__dict__["_non_persistent_buffers_set"] = {"scratch"}  # must not be read as a weight
        state["_modules"]["renderer"] = renderer
        state["_init_kwargs"] = ns.EasyDict(z_dim=512, rendering_kwargs=ns.EasyDict(depth_resolution=48,
                                                                                      box_warp=1, ray_start=2.25))
        state["rendering_kwargs"] = {"depth_resolution": 48, "ray_start": 2.25}
        state["neural_rendering_resolution"] = 64
        state["_parameters"]["unused_bias"] = None  # None entries are skipped, as state_dict() skips them
    meta = {"type": "class", "version": 6, "module_src": module_src,
            "class_name": "training.triplane.TriPlaneGenerator" if path == "" else f"training.networks.{path or 'G'}",
            "state": state}
    return PersistentObject(ns.reconstruct, meta)


def write_eg3d_pkl(path: Path, generator_state: dict[str, torch.Tensor], *, marker: Path,
                   extra: Callable[[types.SimpleNamespace], dict[str, Any]] | None = None) -> Path:
    """An EG3D-style network pickle. Its `module_src` would write `marker` if anything executed it."""
    module_src = f"open({str(marker)!r}, 'w').write('embedded source was executed')\n"
    with fake_eg3d_modules() as ns:
        g_ema = build_network(generator_state, ns, module_src)
        d = PersistentObject(ns.reconstruct, {"type": "class", "version": 6, "module_src": module_src,
                                              "class_name": "training.dual_discriminator.DualDiscriminator",
                                              "state": module_state({"w": torch.ones(2)}, {}, {}, ns)})
        data = {"G": g_ema, "D": d, "G_ema": g_ema, "augment_pipe": None,
                "training_set_kwargs": ns.EasyDict(resolution=512, use_labels=True)}
        if extra is not None:
            data.update(extra(ns))
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path
