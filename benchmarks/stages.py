"""Time per stage of the torch pipeline: controller, mapping, backbone, rendering, super-resolution, total.

The protocol of ../shared/parity/README.md section 7 (the published code's CPU timings): float32, eval mode,
no autograd, deterministic rendering, batch 1, `torch.set_num_threads(2)`, one warm-up then the median of 3.

    .venv/bin/python benchmarks/stages.py                       # official preset, CPU, 2 threads
    .venv/bin/python benchmarks/stages.py --preset tiny --repeats 5
    .venv/bin/python benchmarks/stages.py --device cuda --batch 8
    .venv/bin/python benchmarks/stages.py --processes 4          # the published protocol on a noisy VM

`--processes N` repeats the whole protocol in N fresh processes and reports the median of their medians and
the range, as parity/README.md section 7 did for the published code.

Prints a table and writes JSON (default benchmarks/results/stages-<preset>-<device>.json).
Weights do not change the work done (fixed sample counts), so a seeded initialisation is used.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from otavatar.camera import look_at_camera
from otavatar.models import MotionController, TriplaneGenerator

# The published code on the 2-vCPU AMD EPYC reference machine (parity/README.md section 7), seconds.
PUBLISHED_CPU_SECONDS = {"controller": 0.0027, "mapping": 0.0007, "backbone": 0.78, "render": 0.57,
                         "superres": 3.02, "total": 4.59}


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """One warm-up call, then `repeats` timed calls (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("official", "tiny"), default="official")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the reference machine has 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modconv", choices=("auto", "fused", "shared"), default="auto",
                        help="modulated-conv form: auto = fused in eval mode, as the published networks")
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto", help="kernel backend")
    parser.add_argument("--processes", type=int, default=1, help="repeat the protocol in N fresh processes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.processes > 1:
        return repeat_in_processes(args)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = getattr(TriplaneGenerator, args.preset)().eval().to(device)
    C = getattr(MotionController, args.preset)().eval().to(device)
    b = args.batch
    z = torch.randn(b, G.config.z_dim, device=device)
    c = torch.from_numpy(look_at_camera(yaw=0.2, pitch=-0.1)).to(device).expand(b, -1).contiguous()  # [B, 25]
    x = torch.randn(b, C.config.coeff_dim, C.config.window, device=device)                           # [B, 70, 27]
    fused = {"auto": None, "fused": True, "shared": False}[args.modconv]

    with torch.no_grad():
        ws = G.mapping(z, c) + C(x)
        planes = G.planes(ws, fused_modconv=fused)
        rendered = G.render_planes(planes, c, backend=args.backend)
        stages = {
            "controller": lambda: C(x),
            "mapping": lambda: G.mapping(z, c),
            "backbone": lambda: G.planes(ws, fused_modconv=fused),
            "render": lambda: G.render_planes(planes, c, backend=args.backend),
            "superres": lambda: G.super_resolve(rendered.image_raw, rendered.features, ws, fused_modconv=fused),
            "total": lambda: G.synthesis(G.mapping(z, c) + C(x), c, fused_modconv=fused, backend=args.backend),
        }
        results = {}
        for name, fn in stages.items():
            times = timed(fn, args.repeats, device)
            results[name] = {"median_s": statistics.median(times), "runs_s": times}

    print(f"{args.preset} preset, batch {b}, {device}, {args.threads} threads, median of {args.repeats}")
    print_table(args, results)
    record = {
        "preset": args.preset, "batch": b, "device": str(device), "threads": args.threads, "repeats": args.repeats,
        "modconv": args.modconv, "backend": args.backend, "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "stages": results,
        "published_cpu_seconds": PUBLISHED_CPU_SECONDS if args.preset == "official" else None,
    }
    write(args, record)


def print_table(args: argparse.Namespace, results: dict[str, dict]) -> None:
    print(f"{'stage':<12}{'ours':>12}{'published (CPU)':>18}")
    for name, r in results.items():
        published = f"{PUBLISHED_CPU_SECONDS[name]:.4f} s" if args.preset == "official" and args.batch == 1 else "-"
        spread = f"  ({min(r['runs_s']):.4f}-{max(r['runs_s']):.4f})" if "processes" in r else ""
        print(f"{name:<12}{r['median_s']:>10.4f} s{published:>18}{spread}")


def write(args: argparse.Namespace, record: dict) -> None:
    device = torch.device(args.device).type
    out = args.out or Path(__file__).parent / "results" / f"stages-{args.preset}-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def repeat_in_processes(args: argparse.Namespace) -> None:
    """Run this script `args.processes` times in fresh processes; median of their medians, with the range."""
    forwarded = [f"--{name}={getattr(args, name)}"
                 for name in ("preset", "device", "batch", "threads", "repeats", "modconv", "backend")]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = Path(tmp) / f"run{i}.json"
            subprocess.run([sys.executable, __file__, *forwarded, "--out", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            records.append(json.loads(out.read_text()))
    stages = {}
    for name in records[0]["stages"]:
        medians = [r["stages"][name]["median_s"] for r in records]
        stages[name] = {"median_s": statistics.median(medians), "runs_s": medians, "processes": args.processes}
    print(f"{args.preset} preset, batch {args.batch}, {args.device}, {args.threads} threads: median over "
          f"{args.processes} processes of the median of {args.repeats} (range in brackets)")
    print_table(args, stages)
    write(args, {**records[0], "processes": args.processes, "stages": stages})


if __name__ == "__main__":
    main()
