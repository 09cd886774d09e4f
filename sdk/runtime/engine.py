"""The torch-free Engine: runs an exported model folder (controller.onnx, generator.onnx, manifest.json)
with ONNX Runtime. numpy + onnxruntime only -- this module must never import torch (a subprocess test checks).

On CUDA (the CUDA or TensorRT execution provider in use, and cupy installed with `cupy.cuda.is_available()`),
`render_avatar` / `render_many` keep every tensor on the device through ONNX Runtime IO binding (cupy buffers:
controller output, ws + motion, corrected cameras, generator outputs, uint8 conversion) and copy only the
uint8 frames to the host. Anywhere else the same steps run in numpy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .avatar import AvatarFileError, AvatarLatent, apply_intrinsics
from .manifest import FORMAT, FORMAT_VERSION, META_PREFIX, ManifestError, read_manifest

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
_EP = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class RenderOutput:
    frames: NDArray[np.uint8]                     # [B, H, W, 3] RGB
    image: NDArray[np.float32] | None = None      # [B, 3, H, W] about [-1, 1]   (None: frames only)
    image_raw: NDArray[np.float32] | None = None  # [B, 3, r, r]
    depth: NDArray[np.float32] | None = None      # [B, 1, r, r]

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class FrameRequest:
    """Frames of one avatar: controller windows x [n,70,27] (coefficients x frames) and cameras [n,25] (before
    the avatar's intrinsics correction). Several requests go through `Engine.render_many` in one run."""

    avatar: AvatarLatent
    windows: ArrayLike   # [n, 70, 27]
    cameras: ArrayLike   # [n, 25]


def to_uint8_frames(image: Any, xp: Any = np) -> Any:
    """[B,3,H,W] in [-1,1] -> [B,H,W,3] uint8 (the SDK's mapping: (x + 1) * 127.5, rounded, clipped).
    xp: numpy, or cupy for device arrays."""
    return xp.ascontiguousarray(xp.clip(xp.rint((image + 1.0) * 127.5), 0, 255).astype(xp.uint8).transpose(0, 2, 3, 1))


class Engine:
    """Run an exported model folder.

    engine = Engine("out/onnx")            # checks manifest.json and every file's sha256
    motion = engine.motion(x)              # x [B,70,27] -> [B,num_ws,w_dim]
    out = engine.render(ws, c)             # ws [B,num_ws,w_dim], c [B,25] -> RenderOutput (uint8 frames)
    out = engine.render_avatar(AvatarLatent.load("me.avatar"), windows, cameras)   # [T,70,27], [T,25]
    outs = engine.render_many([FrameRequest(a, x_a, c_a), FrameRequest(b, x_b, c_b)])  # one run for all

    providers: "auto" (TensorRT, then CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu", "cuda",
    "tensorrt", or an explicit list of ONNX Runtime execution-provider names.
    threads: ONNX Runtime intra-op threads (None: its default, one per physical core). Sessions run
    sequentially with every graph optimisation enabled (ORT_ENABLE_ALL: constant folding, Conv+Add/Mul fusion,
    layout transforms), the settings that matter on CPU (benchmarks/engine.py). The controller's session does
    not spin-wait for work: each session has its own intra-op threads, and the controller's, spinning after
    its sub-millisecond run, took the cores from the generator run that follows (tiny, batch 1: 94 ms per
    driven frame against 49 ms for the generator alone; benchmarks/engine.py).
    """

    def __init__(self, model_dir: str | Path, providers: str | Sequence[str] = "auto", *, threads: int | None = None):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.requested_providers = _resolve_providers(providers, ort.get_available_providers())
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be a non-negative int (0: ONNX Runtime's default), got {threads!r}")
        self._sessions: dict[str, Any] = {}
        self._io: dict[str, dict[str, list]] = {}
        for name, graph in self.manifest.get("graphs", {}).items():
            if graph.get("file") not in self.manifest["files"]:
                raise ManifestError(f"{self.model_dir}: graph {name!r} file {graph.get('file')!r} has no sha256 in "
                                    "the manifest")
            path = self.model_dir / graph["file"]
            options = _session_options(ort, threads, spin=name != "controller")
            session = ort.InferenceSession(str(path), sess_options=options, providers=self.requested_providers)
            self._check_metadata(name, path, session.get_modelmeta().custom_metadata_map)
            self._sessions[name] = session
            self._io[name] = {"inputs": graph["inputs"], "outputs": graph["outputs"]}
        missing = {"controller", "generator"} - set(self._sessions)
        if missing:
            raise ManifestError(f"{self.model_dir}: the manifest lists no {', '.join(sorted(missing))} graph")
        # what ONNX Runtime actually uses (a CUDA EP without a GPU falls back to CPU)
        self.providers = list(self._sessions["generator"].get_providers())
        self._cupy = _device_arrays(self.providers)   # the cupy module when IO binding on CUDA applies, else None

    def __repr__(self) -> str:
        return f"Engine({str(self.model_dir)!r}, providers={self.providers})"

    @property
    def generator_config(self) -> dict[str, Any]:
        return self.manifest["generator_config"]

    @property
    def controller_config(self) -> dict[str, Any]:
        return self.manifest["controller_config"]

    @property
    def num_ws(self) -> int:
        return int(self.controller_config["num_ws"])

    @property
    def w_dim(self) -> int:
        return int(self.controller_config["w_dim"])

    @property
    def io_binding(self) -> bool:
        """True when renders keep tensors on the GPU (CUDA/TensorRT EP in use and cupy sees a device)."""
        return self._cupy is not None

    def motion(self, x: ArrayLike) -> NDArray[np.float32]:
        """x [B,70,27] (coefficients x frames) -> motion [B,num_ws,w_dim]."""
        (x,) = self._inputs("controller", [x])
        return self._sessions["controller"].run(None, {"x": x})[0]

    def render(self, ws: ArrayLike, c: ArrayLike) -> RenderOutput:
        """ws [B,num_ws,w_dim], c [B,25] -> RenderOutput with uint8 frames [B,H,W,3]."""
        ws, c = self._inputs("generator", [ws, c])
        image, image_raw, depth = self._sessions["generator"].run(None, {"ws": ws, "c": c})
        return RenderOutput(frames=to_uint8_frames(image), image=image, image_raw=image_raw, depth=depth)

    def render_avatar(self, avatar: AvatarLatent, coeff_windows: ArrayLike, cameras: ArrayLike, *,
                      batch_size: int = 8, float_outputs: bool = False) -> RenderOutput:
        """Drive an avatar: coeff_windows [T,70,27] (otavatar.coeffs.windows of the driving coefficients),
        cameras [T,25] (before the avatar's intrinsics correction) -> RenderOutput with frames uint8 [T,H,W,3],
        rendered `batch_size` frames per ONNX Runtime run: ws = avatar.ws + controller(x), c = cameras with the
        avatar's intrinsics correction -- the frames of `otavatar.Avatar.render` through torch.
        float_outputs: also return image / image_raw / depth (on CUDA these are then copied to the host too)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        request = self._request(FrameRequest(avatar, coeff_windows, cameras), 0)
        t = len(request.windows)
        parts = [self._render_requests([FrameRequest(request.avatar, request.windows[lo:lo + batch_size],
                                                     request.cameras[lo:lo + batch_size])], float_outputs)[0]
                 for lo in range(0, t, batch_size)]
        return _concat(parts)

    def render_many(self, requests: Sequence[FrameRequest], *, float_outputs: bool = False) -> list[RenderOutput]:
        """Several requests (possibly of different avatars) in one controller run and one generator run: their
        windows, ws and cameras are stacked along the batch axis and the outputs split back, so each result
        equals `render_avatar` of that request alone (ONNX Runtime computes every batch item the same way; the
        tests check bit equality on CPU). The caller bounds the total frame count (memory grows with it)."""
        if isinstance(requests, FrameRequest) or not isinstance(requests, Sequence) or not requests:
            raise ValueError("render_many takes a non-empty sequence of FrameRequest")
        checked = [self._request(r, i) for i, r in enumerate(requests)]
        return self._render_requests(checked, float_outputs)

    def check_avatar(self, avatar: AvatarLatent) -> None:
        """Raise AvatarFileError unless the avatar was made with this engine's model: ws shape [num_ws,w_dim],
        the same generator config, and (when both record one) the same model fingerprint."""
        if not isinstance(avatar, AvatarLatent):
            raise TypeError(f"avatar must be an otavatar.runtime.AvatarLatent (AvatarLatent.load(path)), got "
                            f"{type(avatar).__name__}")
        where = f" ({avatar.metadata['file']})" if avatar.metadata.get("file") else ""
        if avatar.ws.shape != (self.num_ws, self.w_dim):
            raise AvatarFileError(f"avatar{where} ws is {list(avatar.ws.shape)} but this engine's model takes "
                                  f"[{self.num_ws},{self.w_dim}]")
        if avatar.generator_config is not None and avatar.generator_config != self.generator_config:
            differ = sorted(k for k in set(avatar.generator_config) | set(self.generator_config)
                            if avatar.generator_config.get(k) != self.generator_config.get(k))
            raise AvatarFileError(f"avatar{where} was made with another generator config (differs in "
                                  f"{', '.join(differ)}) than this engine's {self.model_dir}")
        mine = self.manifest.get("model_fingerprint")
        if avatar.model_fingerprint and mine and avatar.model_fingerprint != mine:
            raise AvatarFileError(f"avatar{where} was made with model {avatar.model_fingerprint[:16]}... but "
                                  f"{self.model_dir} was exported from model {mine[:16]}...; render it with the "
                                  "model that inverted it")

    # -- batched rendering --------------------------------------------------------------------------------
    def _request(self, request: FrameRequest, index: int) -> FrameRequest:
        if not isinstance(request, FrameRequest):
            raise TypeError(f"request {index} must be a FrameRequest, got {type(request).__name__}")
        self.check_avatar(request.avatar)
        (x,) = self._inputs("controller", [request.windows])
        cams = np.asarray(request.cameras, dtype=np.float32)
        if cams.shape != (len(x), 25):
            raise ValueError(f"request {index}: cameras must be [T,25] with T = {len(x)} (the windows' frames), "
                             f"got {list(cams.shape)}")
        if not np.isfinite(cams).all():
            raise ValueError(f"request {index}: cameras hold NaN or infinite values")
        return FrameRequest(request.avatar, x, np.ascontiguousarray(cams))

    def _render_requests(self, requests: list[FrameRequest], float_outputs: bool) -> list[RenderOutput]:
        sizes = [len(r.windows) for r in requests]
        x = np.concatenate([r.windows for r in requests])                                   # [N,70,27]
        cams = np.concatenate([r.cameras for r in requests])                                # [N,25]
        base = np.concatenate([np.broadcast_to(r.avatar.ws, (n, *r.avatar.ws.shape)) for r, n in zip(requests, sizes)])
        corr = np.concatenate([np.broadcast_to(r.avatar.intrinsics, (n, 18)) for r, n in zip(requests, sizes)])
        if self._cupy is not None:
            out = self._render_on_device(x, base, cams, corr, float_outputs)
        else:
            motion = self._sessions["controller"].run(None, {"x": x})[0]
            ws = (base + motion).astype(np.float32)                                         # [N,num_ws,w_dim]
            c = apply_intrinsics(cams, corr)                                                # [N,25]
            image, image_raw, depth = self._sessions["generator"].run(None, {"ws": ws, "c": c})
            out = RenderOutput(to_uint8_frames(image), *((image, image_raw, depth) if float_outputs else ()))
        return _split(out, sizes)

    def _render_on_device(self, x: NDArray, base: NDArray, cams: NDArray, corr: NDArray,
                          float_outputs: bool) -> RenderOutput:
        """The same steps as the numpy path with cupy buffers bound to ONNX Runtime (IO binding): only the
        uint8 frames (and, with float_outputs, the float outputs) are copied to the host."""
        cp = self._cupy
        n = len(x)
        motion = self._run_bound("controller", {"x": cp.asarray(x)}, n)["motion"]
        ws = cp.asarray(base) + motion
        c = apply_intrinsics(cp.asarray(cams), cp.asarray(corr), xp=cp)
        outs = self._run_bound("generator", {"ws": ws, "c": c}, n)
        frames = cp.asnumpy(to_uint8_frames(outs["image"], xp=cp))
        if not float_outputs:
            return RenderOutput(frames)
        return RenderOutput(frames, *(cp.asnumpy(outs[k]) for k in ("image", "image_raw", "depth")))

    def _run_bound(self, graph: str, inputs: dict[str, Any], batch: int) -> dict[str, Any]:
        """Run `graph` on cupy arrays through IO binding; outputs are cupy arrays allocated here."""
        cp = self._cupy
        session = self._sessions[graph]
        device = cp.cuda.Device().id
        binding = session.io_binding()
        kept = []   # the contiguous inputs must live until the run ends
        for name, value in inputs.items():
            a = cp.ascontiguousarray(value, dtype=cp.float32)
            kept.append(a)
            binding.bind_input(name, "cuda", device, np.float32, list(a.shape), a.data.ptr)
        outs = {}
        for spec in self._io[graph]["outputs"]:
            shape = [batch if d == "batch" else int(d) for d in spec["shape"]]
            outs[spec["name"]] = buf = cp.empty(shape, dtype=cp.float32)
            binding.bind_output(spec["name"], "cuda", device, np.float32, shape, buf.data.ptr)
        # cupy's kernels run on its current stream, ONNX Runtime's on its own: finish ours before it reads
        cp.cuda.get_current_stream().synchronize()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs

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


def _concat(parts: list[RenderOutput]) -> RenderOutput:
    if len(parts) == 1:
        return parts[0]
    fields = ("frames", "image", "image_raw", "depth")
    return RenderOutput(*(None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts])
                          for f in fields))


def _split(out: RenderOutput, sizes: list[int]) -> list[RenderOutput]:
    bounds = np.cumsum([0, *sizes])
    fields = ("frames", "image", "image_raw", "depth")
    return [RenderOutput(*(None if getattr(out, f) is None else getattr(out, f)[lo:hi] for f in fields))
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def _device_arrays(providers: Sequence[str]) -> Any:
    """cupy when a GPU execution provider is in use and cupy sees a CUDA device, else None. cupy is only
    imported (and the GPU only touched) after the provider check; any import/driver failure means None."""
    if not any(p in providers for p in (_EP["cuda"], _EP["tensorrt"])):
        return None
    try:
        import cupy

        return cupy if cupy.cuda.is_available() else None
    except Exception:  # not installed, or a CUDA runtime/driver mismatch: render through host memory
        return None


def _session_options(ort: Any, threads: int | None, *, spin: bool) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


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
