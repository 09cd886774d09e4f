"""Export the motion controller and the generator to ONNX, with a self-describing manifest (DESIGN.md 2, 6, 9).

Exporter: the torch.export-based ("dynamo") `torch.onnx.export(..., dynamo=True)`, opset 18 by default.
Why: the legacy TorchScript exporter (`dynamo=False`) fails on the generator with a dynamic batch -- the FIR
filter's depthwise kernel is built with `repeat(channels)` on a traced shape, which TorchScript-ONNX turns
into "convolution for kernel of unknown shape" -- while the dynamo exporter exports both graphs with a
symbolic batch dimension and ONNX Runtime matches torch to ~6e-6 (tiny preset, fp32). Opset 18 is the
lowest opset the dynamo exporter targets natively (lower ones go through the ONNX version converter).

One table (`GRAPHS`) drives everything: wrapper, input/output names and shapes, example inputs, verification.

After simplification, `otavatar.export.passes` rewrites the graphs into ops ONNX Runtime runs faster (exact up to
float32 rounding; `optimize=False` / `--no-optimize` skips them); the manifest's "passes" says what changed.

fp16 (`precision="fp16"`): the simplified fp32 graphs are converted with onnxconverter-common's
`convert_float_to_float16(keep_io_types=True)` -- weights and compute in float16, inputs and outputs float32 --
with the ops in `FP16_OP_BLOCK` kept in float32 (see there). Verification always compares against the fp32
torch model.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import otavatar
from otavatar import coeffs
from otavatar.camera import look_at_camera
from otavatar.export.passes import STABLE_SOFTPLUS_TAG
from otavatar.export.passes import optimize as optimize_graph
from otavatar.models import MotionController, TriplaneGenerator
from otavatar.runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST, META_PREFIX, sha256_file

DEFAULT_OPSET = 18
MIN_OPSET = 18
PRECISIONS = ("fp32", "fp16")
# Verification bound per precision: an output fails when max|ort - torch| > atol + rtol * max|torch|.
# fp32: measured max abs 6e-6 (image), 5e-7 (image_raw), 2e-6 (depth) and 2e-10 (motion) on the tiny preset;
# only the order of float32 reductions differs, so 1e-3 leaves room for the official network's depth.
# fp16: float16 keeps 11 significant bits (rounding 4.9e-4 relative) through ~20 modulated convs and 96 samples
# per ray; measured max abs 6.8e-3 (image), 6.2e-4 (image_raw), 2.4e-3 (depth), 7e-8 (motion) on the tiny preset
# and 3.3e-3 (image), 1.2e-3 (image_raw), 1.7e-3 (depth) on the official one (random init, incl. the parity
# fixtures' inputs), so 5e-2 + 2e-2 * max|torch| leaves ~7x headroom over the largest measured error.
TOLERANCE = {"fp32": {"atol": 1e-3, "rtol": 1e-3}, "fp16": {"atol": 5e-2, "rtol": 2e-2}}
VERIFY_BATCHES = (1, 2)
# Ops kept in float32 in fp16 graphs. IsInf/IsNaN: float16 inputs need opset 20 (we write 18). CumSum, Exp,
# Log: the volume-rendering transmittance exp(cumsum(log(1 - alpha))) and the importance-sampling CDF, where
# float16's 1e-3 steps near 1 would shift the sampled depths; Softplus: the density activation (its tail below
# float16's 6e-5 subnormal range) -- and likewise every node of its stable form (passes.stable_softplus). On the tiny preset the block list changes the error by < 1e-5 (image 6.81e-3
# both ways) and costs nothing measurable on CPU; it is kept for the official depth range (12 + 48 samples).
FP16_OP_BLOCK = ("CumSum", "Exp", "Log", "Softplus", "IsInf", "IsNaN")
# the published networks' parity fixtures (tests/fixtures/parity, or $OTAVATAR_PARITY_DIR): their inputs are
# verified too when the exported generator has the official architecture
PARITY_CASES = {"controller": ("controller_case0.npz", ("x",)), "generator": ("eg3d_case0.npz", ("ws", "c"))}


class ExportError(RuntimeError):
    """Export refused (bad arguments) or failed (exporter error, verification above tolerance)."""


# -- wrappers -----------------------------------------------------------------------------------------------

class ControllerGraph(nn.Module):
    """x [B,70,27] -> motion [B,num_ws,w_dim], the QR basis precomputed as a constant."""

    def __init__(self, controller: MotionController):
        super().__init__()
        self.controller = controller
        self.register_buffer("q", controller.basis().detach().clone())  # [w_dim, K]: depends on weights only

    def forward(self, x: Tensor) -> Tensor:
        return self.controller(x, basis=self.q)


class GeneratorGraph(nn.Module):
    """ws [B,num_ws,w_dim], c [B,25] -> (image, image_raw, depth): deterministic rendering, torch references,
    the shared-conv modulated convolution (grouped convs do not export with a dynamic batch, DESIGN.md 6)."""

    def __init__(self, generator: TriplaneGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, ws: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.generator.synthesis(ws, c, stochastic=False, noise_mode="const", fused_modconv=False,
                                       backend="torch")
        return out.image, out.image_raw, out.depth


@dataclass(frozen=True)
class GraphSpec:
    file: str
    model: str                                   # "controller" | "generator"
    wrap: Callable[[nn.Module], nn.Module]
    inputs: Callable[[nn.Module], dict[str, list]]   # name -> shape ("batch" for the dynamic axis)
    outputs: Callable[[nn.Module], dict[str, list]]
    example: Callable[[nn.Module, int, np.random.Generator], tuple[np.ndarray, ...]]


def _controller_example(model: MotionController, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    cfg = model.config
    return (rng.normal(0.0, 0.5, (batch, cfg.coeff_dim, cfg.window)).astype(np.float32),)


def _generator_example(model: TriplaneGenerator, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    cfg = model.config
    w_avg = model.w_avg.detach().cpu().numpy()
    ws = (w_avg + rng.normal(0.0, 1.0, (batch, model.num_ws, cfg.w_dim))).astype(np.float32)
    yaw, pitch = rng.uniform(-0.4, 0.4, batch), rng.uniform(-0.2, 0.2, batch)
    return ws, np.asarray(look_at_camera(yaw, pitch), dtype=np.float32).reshape(batch, cfg.c_dim)


GRAPHS: dict[str, GraphSpec] = {
    "controller": GraphSpec(
        file="controller.onnx", model="controller", wrap=ControllerGraph,
        inputs=lambda m: {"x": ["batch", m.config.coeff_dim, m.config.window]},
        outputs=lambda m: {"motion": ["batch", m.config.num_ws, m.config.w_dim]},
        example=_controller_example),
    "generator": GraphSpec(
        file="generator.onnx", model="generator", wrap=GeneratorGraph,
        inputs=lambda m: {"ws": ["batch", m.num_ws, m.config.w_dim], "c": ["batch", m.config.c_dim]},
        outputs=lambda m: {"image": ["batch", 3, m.config.img_resolution, m.config.img_resolution],
                           "image_raw": ["batch", 3, m.config.render.resolution, m.config.render.resolution],
                           "depth": ["batch", 1, m.config.render.resolution, m.config.render.resolution]},
        example=_generator_example),
}


@dataclass
class ExportReport:
    out_dir: Path
    files: dict[str, str]                         # file name -> sha256
    opset: int
    precision: str
    exporter: str
    simplifier: str
    verify: dict[str, Any] = field(default_factory=dict)   # graph -> batch -> output -> {max_abs, max_rel}
    passes: dict[str, dict[str, int]] = field(default_factory=dict)   # graph -> pass -> sites rewritten
    seconds: float = 0.0

    def max_abs_error(self) -> float:
        return max((e["max_abs"] for g in self.verify.values() for b in g.values() for e in b.values()), default=0.0)

    def summary(self) -> str:
        lines = [f"wrote {self.out_dir} ({', '.join(sorted(self.files))}) in {self.seconds:.1f} s",
                 f"exporter {self.exporter}, opset {self.opset}, {self.precision}, simplifier {self.simplifier}"]
        for graph, counts in self.passes.items():
            if any(counts.values()):
                lines.append(f"passes {graph}: " + ", ".join(f"{k} x{v}" for k, v in counts.items() if v))
        for graph, batches in self.verify.items():
            for batch, outs in batches.items():
                errs = ", ".join(f"{k} abs {v['max_abs']:.2e} rel {v['max_rel']:.2e}" for k, v in outs.items())
                lines.append(f"verify {graph} {'batch ' if batch.isdigit() else ''}{batch}: {errs}")
        if not self.verify:
            lines.append("not verified (--no-verify)")
        return "\n".join(lines)


# -- public entry -------------------------------------------------------------------------------------------

def export_models(out_dir: str | os.PathLike[str], generator: TriplaneGenerator, controller: MotionController,
                  opset: int = DEFAULT_OPSET, precision: str = "fp32", verify: bool = True, *,
                  simplify: bool = True, optimize: bool = True, source: dict[str, Any] | None = None, seed: int = 0,
                  log: Callable[[str], None] | None = None,
                  parity_dir: str | os.PathLike[str] | None = None) -> ExportReport:
    """Write controller.onnx, generator.onnx and manifest.json to `out_dir` (built in a temporary folder beside
    it, then renamed into place). `source` describes the weights (e.g. {"weights": name, "sha256": ...}).
    With `verify`, ONNX Runtime is compared with torch on random inputs (batch 1 and 2) -- and, for the official
    architecture, on the parity fixtures' inputs (`parity_dir`, default tests/fixtures/parity of a source
    checkout or $OTAVATAR_PARITY_DIR) -- and the export fails, leaving nothing behind, when an output differs by
    more than `TOLERANCE[precision]`. precision "fp16": float16 weights and compute, float32 inputs/outputs.
    `optimize`: apply `otavatar.export.passes` after simplification."""
    log = log or (lambda message: None)
    _validate(generator, controller, opset, precision)
    import onnx

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / MANIFEST).is_file())):
        raise ExportError(f"{out_dir} exists and is not an otavatar model folder (no {MANIFEST}); refusing to "
                          "replace it -- choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    models = {"controller": controller.eval(), "generator": generator.eval()}
    exporter = f"torch.onnx.export(dynamo=True), torch {torch.__version__.split('+')[0]}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700
    try:
        common = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "otavatar_version": otavatar.__version__,
            "opset": opset, "precision": precision, "exporter": exporter,
            "generator_config": generator.config.to_dict(), "controller_config": controller.config.to_dict(),
            "coefficient_layout": _coefficient_layout(), "source": source or {},
            # the otavatar.Model fingerprint: avatars made with these weights carry it (Engine.render_avatar)
            "model_fingerprint": _fingerprint(generator, controller),
        }
        graphs: dict[str, Any] = {}
        simplifiers = set()
        passes: dict[str, dict[str, int]] = {}
        for name, spec in GRAPHS.items():
            model = models[spec.model]
            log(f"exporting {name} ...")
            path = tmp / spec.file
            _export_graph(spec, model, path, opset)
            proto = onnx.load(str(path))
            proto, simplifier = _simplify(proto, simplify)
            simplifiers.add(simplifier)
            passes[name] = optimize_graph(proto) if optimize else {}
            if precision == "fp16":
                proto = _to_fp16(proto)
            io = {"inputs": _io(spec.inputs(model)), "outputs": _io(spec.outputs(model))}
            meta = {**common, "graph": name, **io}
            del proto.metadata_props[:]
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = META_PREFIX + key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            onnx.save(proto, str(path))
            for stray in tmp.glob(spec.file + ".data"):  # the dynamo exporter's external data, now inlined
                stray.unlink()
            graphs[name] = {"file": spec.file, **io}

        report_verify: dict[str, Any] = {}
        if verify:
            report_verify = _verify(tmp, models, precision, seed, log, parity_dir=parity_dir)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {**common, "simplifier": "+".join(sorted(simplifiers)), "passes": passes, "graphs": graphs,
                    "files": files,
                    "verify": {"tolerance": TOLERANCE[precision], "results": report_verify} if verify else None}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(out_dir=out_dir, files=files, opset=opset, precision=precision, exporter=exporter,
                        simplifier=manifest["simplifier"], verify=report_verify, passes=passes,
                        seconds=time.perf_counter() - started)


# -- steps --------------------------------------------------------------------------------------------------

def _validate(generator: Any, controller: Any, opset: Any, precision: Any) -> None:
    if not isinstance(generator, TriplaneGenerator):
        raise ExportError(f"generator must be a TriplaneGenerator, got {type(generator).__name__}")
    if not isinstance(controller, MotionController):
        raise ExportError(f"controller must be a MotionController, got {type(controller).__name__}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset must be an integer in [{MIN_OPSET}, {newest}] (the dynamo exporter targets "
                          f"opset >= {MIN_OPSET}; onnx here knows up to {newest}), got {opset!r}")
    g, c = generator.config, controller.config
    if (c.num_ws, c.w_dim) != (generator.num_ws, g.w_dim):
        raise ExportError(f"controller output [num_ws={c.num_ws}, w_dim={c.w_dim}] does not match the generator's "
                          f"ws [num_ws={generator.num_ws}, w_dim={g.w_dim}]")


def _export_graph(spec: GraphSpec, model: nn.Module, path: Path, opset: int) -> None:
    wrapper = spec.wrap(model).eval()
    names_in, names_out = list(spec.inputs(model)), list(spec.outputs(model))
    example = tuple(torch.from_numpy(a) for a in spec.example(model, 2, np.random.default_rng(0)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter logs "torchvision is not installed" per torchvision op and warns about pytree internals;
    # neither concerns these graphs, so keep the CLI output to what matters
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used.*")
            torch.onnx.export(wrapper, example, str(path), input_names=names_in, output_names=names_out,
                              dynamic_shapes=tuple({0: batch} for _ in names_in), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
    except Exception as e:
        raise ExportError(f"exporting {spec.file} failed: {type(e).__name__}: {str(e)[:2000]}") from e
    finally:
        registration.setLevel(level)


def _simplify(proto: Any, simplify: bool) -> tuple[Any, str]:
    """onnxsim, else onnxslim, else none; the one used is recorded in the manifest."""
    if not simplify:
        return proto, "none"
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified, f"onnxsim {getattr(onnxsim, '__version__', '?')}"
    except Exception:  # not installed or failed on this graph: try onnxslim
        pass
    try:
        import onnxslim

        return onnxslim.slim(proto), f"onnxslim {getattr(onnxslim, '__version__', '?')}"
    except Exception:
        return proto, "none"


def _to_fp16(proto: Any) -> Any:
    """float16 weights and compute, float32 graph inputs/outputs, FP16_OP_BLOCK kept in float32."""
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ExportError("--precision fp16 needs onnxconverter-common (pip install onnxconverter-common)") from e
    _isolate_outputs(proto)
    with warnings.catch_warnings():
        # "the float32 number 1e-10 will be truncated to 1e-07": epsilons and +-FLT_MAX fill values clamped to
        # float16's range, which is the conversion's purpose; the verify step measures the effect
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=[*FP16_OP_BLOCK, *float16.DEFAULT_OP_BLOCK_LIST],
            node_block_list=[n.name for n in proto.graph.node if STABLE_SOFTPLUS_TAG in n.name])
    # the converter leaves some intermediate value_info at float32; ONNX Runtime re-infers every type
    del converted.graph.value_info[:]
    return converted


def _isolate_outputs(proto: Any) -> None:
    """A graph output that other nodes also read (image_raw feeds the super-resolution) gets an Identity of its
    own: otherwise keep_io_types casts it to float32 in place and the float16 consumers read the float32 cast,
    which ONNX Runtime rejects ("Type parameter (T) of Optype (Conv) bound to different types")."""
    from onnx import helper

    outputs = {o.name for o in proto.graph.output}
    read = {i for node in proto.graph.node for i in node.input}
    for name in sorted(outputs & read):
        inner = f"{name}__inner"
        for node in proto.graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        proto.graph.node.append(helper.make_node("Identity", [inner], [name], name=f"{name}__output"))


def _parity_inputs(name: str, model: nn.Module, parity_dir: str | os.PathLike[str] | None) -> tuple | None:
    """The parity fixture's inputs for `name` when the model has the official architecture and the fixture is
    found, else None."""
    from otavatar.config import ControllerConfig, GeneratorConfig

    official = GeneratorConfig.official() if name == "generator" else ControllerConfig.official()
    if model.config != official:
        return None
    candidates = [Path(parity_dir)] if parity_dir is not None else [
        Path(p) for p in (os.environ.get("OTAVATAR_PARITY_DIR"),
                          Path(otavatar.__file__).resolve().parents[1] / "tests" / "fixtures" / "parity") if p]
    file, keys = PARITY_CASES[name]
    for folder in candidates:
        if (folder / file).is_file():
            with np.load(folder / file) as data:
                return tuple(np.ascontiguousarray(data[k], dtype=np.float32) for k in keys)
    return None


def _verify(folder: Path, models: dict[str, nn.Module], precision: str, seed: int,
            log: Callable[[str], None], *, parity_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """ORT vs torch per graph: results[graph][case] = {output: {max_abs, max_rel}}; case = the batch size of
    random inputs ("1", "2") or "parity_case0" (the fixture's inputs, official architecture only)."""
    import onnxruntime as ort

    tol = TOLERANCE[precision]
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {}
    failures = []
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as the torch side is allowed
    for name, spec in GRAPHS.items():
        model = models[spec.model]
        wrapper = spec.wrap(model).eval()
        session = ort.InferenceSession(str(folder / spec.file), options, providers=["CPUExecutionProvider"])
        results[name] = {}
        cases: list[tuple[str, tuple]] = [(str(b), spec.example(model, b, rng)) for b in VERIFY_BATCHES]
        parity = _parity_inputs(name, model, parity_dir)
        if parity is not None:
            cases.append(("parity_case0", parity))
        for batch, inputs in cases:
            with torch.no_grad():
                ref = wrapper(*(torch.from_numpy(a) for a in inputs))
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = session.run(None, dict(zip(spec.inputs(model), inputs)))
            errs = {}
            for out_name, r, o in zip(spec.outputs(model), ref, got):
                r = r.numpy()
                if o.shape != r.shape:
                    failures.append(f"{name}.{out_name} {batch}: shape {o.shape} != torch {r.shape}")
                    continue
                diff = float(np.abs(o.astype(np.float64) - r).max())
                peak = float(np.abs(r).max())
                errs[out_name] = {"max_abs": diff, "max_rel": diff / max(peak, 1e-12)}
                if not diff <= tol["atol"] + tol["rtol"] * peak:
                    failures.append(f"{name}.{out_name} {batch}: max abs error {diff:.3e} > "
                                    f"{tol['atol']:g} + {tol['rtol']:g} * {peak:.3g}")
            results[name][str(batch)] = errs
            shown = ", ".join(f"{k} {v['max_abs']:.1e}" for k, v in errs.items())
            log(f"verified {name} {'batch ' if batch.isdigit() else ''}{batch}: {shown}")
    if failures:
        raise ExportError("ONNX Runtime differs from torch beyond the tolerance:\n  " + "\n  ".join(failures))
    return results


def _fingerprint(generator: TriplaneGenerator, controller: MotionController) -> str:
    from otavatar.model import fingerprint

    return fingerprint(generator, controller)


def _coefficient_layout() -> dict[str, Any]:
    return {"controller_input": "[B, 70, 27] = coefficients x frames",
            "controller": {"exp": [coeffs.CONTROLLER_EXP.start, coeffs.CONTROLLER_EXP.stop],
                           "angle": [coeffs.CONTROLLER_ANGLE.start, coeffs.CONTROLLER_ANGLE.stop],
                           "trans": [coeffs.CONTROLLER_TRANS.start, coeffs.CONTROLLER_TRANS.stop]},
            "window": coeffs.WINDOW, "deep3d": coeffs.DEEP3D_LAYOUT.as_dict()}


def _io(shapes: dict[str, list]) -> list[dict[str, Any]]:
    return [{"name": k, "shape": v, "dtype": "float32"} for k, v in shapes.items()]


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; a previous export there is replaced only after that succeeds."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def models_for_export(weights: str | os.PathLike[str] | None = None, preset: str | None = None,
                      seed: int = 0) -> tuple[TriplaneGenerator, MotionController, dict[str, Any]]:
    """(generator, controller, source) from an otavatar .safetensors file, or a preset's seeded random init.
    `source` goes into the manifest: the weights file's name and sha256, or the preset and seed."""
    if (weights is None) == (preset is None):
        raise ExportError("give exactly one of weights (an otavatar .safetensors file) or preset (official, tiny)")
    if weights is not None:
        from otavatar.weights import WeightsError, load_models, read_header

        path = Path(weights)
        try:
            loaded = load_models(path)
            header = read_header(path)
        except WeightsError as e:
            raise ExportError(str(e)) from e
        missing = [n for n in ("generator", "controller") if getattr(loaded, n) is None]
        if missing:
            raise ExportError(f"{path}: holds no {' and no '.join(missing)}; the export needs both (combine them with "
                              "`otavatar convert`)")
        source = {"weights": path.name, "sha256": sha256_file(path),
                  "otavatar_version": header.get("otavatar_version")}
        return loaded.generator.eval(), loaded.controller.eval(), source
    if preset not in ("official", "tiny"):
        raise ExportError(f"unknown preset {preset!r}; valid: official, tiny")
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    generator = getattr(TriplaneGenerator, preset)().eval()
    controller = getattr(MotionController, preset)().eval()
    return generator, controller, {"preset": preset, "seed": seed, "sha256": None, "init": "seeded random init"}
