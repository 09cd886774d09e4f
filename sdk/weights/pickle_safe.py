"""Read EG3D's NGC network pickles (`ffhqrebalanced512-64.pkl`) without executing anything in them.

The official loader unpickles with the real `torch_utils.persistence`, which `exec`s the Python source
embedded in the file (spec 5.3). Here `find_class` is an allow-list:

* torch's tensor/parameter rebuild helpers, and `torch.storage._load_from_bytes` mapped to a function
  that reads the storage with `torch.load(weights_only=True)`;
* `collections.OrderedDict`, `set`/`frozenset` and numpy's array/scalar reconstructors (plain data);
* `torch_utils.persistence._reconstruct_persistent_obj` -> an inert `PersistentRecord` holding the
  record's class name and state (the embedded `module_src` is kept as text, never run);
* `dnnlib.EasyDict` -> a plain `dict` subclass;
* classes of EG3D's own package (`training.*`) and of `torch.nn.modules.*`, which EG3D pickles by
  reference when they are not persistent classes (its renderer, decoder, `nn.Sequential`,
  `nn.Softplus`) -> inert `InertObject` stand-ins that only record their arguments and state; the real
  modules are never imported.

Every other global (`os.system`, `builtins.open`, ...) raises `WeightsError` naming it.
"""
from __future__ import annotations

import collections
import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .state import WeightsError, torch_load_reason

# Module prefixes whose classes become inert stand-ins (see the module docstring).
INERT_CLASS_PREFIXES = ("training.", "torch.nn.modules.")


class EasyDict(dict):
    """Stand-in for `dnnlib.EasyDict`: the same data as a plain dict."""


@dataclass
class PersistentRecord:
    """One `torch_utils.persistence` record: what the class was called and its pickled `__dict__`."""

    class_name: str
    version: int | None
    state: Any
    module_src: str = field(repr=False, default="")


class InertObject:
    """Stand-in for an object pickled by class reference: records constructor args and state only."""

    source_module: str = ""
    source_name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): already recorded
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.source_module}.{self.source_name}>"


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise WeightsError(f"unsupported torch_utils.persistence record (type {kind!r}); only classes are read")
    return PersistentRecord(class_name=str(meta.get("class_name")), version=meta.get("version"),
                            state=meta.get("state"), module_src=str(meta.get("module_src", "")))


def _load_storage_from_bytes(data: bytes) -> Any:
    """Replacement for `torch.storage._load_from_bytes`, which would call `torch.load(weights_only=False)`."""
    if not isinstance(data, (bytes, bytearray)):
        raise WeightsError(f"a tensor storage in the pickle is {type(data).__name__}, not bytes")
    try:
        with warnings.catch_warnings():  # TypedStorage deprecation and pickle-protocol notes: not the user's concern
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError("a tensor storage in the pickle is not a plain torch storage; "
                           f"torch.load(weights_only=True) refused it ({torch_load_reason(e)})") from e
    if not isinstance(storage, (torch.UntypedStorage, torch.storage.TypedStorage)):
        raise WeightsError(f"a tensor storage in the pickle holds a {type(storage).__name__}, not a storage")
    return storage


def _numpy_helpers() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    helpers: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        helpers[(module, "_reconstruct")] = multiarray._reconstruct
        helpers[(module, "scalar")] = multiarray.scalar
    return helpers


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    **_numpy_helpers(),
}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` only hands out `ALLOWED_GLOBALS` and inert stand-ins."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self._stand_ins: dict[tuple[str, str], type[InertObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module.startswith(INERT_CLASS_PREFIXES) and name.isidentifier():
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = type(name, (InertObject,), {"source_module": module, "source_name": name})
            return self._stand_ins[key]
        raise WeightsError(f"refusing to load {module}.{name} from the pickle: it is not on the allow-list of "
                           "tensor-rebuild helpers and plain-data types (the file may be malicious or not an "
                           "EG3D network pickle)")

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsError(f"refusing persistent id {pid!r}: plain network pickles do not use them")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle the file at `path` with `RestrictedUnpickler`; every failure is a `WeightsError` naming it."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except WeightsError as e:
            raise WeightsError(f"{path}: {e}") from e
        except Exception as e:  # truncated or corrupt data: pickle raises many kinds
            raise WeightsError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e


def object_state(obj: Any) -> dict[str, Any]:
    """The pickled `__dict__` of a persistent record or inert stand-in."""
    state = obj.state if isinstance(obj, (PersistentRecord, InertObject)) else None
    if not isinstance(state, dict):
        raise WeightsError(f"expected a pickled torch module, got {obj!r} with state of type {type(state).__name__}")
    return state


def module_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a pickled module tree to `{state-dict name: tensor}`, as `nn.Module.state_dict()` would.

    Walks `_parameters`, `_buffers` (minus `_non_persistent_buffers_set`) and `_modules` recursively.
    """
    state = object_state(obj)
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise WeightsError(f"{prefix}{name}: expected a tensor in {group}, got {type(value).__name__}")
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def plain_data(value: Any) -> Any:
    """Convert unpickled kwargs to JSON-like data: dicts, lists, str, numbers, bools, None."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain_data(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


@dataclass
class NetworkPickle:
    """One network taken out of an EG3D pickle."""

    tensors: dict[str, torch.Tensor]   # official state-dict names
    init_kwargs: dict[str, Any]        # the constructor kwargs, as plain data
    attributes: dict[str, Any]         # other public attributes (e.g. neural_rendering_resolution)
    class_name: str


def read_network_pickle(path: str | Path, network: str = "G_ema") -> NetworkPickle:
    """Read `network` (default `G_ema`) from an EG3D/StyleGAN-style network pickle, executing nothing."""
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or network not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise WeightsError(f"{path}: no {network!r} network in the pickle (found {found})")
    obj = data[network]
    try:
        tensors = module_tensors(obj)
    except WeightsError as e:
        raise WeightsError(f"{path} [{network}]: {e}") from e
    state = object_state(obj)
    attributes = {k: plain_data(v) for k, v in state.items()
                  if not k.startswith("_") and (v is None or isinstance(v, (str, int, float, bool, dict, list)))}
    name = obj.class_name if isinstance(obj, PersistentRecord) else f"{obj.source_module}.{obj.source_name}"
    return NetworkPickle(tensors=tensors, init_kwargs=plain_data(state.get("_init_kwargs") or {}),
                         attributes=attributes, class_name=name)
