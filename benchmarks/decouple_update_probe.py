"""Does one training iteration help or hurt the OTHER training videos? A diagnostic for `train controller` runs.

From a run's checkpoint (generator, controller, optimiser states and its persistent code bank), run a few
iterations of each schedule variant on batches that avoid a fixed held-in probe set (8 training videos, 2 frames
each, rendered from their banked codes at low resolution), and print the probe's loss after every iteration. An
update that generalises lowers it; one that chases its own batch raises it. Used in docs/training-rounds.md (round 3).

    python benchmarks/decouple_update_probe.py runs/r5-successive --data data/synth --iterations 4 \
        [--lr-controller 1e-3]
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from safetensors.torch import load_file

import otavatar.training.decouple as D
from otavatar.training.objective import ReconstructionLoss
from otavatar.weights import load_models

VARIANTS = {
    "successive": dict(schedule="successive"),
    "joint": dict(schedule="joint"),
    "successive, no refine": dict(schedule="successive", refine=False),
    "successive, refine only": dict(schedule="successive", controller_steps=0),
    "successive, no SR in the inversion": dict(schedule="successive", sr_steps=0),
    "successive, generator frozen": dict(schedule="successive", finetune_generator=False),
    "joint, no refine": dict(schedule="joint", refine=False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--lr-controller", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = load_models(f"{args.run}/checkpoint.safetensors")
    extra = load_file(f"{args.run}/extra.safetensors")
    bank = {k[len("code_bank."):]: v for k, v in extra.items() if k.startswith("code_bank.")}
    states = torch.load(f"{args.run}/optim.pt", weights_only=True)
    sampler = D.PairSampler(args.data, window=models.controller.config.window)
    held_in = [v for v in sampler.videos[::9] if v in bank][:8]
    probe = sampler.sample_videos(held_in, np.random.default_rng(123))
    batches = [b for b in (sampler.sample(2, np.random.default_rng(k)) for k in range(3 * args.iterations))
               if not set(b.videos) & set(held_in)][:args.iterations]

    def probe_loss(generator, controller, losses) -> float:
        with torch.no_grad():
            code = torch.stack([bank[v] for v in probe.videos])[:, None]                  # [8,1,w_dim]
            ws = code.repeat_interleave(2, 0).expand(-1, generator.config.num_ws, -1) + \
                controller(probe.windows.flatten(0, 1))
            rec = losses(generator, ws, probe.cameras.flatten(0, 1), probe.images.flatten(0, 1),
                         probe.landmarks.flatten(0, 1), super_resolve=False)
        return float(rec.loss)

    for name, change in VARIANTS.items():
        generator, controller = copy.deepcopy(models.generator).train(), copy.deepcopy(models.controller).train()
        config = D.DecoupleConfig(**{**dict(batch=2, inversion_steps=10, controller_steps=3, sr_steps=2,
                                            lr_code=0.02, lr_controller=args.lr_controller, sr_perceptual_size=32,
                                            density_points=500, pin_neutral=True, persistent_codes=True), **change})
        losses = ReconstructionLoss.from_files(generator, identity_encoder="synthheads", weights=config.weights,
                                               sr_perceptual_size=32)
        opt_c, opt_g = D._optimizers(controller, generator, config)
        opt_g.load_state_dict(copy.deepcopy(states["generator"]))     # a loaded state shares its tensors:
        opt_c.load_state_dict(copy.deepcopy(states["controller"]))   # without the copies variants leak into each other
        trace = [probe_loss(generator, controller, losses)]
        for batch in batches:
            D._iteration(generator, controller, losses, batch, config, opt_c, opt_g, torch.Generator().manual_seed(0),
                         bank, pin=D._pinning(config))
            trace.append(probe_loss(generator, controller, losses))
        print(f"{name:36s} held-in loss: " + " -> ".join(f"{x:.3f}" for x in trace))


if __name__ == "__main__":
    main()
