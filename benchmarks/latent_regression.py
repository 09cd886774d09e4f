"""How much of a training frame's own latent code is expression? And a controller distilled from that answer.

Round 14 of docs/training-rounds.md. Three steps:

    codes    for every training video of a SynthHeads set (or one shard of them), K evenly spaced frames: invert one
             W code per frame with the generator frozen and no controller, starting from the video's code banked by
             a finished `train controller --persistent-codes` run (the published losses, low-res unless --sr).
    ridge    per-video-centred code deltas against the centre frame's per-video-centred coefficients (64 expression,
             then + 6 pose): a ridge map's R^2 on the frames it was fitted to and on held-out videos.
    distill  the expression-only ridge map, fitted to every frame, distilled into a fresh no-pose controller of the
             generator's preset on every training window (the motion's spread around its mean, so only differences
             are fitted), mean-pinned as `--pin-mean-motion` pins, saved with the generator: a weights file that
             `train evaluate` scores and `train controller --prior` starts from.

    python benchmarks/latent_regression.py codes --weights W --bank-run runs/r24-successive --data data/synth \
        --shard 0 --shards 2 --out codes0.npz            # and --shard 1 ... codes1.npz beside it
    python benchmarks/latent_regression.py ridge --codes codes0.npz codes1.npz
    python benchmarks/latent_regression.py distill --weights W --codes codes0.npz codes1.npz --data data/synth \
        --out distilled.safetensors

`prior-codes` instead of `codes` takes the codes a prior run learnt for its own frames (round 24), in the same file
format, for `ridge` and `distill`:

    python benchmarks/latent_regression.py prior-codes --run runs/prior --multiview data/multiview.npz --out p.npz
    python benchmarks/latent_regression.py ridge --codes p.npz
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

EXPRESSION = slice(0, 64)       # the controller input's 64 expression coefficients, then 6 pose numbers
CENTRE = 13                     # the centre frame of a 27-frame window


def _centred(video: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values [N,D] minus the mean of their video's rows."""
    out = values.astype(np.float64).copy()
    for v in np.unique(video):
        rows = video == v
        out[rows] -= out[rows].mean(0)
    return out


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    return float(1 - ((pred - target) ** 2).sum() / (target ** 2).sum())


def _load(paths: list[str]) -> dict[str, np.ndarray]:
    parts = [np.load(p) for p in paths]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("video", "frame", "code", "start", "window")}


def codes(args) -> None:
    from safetensors.torch import load_file

    from otavatar.coeffs import windows
    from otavatar.training.decouple import DecoupleConfig, _clamp, banked_codes
    from otavatar.training.lmdb_dataset import LmdbDataset
    from otavatar.training.objective import ReconstructionLoss
    from otavatar.weights import load_models

    torch.set_num_threads(args.threads)
    generator = load_models(args.weights).generator.eval().requires_grad_(False)
    bank = banked_codes(load_file(f"{args.bank_run}/extra.safetensors"))
    data = LmdbDataset(args.data)
    videos = [v for i, v in enumerate(sorted(data.train)) if i % args.shards == args.shard]
    missing = [v for v in videos if v not in bank]
    if missing:
        raise SystemExit(f"{args.bank_run}: no banked code for {missing[:3]} (a --persistent-codes run on this data?)")
    losses = ReconstructionLoss.from_files(generator, identity_encoder="synthheads", sr_perceptual_size=32)
    w_avg = generator.w_avg.detach()
    items = []                                          # (video, frame, image, camera, landmarks, window)
    for v in videos:
        frames = np.linspace(0, data.length(v) - 1, args.frames).round().astype(int)
        images = data.frames(v, frames)
        cams, marks = data.cameras(v)[frames], data.keypoints(v, resolution=images.shape[1])[frames]
        wins = windows(data.coeffs(v))
        items += [(v, int(f), images[j], cams[j], marks[j], wins[f]) for j, f in enumerate(frames)]
    found, first_last, t0 = [], [], time.perf_counter()
    for s in range(0, len(items), args.batch):
        chunk = items[s:s + args.batch]
        image = torch.from_numpy(np.stack([c[2] for c in chunk])).permute(0, 3, 1, 2).float() / 127.5 - 1
        camera = torch.from_numpy(np.stack([c[3] for c in chunk])).float()
        marks = torch.from_numpy(np.stack([c[4] for c in chunk])).float()
        code = torch.stack([bank[c[0]] for c in chunk])[:, None].clone().requires_grad_(True)   # [B,1,w_dim]
        opt = torch.optim.Adam([code], lr=args.lr)
        trace = []
        for _ in range(args.steps):
            ws = _clamp(code.expand(-1, generator.config.num_ws, -1), w_avg, DecoupleConfig().clamp)   # as trained
            loss = losses(generator, ws, camera, image, marks, super_resolve=args.sr).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([code], 1.0)
            opt.step()
            trace.append(float(loss.detach()))
        found.append(code.detach()[:, 0].numpy())
        first_last.append((trace[0], trace[-1]))
        print(f"{s + len(chunk)}/{len(items)} frames: loss {trace[0]:.4f} -> {trace[-1]:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    np.savez(args.out, video=np.array([c[0] for c in items]), frame=np.array([c[1] for c in items]),
             code=np.concatenate(found), start=np.stack([bank[c[0]].numpy() for c in items]),
             window=np.stack([c[5] for c in items]).astype(np.float32), loss=np.array(first_last))


