"""Convert the published checkpoints into our safetensors format (spec section 5).

Inputs, recognised by their content (the extension is not trusted):

* EG3D `.pth` as OTAvatar ships it: `torch.save({'G_ema': state_dict})`;
* OTAvatar's training checkpoint `.pt`: `torch.save({'net_G_ema': ..., 'net_Warp_ema': ..., ...})`, keys with
  or without DistributedDataParallel's `module.` prefix (the optimiser/scheduler entries are ignored);
* EG3D's NGC network pickle `.pkl`, read with `pickle_safe.read_network_pickle`, which turns EG3D's
  persistent-class records into plain data and never executes the source embedded in the file;
* a bare state dict saved with `torch.save` (generator or controller keys, recognised by their names).

Every torch file is opened with `torch.load(weights_only=True)`. When several inputs provide the same network,
OTAvatar's finetuned `net_G_ema` wins over EG3D's `G_ema` (the published inference loads the EG3D file first
and the OTAvatar checkpoint over it); two inputs of the same kind for one network are refused.

The preset (`official` or `tiny`) is read off the tensor shapes unless one is named. Every load is strict:
missing, unexpected, mis-shaped and non-finite entries are listed in a `WeightsError`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from otavatar.config import PRESETS, preset as preset_configs

from .io import save_models
from .state import WeightsError, _summarise, strip_prefix, torch_load_reason

# Ten bytes of the magic number that torch.save's legacy (pre-1.6, non-zip) format pickles first.
_TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_GENERATOR_ENTRIES = ("net_G_ema", "G_ema", "net_G")            # in order of preference within one file
_CONTROLLER_ENTRIES = ("net_Warp_ema", "net_Warp")
FORMATS = {
    "eg3d-pth": "EG3D .pth ({'G_ema': state_dict})",
    "otavatar-pt": "OTAvatar checkpoint (net_G_ema / net_Warp_ema)",
    "eg3d-pkl": "EG3D network pickle (read without executing it)",
    "state-dict": "bare state dict",
}


@dataclass
class OfficialCheckpoint:
    """The networks found in one official file, as official-key -> tensor dicts (prefix removed)."""

    path: Path
    format: str                                      # a key of FORMATS
    generator: dict[str, torch.Tensor] | None = None
    controller: dict[str, torch.Tensor] | None = None
    entries: dict[str, int] = field(default_factory=dict)  # entry used ('G_ema', 'net_Warp_ema', ...) -> tensors
    notes: list[str] = field(default_factory=list)


@dataclass
class OfficialModels:
    """Our models loaded from official files (see `load_official`)."""

    generator: Any                    # TriplaneGenerator | None
    controller: Any                   # MotionController | None
    preset: str
    generator_source: Path | None
    controller_source: Path | None
    checkpoints: list[OfficialCheckpoint]
    notes: list[str]


@dataclass
class ConversionReport:
    """What `convert_official` found and wrote."""

    output: Path
    preset: str
    inputs: list[Path]
    formats: dict[str, str]           # input path -> format (a key of FORMATS)
    entries: dict[str, dict[str, int]]  # input path -> {entry used: tensor count}
    generator_source: Path | None
    controller_source: Path | None
    generator_tensors: int            # tensors written for each network (0 when absent)
    controller_tensors: int
    parameters: int                   # parameters written, both networks
    output_bytes: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.output} ({self.output_bytes / 2**20:.1f} MiB, preset {self.preset}, "
                 f"{self.parameters:,} parameters)"]
        if self.generator_source is not None:
            lines.append(f"  generator:  {self.generator_tensors} tensors from {self.generator_source}")
        if self.controller_source is not None:
            lines.append(f"  controller: {self.controller_tensors} tensors from {self.controller_source}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- reading one file ---------------------------------------------------------------------------------------

def sniff_format(path: str | os.PathLike[str]) -> str:
    """'zip' (torch.save), 'torch-legacy', 'pickle', 'safetensors' or 'unknown', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a" and head[4:14] == _TORCH_LEGACY_MAGIC:
        return "torch-legacy"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def read_official(path: str | os.PathLike[str]) -> OfficialCheckpoint:
    """Read the networks in one official checkpoint file (format detected from the content)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path}: not a file")
    kind = sniff_format(path)
    if kind in ("zip", "torch-legacy"):
        return _from_torch_object(path, _torch_load(path))
    if kind == "pickle":
        return _from_network_pickle(path)
    if kind == "safetensors":
        raise WeightsError(f"{path}: a safetensors file, not an official checkpoint; our own files load with "
                           "otavatar.weights.load_models and need no conversion")
    raise WeightsError(f"{path}: not a recognised checkpoint (expected a torch.save file - EG3D .pth, OTAvatar "
                       ".pt - or an EG3D network pickle .pkl)")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for refused globals, RuntimeError for corrupt archives
        raise WeightsError(f"{path}: torch.load(weights_only=True) cannot read it ({torch_load_reason(e)}). "
                           "Official checkpoints hold only tensors and plain containers; a file that needs "
                           "arbitrary objects is refused rather than executed") from e


def _from_torch_object(path: Path, obj: Any) -> OfficialCheckpoint:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict at the top level of the torch file, got {type(obj).__name__}")
    ckpt = OfficialCheckpoint(path=path, format="state-dict")
    if any(k in obj for k in ("net_G_ema", "net_Warp_ema", "net_G", "net_Warp")):
        ckpt.format = "otavatar-pt"
    elif "G_ema" in obj:
        ckpt.format = "eg3d-pth"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = strip_prefix(_tensor_dict(path, "", obj))
        if any(k.startswith("backbone.") for k in state):
            ckpt.generator, ckpt.entries["state_dict"] = state, len(state)
        elif any(k.startswith("mapping_3DMM.") for k in state):
            ckpt.controller, ckpt.entries["state_dict"] = state, len(state)
        else:
            raise WeightsError(f"{path}: a state dict, but its keys look like neither the EG3D generator "
                               f"(backbone.*) nor the motion controller (mapping_3DMM.*): {_summarise(state)}")
        return ckpt
    else:
        raise WeightsError(f"{path}: no generator or controller found; top-level entries: "
                           f"{_summarise(map(str, obj))} (expected G_ema, net_G_ema or net_Warp_ema)")

    for entries, slot in ((_GENERATOR_ENTRIES, "generator"), (_CONTROLLER_ENTRIES, "controller")):
        entry = next((e for e in entries if obj.get(e) is not None), None)
        if entry is None:
            continue
        if entry in ("net_G", "net_Warp"):
            ckpt.notes.append(f"{path.name}: {entry}_ema is absent; using {entry} (the non-EMA training weights)")
        state = strip_prefix(_tensor_dict(path, entry, obj[entry]))
        setattr(ckpt, slot, state)
        ckpt.entries[entry] = len(state)
    return ckpt


def _tensor_dict(path: Path, entry: str, value: Any) -> dict[str, torch.Tensor]:
    where = f"{path} [{entry}]" if entry else str(path)
    if not isinstance(value, Mapping):
        raise WeightsError(f"{where}: expected a state dict (key -> tensor), got {type(value).__name__}")
    bad = [str(k) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{where}: entries that are not tensors: {_summarise(bad)}")
    return {k: v.detach() for k, v in value.items()}


def _from_network_pickle(path: Path) -> OfficialCheckpoint:
    from .pickle_safe import read_network_pickle

    net = read_network_pickle(path, "G_ema")
    ckpt = OfficialCheckpoint(path=path, format="eg3d-pkl", generator=strip_prefix(net.tensors),
                              entries={"G_ema": len(net.tensors)})
    if net.class_name:
        ckpt.notes.append(f"{path.name}: G_ema is a {net.class_name} record (its embedded source was not run)")
    return ckpt


# -- presets ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def expected_shapes(network: str, preset: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape that `network` ('generator' | 'controller') of `preset` loads (meta tensors only)."""
    from otavatar.models import MotionController, TriplaneGenerator

    g_cfg, c_cfg = preset_configs(preset)
    with torch.device("meta"):
        model = TriplaneGenerator(g_cfg) if network == "generator" else MotionController(c_cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _comparable(network: str, state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Shapes of the entries a strict load compares (constants and the controller's aliases dropped)."""
    out = {}
    for k, v in state.items():
        if network == "generator" and k.endswith("resample_filter"):
            continue
        if network == "controller" and k.startswith("mapping_Refine.") and k.split(".")[1] in {"2", "4", "6", "8"}:
            continue
        out[k] = tuple(v.shape)
    return out


def detect_preset(network: str, state: Mapping[str, torch.Tensor]) -> str | None:
    """The preset whose `network` has exactly these keys and shapes, or None."""
    shapes = _comparable(network, state)
    for name in PRESETS:
        if shapes == expected_shapes(network, name):
            return name
    return None


# -- loading and converting ---------------------------------------------------------------------------------

def load_official(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], preset: str | None = None, *,
                  log: Callable[[str], None] | None = None) -> OfficialModels:
    """Read official files and load their networks into our models, strictly."""
    from otavatar.models import MotionController, TriplaneGenerator

    log = log or (lambda message: None)
    paths = _as_paths(inputs)
    if preset is not None and preset not in PRESETS:
        raise WeightsError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    checkpoints = []
    for p in paths:
        log(f"reading {p}")
        ckpt = read_official(p)
        found = ", ".join(f"{entry} ({n} tensors)" for entry, n in ckpt.entries.items())
        log(f"  {FORMATS[ckpt.format]}: {found}")
        checkpoints.append(ckpt)
    notes = [n for c in checkpoints for n in c.notes]

    gen = _pick("generator", checkpoints, notes)
    ctl = _pick("controller", checkpoints, notes)
    if gen is None and ctl is None:
        raise WeightsError("no generator or controller in " + ", ".join(map(str, paths)))

    chosen = preset
    if chosen is None:
        detected = {name: detect_preset(name, getattr(c, name)) for name, c in (("generator", gen), ("controller", ctl))
                    if c is not None}
        found = {d for d in detected.values() if d is not None}
        if len(found) > 1:
            raise WeightsError("the networks belong to different presets (" +
                               ", ".join(f"{k}: {v}" for k, v in detected.items()) + "); convert them separately")
        if found:
            chosen = found.pop()
            log(f"preset: {chosen} (from the tensor shapes)")
        else:
            chosen = "official"
            log("preset: the shapes match no preset exactly; trying 'official'")
    else:
        log(f"preset: {chosen}")

    g_cfg, c_cfg = preset_configs(chosen)
    generator = controller = None
    if gen is not None:
        log(f"loading the generator from {gen.path}")
        generator = TriplaneGenerator(g_cfg)
        _load(generator, gen, chosen, "generator")
    if ctl is not None:
        log(f"loading the controller from {ctl.path}")
        controller = MotionController(c_cfg)
        _load(controller, ctl, chosen, "controller")
    return OfficialModels(generator=generator, controller=controller, preset=chosen,
                          generator_source=gen.path if gen else None, controller_source=ctl.path if ctl else None,
                          checkpoints=checkpoints, notes=notes)


def convert_official(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
                     out: str | os.PathLike[str], preset: str | None = None, *,
                     metadata: Mapping[str, Any] | None = None,
                     log: Callable[[str], None] | None = None) -> ConversionReport:
    """Convert official EG3D/OTAvatar files to one otavatar safetensors file at `out`."""
    log = log or (lambda message: None)
    paths = _as_paths(inputs)
    out = Path(out)
    for p in paths:
        if p.exists() and out.exists() and os.path.samefile(p, out):
            raise WeightsError(f"{out}: the output would overwrite an input; choose another --out")
    models = load_official(paths, preset, log=log)
    meta = {
        "converted_from": [{"file": c.path.name, "format": c.format, "entries": c.entries} for c in models.checkpoints],
        "preset": models.preset,
        **dict(metadata or {}),
    }
    log(f"writing {out}")
    save_models(out, generator=models.generator, controller=models.controller, metadata=meta)

    def count(model: Any) -> tuple[int, int]:
        if model is None:
            return 0, 0
        return len(model.state_dict()), sum(p.numel() for p in model.parameters())

    (g_tensors, g_params), (c_tensors, c_params) = count(models.generator), count(models.controller)
    return ConversionReport(
        output=out, preset=models.preset, inputs=paths,
        formats={str(c.path): c.format for c in models.checkpoints},
        entries={str(c.path): dict(c.entries) for c in models.checkpoints},
        generator_source=models.generator_source, controller_source=models.controller_source,
        generator_tensors=g_tensors, controller_tensors=c_tensors, parameters=g_params + c_params,
        output_bytes=out.stat().st_size, notes=models.notes)


def _as_paths(inputs: Any) -> list[Path]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [Path(p) for p in inputs]
    if not paths:
        raise WeightsError("no input files given")
    return paths


def _pick(slot: str, checkpoints: Iterable[OfficialCheckpoint], notes: list[str]) -> OfficialCheckpoint | None:
    """The checkpoint that provides `slot`: OTAvatar's over EG3D's; two of one kind are refused."""
    have = [c for c in checkpoints if getattr(c, slot) is not None]
    if len(have) <= 1:
        return have[0] if have else None
    finetuned = [c for c in have if c.format == "otavatar-pt"]
    if len(finetuned) == 1:
        others = ", ".join(str(c.path) for c in have if c is not finetuned[0])
        notes.append(f"{slot}: OTAvatar's finetuned weights in {finetuned[0].path} replace those of {others}, "
                     "as the published inference does")
        return finetuned[0]
    raise WeightsError(f"several inputs provide the {slot} ({', '.join(str(c.path) for c in have)}); "
                       "pass only one of them")


def _load(model: Any, ckpt: OfficialCheckpoint, preset: str, slot: str) -> None:
    try:
        model.load_official_state_dict(getattr(ckpt, slot))
    except WeightsError as e:
        raise WeightsError(f"{ckpt.path}: {e} (preset {preset})") from e
