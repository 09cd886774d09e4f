"""Frames per second and ms per stage of the torch-free Engine (ONNX Runtime) against torch eager.

Stages: controller (x [B,70,27] -> motion), generator (ws, c -> image) and total (both, = one driven frame
batch). torch eager = the published inference protocol: float32, eval, no autograd, fused modulated conv,
reference kernels on CPU (Triton on GPU), deterministic rendering. ONNX Runtime = the exported fp32 graphs
(`otavatar export`) through `otavatar.runtime.Engine` (graph optimisation ORT_ENABLE_ALL, sequential execution,
intra-op threads = --threads). On a GPU (not run here) add `--providers cuda` and `--precision fp16`.
Protocol per stage: one warm-up, then the median of --repeats (as benchmarks/stages.py).

    .venv/bin/python benchmarks/engine.py                                   # tiny b1/4/8 + official b1/4
    .venv/bin/python benchmarks/engine.py --presets official --batches 1 --profile
    .venv/bin/python benchmarks/engine.py --processes 3                      # median over fresh processes

Writes JSON (default benchmarks/results/engine-cpu.json). Weights: `official` loads the parity recipe (non-zero
biases and noise strengths, as in the published checkpoints: with the zero biases of a fresh init the simplifier
drops those Adds and the graph is lighter than a real one); `tiny` a seeded init. The work per frame does not
otherwise depend on the weights (fixed sample counts). Exports are cached under --cache (default a temp folder).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEFAULT_BATCHES = {"tiny": (1, 4, 8), "official": (1, 4)}   # official batch 8 is ~40 s per torch call here


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """One warm-up call, then `repeats` timed calls (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def benchmark_models(preset: str) -> tuple[Any, Any, dict[str, Any]]:
    """(generator, controller, source): `official` with the parity recipe's weights when its folder is found
    (benchmarks/parity.py), else -- and for `tiny` -- the preset's seeded random init."""
    from otavatar.export import models_for_export

    if preset == "official":
        from parity import PARITY_DIRS, load_recipe

        parity_dir = next((d for d in PARITY_DIRS if d.is_dir()), None)
        if parity_dir is not None:
            from otavatar.models import MotionController, TriplaneGenerator

            recipe = load_recipe(parity_dir)
            keys = {n: json.loads((parity_dir / f"{n}_keys.json").read_text()) for n in ("eg3d", "controller")}
            generator = TriplaneGenerator.official().eval()
            generator.load_official_state_dict(recipe(keys["eg3d"], seed=0))
            controller = MotionController.official().eval()
            controller.load_official_state_dict(recipe(keys["controller"], seed=0))
            return generator, controller, {"preset": preset, "init": "parity recipe, seed 0", "sha256": None}
    return models_for_export(preset=preset, seed=0)


def export_folder(preset: str, precision: str, cache: Path, models: tuple[Any, Any, dict[str, Any]]) -> Path:
    """The preset's export (fp32 or fp16) of `models`, made once per cache folder and weights."""
    folder = cache / f"{preset}-{precision}-{models[2]['init'].replace(' ', '').replace(',', '-')}"
    if not (folder / "manifest.json").is_file():
        import torch

        from otavatar.export import export_models

        torch.set_num_threads(1)
        generator, controller, source = models
        export_models(folder, generator, controller, precision=precision, verify=False, source=source)
    return folder


def run_preset(preset: str, batches: tuple[int, ...], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from otavatar.camera import look_at_camera
    from otavatar.runtime import Engine

    models = benchmark_models(preset)
    folder = export_folder(preset, args.precision, args.cache, models)
    torch.set_num_threads(args.threads)
    G, C, source = models
    engine = Engine(folder, providers=args.providers, threads=args.threads)
    results: dict[str, Any] = {}
    for b in batches:
        rng = np.random.default_rng(b)
        x = rng.normal(0, 0.5, (b, 70, C.config.window)).astype(np.float32)
        ws = (G.w_avg.detach().numpy() + rng.normal(0, 1, (b, G.num_ws, G.config.w_dim))).astype(np.float32)
        c = np.repeat(look_at_camera(0.2, -0.1)[None], b, 0).astype(np.float32)
        tx, tws, tc = (torch.from_numpy(a) for a in (x, ws, c))
        backend = "triton" if args.providers in ("cuda", "tensorrt") else "torch"
        with torch.no_grad():
            torch_stages = {
                "controller": lambda: C(tx),
                "generator": lambda: G.synthesis(tws, tc, fused_modconv=True, backend=backend),
                "total": lambda: G.synthesis(tws + C(tx), tc, fused_modconv=True, backend=backend),
            }
            torch_times = {k: timed(fn, args.repeats) for k, fn in torch_stages.items()}
        ort_stages = {
            "controller": lambda: engine.motion(x),
            "generator": lambda: engine.render(ws, c),
            "total": lambda: engine.render(ws + engine.motion(x), c),
        }
        ort_times = {k: timed(fn, args.repeats) for k, fn in ort_stages.items()}
        row = {}
        for label, times in (("torch", torch_times), ("ort", ort_times)):
            med = {k: statistics.median(v) for k, v in times.items()}
            row[label] = {"ms": {k: 1000 * v for k, v in med.items()}, "fps": b / med["total"],
                          "runs_ms": {k: [1000 * t for t in v] for k, v in times.items()}}
        row["ort_speedup"] = row["torch"]["ms"]["total"] / row["ort"]["ms"]["total"]
        results[str(b)] = row
        print(f"{preset:<9} batch {b}: torch {row['torch']['ms']['total']:9.1f} ms ({row['torch']['fps']:.2f} fps)  "
              f"ORT {row['ort']['ms']['total']:9.1f} ms ({row['ort']['fps']:.2f} fps)  ORT/torch speed "
              f"{row['ort_speedup']:.2f}x  [controller {row['torch']['ms']['controller']:.1f} / "
              f"{row['ort']['ms']['controller']:.1f} ms, generator {row['torch']['ms']['generator']:.0f} / "
              f"{row['ort']['ms']['generator']:.0f} ms]", flush=True)
    record: dict[str, Any] = {"batches": results, "providers": engine.providers, "weights": source["init"]}
    if args.profile:
        record["profile"] = profile(folder, args, G.num_ws, G.config.w_dim)
    return record


def profile(folder: Path, args: argparse.Namespace, num_ws: int, w_dim: int) -> dict[str, Any]:
    """ONNX Runtime's profiler on one batch-1 generator run: ms per op type (largest first)."""
    import onnxruntime as ort

    from otavatar.camera import look_at_camera

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(folder / "generator.onnx"), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"ws": rng.normal(0, 1, (1, num_ws, w_dim)).astype(np.float32),
            "c": look_at_camera(0.2, -0.1)[None].astype(np.float32)}
    session.run(None, feed)                      # warm-up
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-1]["ts"]
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last_start:
            per_op[e["args"].get("op_name", "?")] += e["dur"] / 1000.0
    total = runs[-1]["dur"] / 1000.0
    top = dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:15])
    print("ORT profile, generator batch 1 (ms per op type): " + ", ".join(f"{k} {v:.0f}" for k, v in top.items()))
    return {"run_ms": total, "ms_per_op_type": {k: round(v, 2) for k, v in top.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", choices=("tiny", "official"), default=["tiny", "official"])
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default: tiny 1 4 8, official 1 4")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (2 cores here)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--providers", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--profile", action="store_true", help="ORT profiler: ms per op type, batch 1")
    parser.add_argument("--processes", type=int, default=1, help="repeat the protocol in N fresh processes")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "otavatar-engine-bench")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. what else ran on the machine)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.processes > 1:
        return repeat_in_processes(args)
    import onnxruntime as ort
    import torch

    record: dict[str, Any] = {
        "protocol": f"one warm-up then the median of {args.repeats}; torch eager float32 no-grad fused modconv, "
                    "reference kernels; ORT Engine: ORT_ENABLE_ALL, sequential, intra_op_num_threads = threads",
        "threads": args.threads, "precision": args.precision, "providers": args.providers, "note": args.note,
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "presets": {},
    }
    for preset in args.presets:
        batches = tuple(args.batches) if args.batches else DEFAULT_BATCHES[preset]
        record["presets"][preset] = run_preset(preset, batches, args)
    write(args, record)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(args: argparse.Namespace, record: dict) -> None:
    out = args.out or Path(__file__).parent / "results" / f"engine-{args.providers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def repeat_in_processes(args: argparse.Namespace) -> None:
    """Run this script `args.processes` times in fresh processes; per stage the median of their medians."""
    forwarded = ["--presets", *args.presets, "--threads", str(args.threads), "--repeats", str(args.repeats),
                 "--providers", args.providers, "--precision", args.precision, "--cache", str(args.cache),
                 "--note", args.note, *(["--batches", *map(str, args.batches)] if args.batches else [])]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = Path(tmp) / f"run{i}.json"
            subprocess.run([sys.executable, __file__, *forwarded, *(["--profile"] if args.profile and i == 0 else []),
                            "--out", str(out)], check=True)
            records.append(json.loads(out.read_text()))
    merged = records[0]
    for preset, data in merged["presets"].items():
        for b, row in data["batches"].items():
            for label in ("torch", "ort"):
                for stage in row[label]["ms"]:
                    runs = [r["presets"][preset]["batches"][b][label]["ms"][stage] for r in records]
                    row[label]["ms"][stage] = statistics.median(runs)
                    row[label]["runs_ms"][stage] = runs
                row[label]["fps"] = int(b) / (row[label]["ms"]["total"] / 1000)
            row["ort_speedup"] = row["torch"]["ms"]["total"] / row["ort"]["ms"]["total"]
    merged["processes"] = args.processes
    merged["protocol"] += f"; median over {args.processes} fresh processes (runs_ms: each process's median)"
    write(args, merged)


if __name__ == "__main__":
    main()
