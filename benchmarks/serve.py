"""Serving throughput and latency: S concurrent RenderStreams (S = 1, 2, 4) against an in-process server on
loopback, each sending coefficient frames as fast as the server accepts them (Delivery ALL, causal window,
RAW_RGB8), first as fast as the server accepts frames (sustained throughput), then paced at 80% of that rate
(real-time latency). Reports per-stream and total fps, end-to-end latency (client send -> frame received),
the server's time per frame (window ready -> response sent) and per ONNX Runtime run, p50/p95, for max_batch
1 and 4 (does cross-stream batching help here?).

    python benchmarks/serve.py                                  # the seeded tiny model, exported to a temp dir
    python benchmarks/serve.py --models out/onnx --avatar me.avatar --threads 1 --frames 60

Writes benchmarks/results/serve-<device>.json. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _tiny(folder: Path) -> tuple[Path, Path]:
    """Export the seeded tiny model and make a w_avg avatar of it (torch)."""
    from otavatar.export import export_models, models_for_export
    from otavatar.model import Model

    generator, controller, source = models_for_export(preset="tiny", seed=0)
    export_models(folder / "onnx", generator, controller, verify=False, source=source)
    return folder / "onnx", _w_avg_avatar(Model.from_modules(generator, controller), folder)


def _w_avg_avatar(model, folder: Path) -> Path:
    """An avatar at the generator's average latent (rendering cost does not depend on the identity)."""
    import torch

    from otavatar.avatar import Avatar
    from otavatar.camera import look_at_camera

    ws = model.generator.w_avg.detach()[None].repeat(model.num_ws, 1)
    avatar = Avatar(model, ws, torch.zeros(18), look_at_camera(0.0, 0.0), np.zeros(70, np.float32))
    return avatar.save(folder / "tiny.avatar")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


def run_streams(client, avatar_id: str, streams: int, frames: int, rate: float | None) -> dict:
    """S streams of `frames` frames each. rate None: send as fast as the server accepts (throughput; latency
    then measures the backlog); else send at `rate` frames/s per stream (real-time latency at that load)."""
    sent: list[dict[int, float]] = [{} for _ in range(streams)]
    latency: list[list[float]] = [[] for _ in range(streams)]
    server_ms: list[float] = []
    render_ms: list[float] = []
    batch: list[int] = []
    elapsed = [0.0] * streams
    rng = np.random.default_rng(0)
    rows = (0.3 * rng.standard_normal((frames, 70))).astype(np.float32)
    rows[:, 64:] = 0

    def one(k: int) -> None:
        def source():
            start = time.perf_counter()
            for i in range(frames):
                if rate:
                    time.sleep(max(0.0, start + i / rate - time.perf_counter()))
                sent[k][i] = time.perf_counter()
                yield rows[i]

        start = time.perf_counter()
        for f in client.stream_frames(avatar_id, source(), window="causal"):
            latency[k].append(1000.0 * (time.perf_counter() - sent[k][f.index]))
            server_ms.append(f.timings["total_ms"])
            render_ms.append(f.timings["render_ms"])
            batch.append(f.timings["batch_size"])
        elapsed[k] = time.perf_counter() - start

    threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    per_stream = [len(latency[k]) / elapsed[k] for k in range(streams)]
    return {"streams": streams, "frames_per_stream": frames,
            "send_rate_per_stream": round(rate, 2) if rate else "as fast as accepted", "wall_s": round(wall, 2),
            "fps_per_stream": round(float(np.mean(per_stream)), 2),
            "fps_total": round(sum(len(x) for x in latency) / wall, 2),
            "end_to_end_ms": _percentiles([x for lat in latency for x in lat]),
            "server_ms": _percentiles(server_ms), "render_ms_per_run": _percentiles(render_ms),
            "mean_batch": round(float(np.mean(batch)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="an export folder (default: the seeded tiny model)")
    parser.add_argument("--avatar", type=Path, help="an avatar file of that model")
    parser.add_argument("--weights", type=Path, help="or the .safetensors the export came from (a w_avg avatar)")
    parser.add_argument("--providers", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--frames", type=int, default=30, help="frames per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="max_batch values to compare")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    import onnxruntime

    import otavatar
    from otavatar.client import AvatarClient
    from otavatar.server import Server, ServerConfig

    tmp = Path(tempfile.mkdtemp(prefix="otavatar-serve-bench-"))
    if args.models is None:
        models, avatar = _tiny(tmp)
    elif args.avatar is None:
        from otavatar.model import Model

        models, avatar = args.models, _w_avg_avatar(Model.resolve(str(args.weights)), tmp)
    else:
        models, avatar = args.models, args.avatar
    results = []
    for max_batch in args.batches:
        config = ServerConfig(models=models, data=tmp / f"data{max_batch}", port=0, providers=args.providers,
                              threads=args.threads, max_batch=max_batch, max_streams=max(args.streams))
        server = Server(config, log=lambda m: None).start()
        try:
            with AvatarClient(f"127.0.0.1:{server.port}") as client:
                avatar_id = client.import_avatar(avatar)
                list(client.stream(avatar_id, np.zeros((4, 70), np.float32), window="causal"))   # warm-up
                for s in args.streams:
                    saturated = run_streams(client, avatar_id, s, args.frames, None)
                    paced = run_streams(client, avatar_id, s, args.frames, 0.8 * saturated["fps_total"] / s)
                    for mode, row in (("saturated", saturated), ("paced at 80% of the saturated rate", paced)):
                        row = {"max_batch": max_batch, "mode": mode, **row}
                        print(json.dumps(row), flush=True)
                        results.append(row)
                providers = list(server.engine.providers)
                resolution = int(server.engine.generator_config["img_resolution"])
        finally:
            server.stop(grace=1.0)
    device = "cpu" if providers == ["CPUExecutionProvider"] else "gpu"
    report = {
        "benchmark": "otavatar serve: concurrent RenderStreams on loopback", "otavatar": otavatar.__version__,
        "onnxruntime": onnxruntime.__version__, "providers": providers, "ort_threads": args.threads,
        "model": str(models) if args.models else "tiny preset, seeded random init (seed 0)",
        "resolution": resolution, "cpu": _cpu_name(),
        "encoding": "RAW_RGB8", "window": "causal", "delivery": "ALL (lossless, paced by the server)",
        "latency_note": "saturated rows: end_to_end includes the client's backlog (all frames offered at once); "
                        "paced rows give the real-time latency at 80% of the sustained rate",
        "note": args.note, "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"serve-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
