"""The torch-free Engine: runs an exported model folder (controller.onnx, generator.onnx, manifest.json)
with ONNX Runtime. numpy + onnxruntime only -- this module must never import torch (a subprocess test checks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .manifest import FORMAT, FORMAT_VERSION, META_PREFIX, ManifestError, read_manifest

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
_EP = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class RenderOutput:
    frames: NDArray[np.uint8]       # [B, H, W, 3] RGB
    image: NDArray[np.float32]      # [B, 3, H, W] about [-1, 1]
    image_raw: NDArray[np.float32]  # [B, 3, r, r]
    depth: NDArray[np.float32]      # [B, 1, r, r]


def to_uint8_frames(image: NDArray[np.floating]) -> NDArray[np.uint8]:
    """[B,3,H,W] in [-1,1] -> [B,H,W,3] uint8 (the SDK's mapping: (x + 1) * 127.5, rounded, clipped)."""
    return np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


class Engine:
    """Run an exported model folder.

    engine = Engine("out/onnx")            # checks manifest.json and every file's sha256
    motion = engine.motion(x)              # x [B,70,27] -> [B,num_ws,w_dim]
    out = engine.render(ws, c)             # ws [B,num_ws,w_dim], c [B,25] -> RenderOutput (uint8 frames)

    providers: "auto" (TensorRT, then CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu", "cuda",
    "tensorrt", or an explicit list of ONNX Runtime execution-provider names.
    """

    def __init__(self, model_dir: str | Path, providers: str | Sequence[str] = "auto", *, threads: int | None = None):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.requested_providers = _resolve_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self._sessions: dict[str, Any] = {}
        self._io: dict[str, dict[str, list]] = {}
        for name, graph in self.manifest.get("graphs", {}).items():
            if graph.get("file") not in self.manifest["files"]:
                raise ManifestError(f"{self.model_dir}: graph {name!r} file {graph.get('file')!r} has no sha256 in "
                                    "the manifest")
            path = self.model_dir / graph["file"]
            session = ort.InferenceSession(str(path), sess_options=options, providers=self.requested_providers)
            self._check_metadata(name, path, session.get_modelmeta().custom_metadata_map)
            self._sessions[name] = session
            self._io[name] = {"inputs": graph["inputs"], "outputs": graph["outputs"]}
        missing = {"controller", "generator"} - set(self._sessions)
        if missing:
            raise ManifestError(f"{self.model_dir}: the manifest lists no {', '.join(sorted(missing))} graph")
        # what ONNX Runtime actually uses (a CUDA EP without a GPU falls back to CPU)
        self.providers = list(self._sessions["generator"].get_providers())

    def __repr__(self) -> str:
        return f"Engine({str(self.model_dir)!r}, providers={self.providers})"

    @property
    def generator_config(self) -> dict[str, Any]:
        return self.manifest["generator_config"]

    @property
    def controller_config(self) -> dict[str, Any]:
        return self.manifest["controller_config"]

    def motion(self, x: ArrayLike) -> NDArray[np.float32]:
        """x [B,70,27] (coefficients x frames) -> motion [B,num_ws,w_dim]."""
        (x,) = self._inputs("controller", [x])
        return self._sessions["controller"].run(None, {"x": x})[0]

    def render(self, ws: ArrayLike, c: ArrayLike) -> RenderOutput:
        """ws [B,num_ws,w_dim], c [B,25] -> RenderOutput with uint8 frames [B,H,W,3]."""
        ws, c = self._inputs("generator", [ws, c])
        image, image_raw, depth = self._sessions["generator"].run(None, {"ws": ws, "c": c})
        return RenderOutput(frames=to_uint8_frames(image), image=image, image_raw=image_raw, depth=depth)

    # -- checks -------------------------------------------------------------------------------------------
    def _inputs(self, graph: str, arrays: list[ArrayLike]) -> list[NDArray[np.float32]]:
        specs = self._io[graph]["inputs"]
        out = []
        batch = None
        for spec, value in zip(specs, arrays):
            a = np.asarray(value)
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise TypeError(f"{graph} input {spec['name']} must be numeric, got dtype {a.dtype}")
            want = spec["shape"]
            ok = a.ndim == len(want) and all(w == "batch" or w == d for w, d in zip(want, a.shape))
            if not ok:
                shown = "[" + ",".join("B" if w == "batch" else str(w) for w in want) + "]"
                raise ValueError(f"{graph} input {spec['name']} must have shape {shown}, got {list(a.shape)}")
            if a.shape[0] < 1:
                raise ValueError(f"{graph} input {spec['name']} has an empty batch")
            if batch is not None and a.shape[0] != batch:
                raise ValueError(f"{graph} inputs disagree on the batch size: {batch} and {a.shape[0]}")
            batch = a.shape[0]
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"{graph} input {spec['name']} holds NaN or infinite values")
            out.append(a)
        return out

    def _check_metadata(self, name: str, path: Path, meta: dict[str, str]) -> None:
        expect = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "graph": name,
                  "opset": str(self.manifest.get("opset")), "precision": self.manifest.get("precision")}
        for key in ("generator_config", "controller_config"):
            expect[key] = json.dumps(self.manifest.get(key), sort_keys=True)
        wrong = [f"{k}: graph has {meta.get(META_PREFIX + k)!r}, manifest says {v!r}"
                 for k, v in expect.items() if meta.get(META_PREFIX + k) != v]
        if wrong:
            raise ManifestError(f"{path}: metadata does not match the manifest ({'; '.join(wrong)[:800]})")


def _resolve_providers(providers: str | Sequence[str], available: Sequence[str]) -> list[str]:
    if isinstance(providers, str):
        if providers not in PROVIDER_CHOICES:
            raise ValueError(f"unknown providers {providers!r}; valid: {', '.join(PROVIDER_CHOICES)} or a list of "
                             f"execution-provider names (available here: {', '.join(available)})")
        if providers == "auto":
            # onnxruntime-gpu lists CUDA/TensorRT even without a GPU; ONNX Runtime then falls back to CPU
            wanted = [p for p in (_EP["tensorrt"], _EP["cuda"]) if p in available and _gpu_present()]
            return wanted + [_EP["cpu"]]
        chosen = _EP[providers]
        if chosen not in available:
            raise ValueError(f"{chosen} is not available in this onnxruntime (available: {', '.join(available)}); "
                             "install onnxruntime-gpu for CUDA/TensorRT")
        return [chosen] if providers == "cpu" else [chosen, _EP["cpu"]]
    providers = list(providers)
    unknown = [p for p in providers if p not in available]
    if not providers or unknown:
        raise ValueError(f"providers {providers} not available here; available: {', '.join(available)}")
    return providers


def _gpu_present() -> bool:
    """A CUDA device is visible (without torch or cupy): the driver library loads and reports one."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False
