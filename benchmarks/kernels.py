"""Kernel benchmarks: torch reference vs Triton at the official shapes (not a test; needs a CUDA GPU).

    python benchmarks/kernels.py [--batches 1 8] [--out benchmarks/results] [--sweep]

Times are medians of triton.testing.do_bench (CUDA-event timed, L2 flushed between calls) in ms per call.
Shapes: B in {1, 8}, 64x64 = 4096 rays, 48 + 48 samples, planes [B,3,32,256,256], decoder 32 -> 64 -> 33
(the model's). Sampling is timed on all 96 samples of a frame at once (N = 4096*96 points per item).

GB/s counts compulsory bytes only (every input read once, every output written once, float32); the taps
re-read planes from L2 many times over, so this is a floor on the traffic and the fraction of peak DRAM
bandwidth says how far from memory-bound an op is, not how busy the memory system was.
Writes benchmarks/results/kernels-<device>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

# Peak DRAM bandwidth by product name (vendor data sheets), GB/s; a measured copy is reported beside it.
PEAK_GBPS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "A100-SXM4-80GB": 2039.0,
             "A100-SXM4-40GB": 1555.0, "A100-PCIE-40GB": 1555.0, "L4": 300.0, "RTX 4090": 1008.0}


def peak_bandwidth(name: str) -> float | None:
    for key, value in PEAK_GBPS.items():
        if key in name:
            return value
    return None


def measured_copy_bandwidth(bench) -> float:
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--sweep", action="store_true", help="also time fused-render launch configurations")
    parser.add_argument("--rep", type=int, default=200, help="do_bench measuring time per case, ms")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU (CPU interpreter timings mean nothing)")

    import triton
    import triton.testing

    from otavatar.kernels import reference
    from otavatar.kernels.reference import DecoderWeights, RaySettings
    from otavatar.kernels import triton as tk

    torch.backends.cuda.matmul.allow_tf32 = False     # the reference's float32 parity setting
    torch.backends.cudnn.allow_tf32 = False

    def bench(fn) -> float:
        return float(triton.testing.do_bench(fn, warmup=25, rep=args.rep, return_mode="median"))

    dev = "cuda"
    name = torch.cuda.get_device_name()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    peak = peak_bandwidth(name)
    copy_gbps = measured_copy_bandwidth(bench)
    results = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
               "python": platform.python_version(), "peak_dram_gbps": peak, "measured_copy_gbps": round(copy_gbps, 1),
               "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "tf32": False, "cases": []}
    print(f"{name}: peak {peak} GB/s (data sheet), device copy {copy_gbps:.0f} GB/s measured")

    def record(op, batch, impl, mode, ms, nbytes=None, **extra):
        row = {"op": op, "batch": batch, "impl": impl, "mode": mode, "ms": round(ms, 4)}
        if nbytes is not None:
            gbps = nbytes / (ms * 1e-3) / 1e9
            row.update(gbps=round(gbps, 1), frac_peak=round(gbps / peak, 3) if peak else None)
        row.update(extra)
        results["cases"].append(row)
        gb = f"{row['gbps']:8.1f} GB/s" if "gbps" in row else ""
        print(f"{op:10s} B={batch}  {impl:22s} {mode:8s} {ms:9.3f} ms  {gb}", flush=True)
        return ms

    rays, s_coarse, s_fine, channels, res, hidden = 4096, 48, 48, 32, 256, 64
    for batch in args.batches:
        g = torch.Generator(device=dev).manual_seed(0)
        planes = torch.randn(batch, 3, channels, res, res, device=dev, generator=g)           # [B,3,C,H,W]
        n = rays * (s_coarse + s_fine)
        points = (torch.rand(batch, n, 3, device=dev, generator=g) - 0.5) * 1.05             # [B,N,3]
        cot = torch.randn(batch, n, channels, device=dev, generator=g)                        # [B,N,C]
        plane_bytes = planes.numel() * 4
        io_fwd = plane_bytes + points.numel() * 4 + cot.numel() * 4
        io_bwd = io_fwd + cot.numel() * 4 + plane_bytes + points.numel() * 4   # + read grad, write grads

        # -- tri-plane sampling -------------------------------------------------------------------------
        grid = (points * 2).reshape(batch, 1, n, 3)[..., [0, 1, 0, 2, 2, 0]].reshape(batch, 1, n, 3, 2)
        grid = grid.permute(0, 3, 1, 2, 4).reshape(batch * 3, 1, n, 2).contiguous()       # [B*3,1,N,2]
        flat = planes.reshape(batch * 3, channels, res, res)

        def gs_fwd():
            return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        gs_cot = torch.randn(batch * 3, channels, 1, n, device=dev, generator=g)

        def gs_fwd_bwd():
            p = flat.detach().requires_grad_()
            q = grid.detach().requires_grad_()
            out = F.grid_sample(p, q, mode="bilinear", padding_mode="zeros", align_corners=False)
            torch.autograd.backward(out, gs_cot)

        def fwd_bwd(fn):
            def run():
                p = planes.detach().requires_grad_()
                x = points.detach().requires_grad_()
                torch.autograd.backward(fn(p, x), cot)
            return run

        with torch.no_grad():
            ref_fwd = record("sample", batch, "torch reference", "fwd",
                             bench(lambda: reference.triplane_sample(planes, points)), io_fwd)
            gs_only = record("sample", batch, "grid_sample alone", "fwd", bench(gs_fwd), io_fwd)
            tri_fwd = record("sample", batch, "triton", "fwd", bench(lambda: tk.triplane_sample(planes, points)),
                             io_fwd)
        ref_fb = record("sample", batch, "torch reference", "fwd+bwd", bench(fwd_bwd(reference.triplane_sample)),
                        io_bwd)
        gs_fb = record("sample", batch, "grid_sample alone", "fwd+bwd", bench(gs_fwd_bwd), io_bwd)
        tri_fb = record("sample", batch, "triton", "fwd+bwd", bench(fwd_bwd(tk.triplane_sample)), io_bwd)
        results["cases"][-1]["speedup_vs_reference"] = round(ref_fb / tri_fb, 2)
        results["cases"][-1]["speedup_vs_grid_sample"] = round(gs_fb / tri_fb, 2)
        print(f"  sampling fwd+bwd speedup: {ref_fb / tri_fb:.2f}x vs reference, {gs_fb / tri_fb:.2f}x vs "
              f"grid_sample alone; fwd {ref_fwd / tri_fwd:.2f}x / {gs_only / tri_fwd:.2f}x")
        del grid, flat, gs_cot, cot, points

        # -- compositing --------------------------------------------------------------------------------
        s_all = s_coarse + s_fine
        colors = torch.rand(batch, rays, s_all, channels, device=dev, generator=g)           # [B,R,S,C]
        dens = torch.randn(batch, rays, s_all, 1, device=dev, generator=g) * 3
        depths = torch.sort(2.25 + 1.05 * torch.rand(batch, rays, s_all, 1, device=dev, generator=g), dim=2).values
        c_io = (colors.numel() + 2 * dens.numel()) * 4 + batch * rays * (channels + 1 + s_all - 1) * 4
        g_feat = torch.randn(batch, rays, channels, device=dev, generator=g)
        g_depth = torch.randn(batch, rays, 1, device=dev, generator=g)

        def comp_fb(fn):
            def run():
                c = colors.detach().requires_grad_()
                s = dens.detach().requires_grad_()
                t = depths.detach().requires_grad_()
                out = fn(c, s, t)
                torch.autograd.backward([out.features, out.depth], [g_feat, g_depth])
            return run

        with torch.no_grad():
            ref_c = record("composite", batch, "torch reference", "fwd",
                           bench(lambda: reference.composite_rays(colors, dens, depths)), c_io)
            tri_c = record("composite", batch, "triton", "fwd", bench(lambda: tk.composite_rays(colors, dens, depths)),
                           c_io)
            results["cases"][-1]["speedup_vs_reference"] = round(ref_c / tri_c, 2)
        ref_cb = record("composite", batch, "torch reference", "fwd+bwd", bench(comp_fb(reference.composite_rays)),
                        2 * c_io + colors.numel() * 4)
        tri_cb = record("composite", batch, "triton", "fwd+bwd", bench(comp_fb(tk.composite_rays)),
                        2 * c_io + colors.numel() * 4)
        results["cases"][-1]["speedup_vs_reference"] = round(ref_cb / tri_cb, 2)
        print(f"  compositing speedup: fwd {ref_c / tri_c:.2f}x, fwd+bwd {ref_cb / tri_cb:.2f}x")
        del colors, dens, depths, g_feat, g_depth

        # -- fused render ---------------------------------------------------------------------------------
        dec = DecoderWeights(w0=torch.randn(hidden, channels, device=dev, generator=g) / math.sqrt(channels),
                             b0=torch.randn(hidden, device=dev, generator=g) * 0.1,
                             w1=torch.randn(1 + channels, hidden, device=dev, generator=g) / math.sqrt(hidden),
                             b1=torch.randn(1 + channels, device=dev, generator=g) * 0.1)
        dec.b1[0] += 2.0
        origins = torch.tensor([0.0, 0.05, 2.7], device=dev).expand(batch, rays, 3).contiguous()
        targets = torch.cat([(torch.rand(batch, rays, 2, device=dev, generator=g) - 0.5) * 0.9,
                             torch.zeros(batch, rays, 1, device=dev)], dim=-1)
        directions = F.normalize(targets - origins, dim=-1)
        settings = RaySettings()
        r_io = plane_bytes + batch * rays * (6 + channels + 2 + 47 + 48) * 4
        with torch.no_grad():
            ref_r = record("render", batch, "torch reference", "fwd",
                           bench(lambda: reference.render_rays(planes, dec, origins, directions, settings,
                                                               backend="torch")), r_io)
            unf_r = record("render", batch, "unfused, triton ops", "fwd",
                           bench(lambda: reference.render_rays(planes, dec, origins, directions, settings,
                                                               backend="triton")), r_io)
            fused = record("render", batch, "triton fused", "fwd",
                           bench(lambda: tk.render_fused(planes, dec, origins, directions, settings)), r_io)
            results["cases"][-1]["speedup_vs_reference"] = round(ref_r / fused, 2)
            a = tk.render_fused(planes, dec, origins, directions, settings)
            b = reference.render_rays(planes, dec, origins, directions, settings, backend="torch")
            err = max((a.features - b.features).abs().max().item(), (a.depth - b.depth).abs().max().item())
            results["cases"][-1]["max_abs_err_vs_reference"] = err
            print(f"  fused render speedup: {ref_r / fused:.2f}x vs reference ({unf_r / fused:.2f}x vs unfused "
                  f"Triton ops); max |diff| {err:.2e}")
            if args.sweep:
                for block_r in (16, 32):
                    for warps in (4, 8):
                        for prec in ("ieee", "tf32x3", "tf32"):
                            try:
                                ms = bench(lambda: tk.render_fused(planes, dec, origins, directions, settings,
                                                                   block_r=block_r, num_warps=warps,
                                                                   dot_precision=prec))
                            except Exception as error:  # noqa: BLE001 - a config that does not compile
                                print(f"  sweep block_r={block_r} warps={warps} {prec}: {error!r}"[:200])
                                continue
                            record("render-sweep", batch, f"r{block_r} w{warps} {prec}", "fwd", ms, r_io)
        del planes, origins, directions, targets
        torch.cuda.empty_cache()

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernels-{slug}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