def prior_codes(args) -> None:
    """The prior's own per-frame codes, `start` = the mean code of the frame's video; `window` holds only the
    centre column (the frame's coefficients from the multiview set; the other columns are 0): all `ridge` reads."""
    from safetensors.torch import load_file

    from otavatar.training.multiview import load_multiview

    data = load_multiview(args.multiview)
    code = load_file(f"{args.run}/extra.safetensors")["codes"].numpy()
    if len(code) != len(data):
        raise SystemExit(f"{args.run}: {len(code)} codes, but {args.multiview} has {len(data)} frames")
    start = code - _centred(data.video, code)
    window = np.zeros((len(data), data.coeffs.shape[1], 2 * CENTRE + 1), np.float32)
    window[:, :, CENTRE] = data.coeffs
    np.savez(args.out, video=data.video, frame=data.frame, code=code, start=start.astype(np.float32),
             window=window)
    print(f"{args.out}: {len(code)} frames of {len(np.unique(data.video))} videos")


def ridge(args) -> dict:
    d = _load(args.codes)
    y = _centred(d["video"], d["code"])
    centre = d["window"][:, :, CENTRE]
    out = {"frames": len(y), "videos": int(len(np.unique(d["video"]))),
           "delta_rms": float(np.sqrt((y ** 2).mean())),
           "moved_from_bank_rms": float(np.sqrt(((d["code"] - d["start"]) ** 2).mean()))}
    rng = np.random.default_rng(args.seed)
    videos = np.unique(d["video"])
    for name, cols in (("expression", EXPRESSION), ("expression_pose", slice(0, 70))):
        x = _centred(d["video"], centre[:, cols])
        fits, held = [], []
        for _ in range(args.folds):
            val = np.isin(d["video"], rng.choice(videos, max(1, len(videos) // 7), replace=False))
            w = _ridge(x[~val], y[~val], args.lam)
            fits.append(_r2(x[~val] @ w, y[~val]))
            held.append(_r2(x[val] @ w, y[val]))
        out[name] = {"r2_fit": float(np.mean(fits)), "r2_heldout_videos": float(np.mean(held)),
                     "r2_heldout_each": [round(h, 4) for h in held]}
    print(json.dumps(out, indent=1))
    return out


def distill(args) -> None:
    from otavatar.coeffs import windows
    from otavatar.training.decouple import fresh_controller_for
    from otavatar.training.lmdb_dataset import LmdbDataset
    from otavatar.weights import load_models, save_models

    torch.set_num_threads(args.threads)
    d = _load(args.codes)
    x = _centred(d["video"], d["window"][:, EXPRESSION, CENTRE])
    linear = _ridge(x, _centred(d["video"], d["code"]), args.lam)             # [64,w_dim]
    with LmdbDataset(args.data) as data:
        every = torch.from_numpy(np.concatenate([windows(data.coeffs(v)) for v in sorted(data.train)])).float()
    target = every[:, EXPRESSION, CENTRE] @ torch.from_numpy(linear).float()   # [N,w_dim]
    generator = load_models(args.weights).generator
    torch.manual_seed(args.seed)
    controller = fresh_controller_for(generator.config, use_pose=False).train()
    opt = torch.optim.Adam(controller.parameters(), lr=1e-3)
    probe = slice(None, None, 7)
    for step in range(args.steps):
        idx = torch.randint(len(every), (256,))
        motion = controller(every[idx])                                        # [256,num_ws,w_dim]
        want = target[idx][:, None]
        loss = ((motion - motion.mean(0) - (want - want.mean(0))) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.steps - 1:
            with torch.no_grad():
                got = controller.eval()(every[probe]).mean(1)
                controller.train()
            want = target[probe]
            fit = _r2((got - got.mean(0)).numpy(), (want - want.mean(0)).numpy())
            print(f"step {step}: fit R^2 {fit:.3f}", flush=True)
    controller.eval().pin_mean_(every[torch.randperm(len(every))[:512]])
    save_models(args.out, generator=generator, controller=controller)
    print(f"saved {args.out}: motion rms {float(target.std(0).pow(2).mean().sqrt()):.4f} per element (ridge target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("codes", help="per-frame codes of training frames")
    c.add_argument("--weights", required=True)
    c.add_argument("--bank-run", required=True, help="a finished --persistent-codes controller run")
    c.add_argument("--data", required=True)
    c.add_argument("--frames", type=int, default=8, help="frames per video")
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--lr", type=float, default=0.01)
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--sr", action="store_true", help="add the super-resolved image's losses")
    c.add_argument("--shard", type=int, default=0)
    c.add_argument("--shards", type=int, default=1)
    c.add_argument("--out", required=True)
    q = sub.add_parser("prior-codes", help="the codes a prior run learnt for its own frames")
    q.add_argument("--run", required=True, help="a `train prior` run folder")
    q.add_argument("--multiview", required=True, help="the multiview .npz it was trained on")
    q.add_argument("--out", required=True)
    r = sub.add_parser("ridge", help="R^2 of the code deltas from the coefficients")
    r.add_argument("--codes", nargs="+", required=True)
    r.add_argument("--lam", type=float, default=1.0)
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--json-out")
    s = sub.add_parser("distill", help="a controller distilled from the expression-only ridge map")
    s.add_argument("--weights", required=True)
    s.add_argument("--codes", nargs="+", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--lam", type=float, default=1.0)
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--out", required=True)
    for p in (c, r, s):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.command == "codes":
        codes(args)
    elif args.command == "prior-codes":
        prior_codes(args)
    elif args.command == "distill":
        distill(args)
    else:
        result = ridge(args)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
