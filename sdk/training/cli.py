"""`otavatar train ...`: multi-view data, generator prior, controller (decoupling-by-inverting), evaluation.

Run the controller under `torchrun --nproc_per_node N -m otavatar.cli train controller ...` for several
processes (NCCL when they run on GPUs, one GPU each; gloo on CPUs); every other command is single-process.
`--device` (prior, controller, evaluate) picks where a process runs: "auto" takes the GPU when torch sees one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

__all__ = ["train"]


def _threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (the GPU when torch sees one, cuda:LOCAL_RANK under torchrun; else the CPU), "
                             "cpu, cuda or cuda:N.")(f)


def _device(spec: str):
    """--device resolved (`otavatar.training.run.resolve_device`), or a usage error that names the problem."""
    from otavatar.training.run import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None


@click.group("train")
def train() -> None:
    """Train the generator prior and the motion controller (the `train` extra: torch, tqdm, lmdb)."""


@train.command("multiview")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A SynthHeads dataset folder (holding truth.npz), from `otavatar synth`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--extra-views", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random look-at views rendered per frame besides its own camera.")
@click.option("--resolution", type=click.IntRange(8, 2048), default=128, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def multiview(data_dir: str, out: str, frames_per_video: int, extra_views: int, resolution: int, seed: int,
              threads: int | None) -> None:
    """Render several cameras of the same frames of the train split (the prior's data)."""
    from otavatar.training.multiview import render_multiview, save_multiview

    _threads(threads)
    truth = Path(data_dir) / "truth.npz"
    if not truth.is_file():
        raise click.BadParameter(f"{truth} not found: --data must be a SynthHeads dataset", param_hint="--data")
    data = render_multiview(truth, frames_per_video=frames_per_video, extra_views=extra_views,
                            resolution=resolution, seed=seed)
    save_multiview(data, out)
    click.echo(f"{len(data)} frames x {data.views} views at {data.resolution}px -> {out}")


@train.command("prior")
@click.option("--multiview", "multiview_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="From `otavatar train multiview`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Frames per step.")
@click.option("--views", type=click.IntRange(min=1), default=2, show_default=True, help="Views per frame per step.")
@click.option("--density/--no-density", default=True, show_default=True,
              help="The monotonic and TV density regularisers.")
@click.option("--perceptual-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="0 skips the VGG19 terms (pixel-only steps are ~3x faster on a CPU).")
@click.option("--code-init-std", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--lr-codes", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Adam lr of the codes (with --code-optimizer adam a code drawn every ~200 steps moves ~10x this "
                   "per visit; with row-adam, this).")
# the choices spell out prior.CODE_LAYOUTS / CODE_OPTIMIZERS: importing prior here would import torch with the CLI
@click.option("--code-layout", type=click.Choice(["frame", "video+frame"]), default="frame", show_default=True,
              help="frame: an independent code per frame (the shipped prior); video+frame: each video's code plus "
                   "a per-frame offset from 0, so a video's frames share their identity (docs/training-rounds.md, "
                   "round 24).")
@click.option("--code-optimizer", type=click.Choice(["adam", "row-adam"]), default="adam", show_default=True,
              help="adam: one Adam over the code table (the shipped prior); row-adam: each code its own Adam step "
                   "count, so a rarely drawn code moves lr, not ~10 lr, per visit (otavatar.training.row_adam).")
@click.option("--local-weight", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="The mouth + eyes region L1 weight (published 10; 0 = off, as the shipped prior was trained).")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Warm start: another prior run's generator and codes (same multiview set).")
@click.option("--init-generator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Warm start the generator alone from a weights file (e.g. the shipped default); the codes "
                   "start fresh (use with --generator-warmup-steps).")
@click.option("--generator-warmup-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Freeze the generator for this many first steps, so fresh codes find their frames before the "
                   "generator moves.")
@click.option("--max-minutes", type=float, default=None, help="Stop (and checkpoint) after this much wall time.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="torchvision vgg19 weights; default: the fixed-seed random VGG19 stand-in.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@_device_option
def prior(multiview_file: str, out_dir: str, steps: int, batch: int, views: int, density: bool,
          perceptual_weight: float, code_init_std: float, lr_codes: float, code_layout: str, code_optimizer: str,
          local_weight: float, init_from: str | None, init_generator: str | None, generator_warmup_steps: int,
          max_minutes: float | None, vgg_weights: str | None, seed: int,
          resume: bool, threads: int | None, device: str) -> None:
    """Train the `tiny` generator as a multi-view auto-decoder (writes OUT/checkpoint.safetensors)."""
    from otavatar.training.losses import LossWeights
    from otavatar.training.multiview import load_multiview
    from otavatar.training.prior import PriorConfig, train_prior

    _threads(threads)
    no_density = {} if density else {"monotonic": 0.0, "tv": 0.0}
    weights = LossWeights(perceptual=perceptual_weight, local=local_weight, **no_density)
    config = PriorConfig(steps=steps, batch=batch, views=views, losses=weights, max_minutes=max_minutes, seed=seed,
                         code_init_std=code_init_std, lr_codes=lr_codes, code_layout=code_layout,
                         code_optimizer=code_optimizer, generator_warmup_steps=generator_warmup_steps)
    try:
        result = train_prior(load_multiview(multiview_file), out_dir, config, resume=resume,
                             vgg_weights=vgg_weights, init_from=init_from, init_generator=init_generator,
                             device=_device(device))
    except (FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f} -> "
               f"{result.run_dir / 'checkpoint.safetensors'}")


@train.command("controller")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="An OTAvatar LMDB dataset (SynthHeads or HDTF layout).")
@click.option("--prior", "prior_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Weights with the starting generator (e.g. the prior run's checkpoint.safetensors).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--schedule", type=click.Choice(["successive", "joint"]), default="successive", show_default=True,
              help="successive = decoupling-by-inverting (published); joint = the ablation.")
@click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Videos per iteration.")
@click.option("--inversion-steps", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--controller-steps", type=click.IntRange(min=0), default=10, show_default=True,
              help="N_mo: the last inversion steps that train the controller.")
@click.option("--sr-steps", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--lr-code", type=float, default=0.01, show_default=True)
@click.option("--lr-controller", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="AdamW lr of the controller (published 1e-3 at 32 videos per step; see docs/training.md).")
@click.option("--sr-perceptual-size", type=click.IntRange(min=16), default=None,
              help="Downsample the super-resolved image to this size for its perceptual term (CPU speed).")
@click.option("--density-points", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--identity-encoder", default="synthheads", show_default=True,
              help="'synthheads' (the shipped SynthHeads encoder), a path to ArcFace ResNet-18 weights, or 'none'.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--init-codes", "init_codes_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A prior run folder: start each video's code inversion at the mean of the prior's codes of its "
                   "frames instead of w_avg (for short inversions; needs --multiview).")
@click.option("--multiview", "multiview_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The multiview .npz that prior was trained on (with --init-codes).")
@click.option("--persistent-codes", is_flag=True,
              help="Each video's inversion continues from its previous one (a code bank kept with the run) "
                   "instead of restarting: short CPU inversions add up to converged identity codes.")
@click.option("--warmup-code-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --persistent-codes: first invert every training video's code for this many steps "
                   "(controller frozen) so the controller trains on converged codes from the first iteration.")
@click.option("--warmup-lr-code", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The warm-up's code lr (default: --lr-code). The warm-up starts at w_avg, the iterations at "
                   "banked codes, so a banked run can take a finer --lr-code than its warm-up.")
@click.option("--refresh-codes-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --warmup-code-steps: every N iterations, re-invert every banked code the same way "
                   "(from the bank, at --lr-code), so no video's code goes stale as the controller moves (0 = off).")
@click.option("--ws-clamp", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Clamp every rendered ws to w_avg +- this, as published (spec 2.5); 0 turns it off.")
@click.option("--pin-neutral-motion", "pin_neutral", is_flag=True,
              help="Keep the controller's motion for the neutral window at exactly 0 (the identity code owns the "
                   "constant offset, which otherwise drifts; see otavatar.training.decouple).")
@click.option("--pin-mean-motion", "pin_mean_windows", type=click.IntRange(min=0), default=0, show_default=True,
              help="Instead of --pin-neutral-motion: keep the MEAN motion over this many training windows (a fixed "
                   "sample) at exactly 0 after every controller step (0 = off; alone it diverged in "
                   "docs/training-rounds.md, round 6; with --differential-grad it is stable, round 7).")
@click.option("--fresh-controller", is_flag=True,
              help="Start from a new controller even when the --prior file holds one (keep only its generator).")
@click.option("--finetune-generator/--freeze-generator", default=True, show_default=True,
              help="Whether the refine step also fine-tunes the whole generator (published) or trains only the "
                   "controller, so that banked codes stay valid between visits (docs/training-rounds.md, round 6).")
@click.option("--controller-pose/--no-controller-pose", default=True, show_default=True,
              help="A fresh controller's pose inputs (the published if_use_pose); --no-controller-pose zeroes them, "
                   "so the motion follows the expression alone and the camera carries the pose.")
@click.option("--differential-grad", is_flag=True,
              help="The controller learns only from what differs between a video's two frames: the residual both "
                   "share (the unconverged code's) is removed from its gradient, and the refine step renders both "
                   "frames together (otavatar.training.decouple). Use with --pin-mean-motion: nothing else holds the "
                   "shared motion.")
@click.option("--controller-fresh-frames", is_flag=True,
              help="Successive schedule: each controller step (code frozen) renders a new pair of frames of the "
                   "batch's videos instead of the same pair again (otavatar.training.decouple; the joint schedule "
                   "has no such steps and is unchanged).")
@click.option("--basis-init-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --fresh-controller: draw the direction matrix N(0, s^2) instead of the published N(0, 1). "
                   "Its orthonormal directions are the same; AdamW turns them about 1/s times as fast, as the "
                   "published run's later steps do (otavatar.training.decouple; docs/training-rounds.md, round 17).")
@click.option("--controller-local-weight", type=click.FloatRange(min=0), default=None,
              help="The mouth + eyes L1 weight in every loss that updates the controller (successive: its steps; "
                   "joint: every step; both: the refine); default: the published 10 everywhere.")
@click.option("--spike-guard", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Roll back an iteration whose loss is above this x the median of the last 25 (or not finite) "
                   "and halve the controller lr for the rest of the run (0 = off: a diverged run then stays "
                   "diverged; docs/training-rounds.md, round 11).")
@click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True), default=0.95, show_default=True,
              help="EMA decay of the controller and generator per iteration (published 0.95 at 32 videos per "
                   "iteration). A slower EMA averages more videos but lags: on a few hundred iterations it stays near "
                   "the initial controller (docs/training-rounds.md, round 8).")
@click.option("--max-minutes", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads per process.")
@_device_option
def controller(data_dir: str, prior_file: str, out_dir: str, schedule: str, iterations: int, batch: int,
               inversion_steps: int, controller_steps: int, sr_steps: int, lr_code: float, lr_controller: float,
               sr_perceptual_size: int | None, density_points: int, identity_encoder: str, vgg_weights: str | None,
               init_codes_run: str | None, multiview_file: str | None, persistent_codes: bool,
               warmup_code_steps: int, warmup_lr_code: float | None, refresh_codes_every: int, ws_clamp: float,
               pin_neutral: bool, pin_mean_windows: int, fresh_controller: bool, finetune_generator: bool,
               controller_pose: bool, differential_grad: bool, controller_fresh_frames: bool,
               basis_init_scale: float, controller_local_weight: float | None, spike_guard: float, ema: float,
               max_minutes: float | None, seed: int, resume: bool, threads: int | None, device: str) -> None:
    """Decoupling-by-inverting (writes OUT/ema.safetensors: the EMA generator + controller)."""
    from otavatar.training.decouple import DecoupleConfig, train_controller

    if (init_codes_run is None) != (multiview_file is None):
        raise click.UsageError("--init-codes and --multiview go together")
    _threads(threads)
    where = _device(device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch
        import torch.distributed as dist

        if where.type == "cuda":
            torch.cuda.set_device(where)       # NCCL's collectives run on the current device
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    try:
        config = DecoupleConfig(iterations=iterations, batch=batch, inversion_steps=inversion_steps,
                                controller_steps=controller_steps, sr_steps=sr_steps, schedule=schedule,
                                lr_code=lr_code, lr_controller=lr_controller, sr_perceptual_size=sr_perceptual_size,
                                density_points=density_points, persistent_codes=persistent_codes,
                                pin_neutral=pin_neutral, pin_mean_windows=pin_mean_windows,
                                warmup_code_steps=warmup_code_steps,
                                warmup_lr_code=warmup_lr_code, refresh_codes_every=refresh_codes_every,
                                clamp=ws_clamp or None, finetune_generator=finetune_generator,
                                controller_pose=controller_pose, differential_grad=differential_grad,
                                controller_fresh_frames=controller_fresh_frames, basis_init_scale=basis_init_scale,
                                controller_local_weight=controller_local_weight, spike_guard=spike_guard or None,
                                ema=ema, max_minutes=max_minutes, seed=seed)
        encoder = None if identity_encoder == "none" else identity_encoder
        init_codes = None
        if init_codes_run is not None:
            from otavatar.training.multiview import load_multiview
            from otavatar.training.prior import prior_identity_codes

            init_codes = prior_identity_codes(init_codes_run, load_multiview(multiview_file),
                                              Path(data_dir) / "truth.npz")
        result = train_controller(data_dir, prior_file, out_dir, config, resume=resume, vgg_weights=vgg_weights,
                                  identity_encoder=encoder, init_codes=init_codes,
                                  fresh_controller=fresh_controller, device=where)
    except (FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not distributed or int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"{result.iterations} iterations in {result.seconds:.0f} s, final loss {result.final_loss:.4f} "
                   f"-> {Path(out_dir) / 'ema.safetensors'}")


@train.command("evaluate")
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Generator + controller weights (e.g. a run's ema.safetensors).")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="The SynthHeads dataset (its test split is used, or --split's).")
@click.option("--mode", type=click.Choice(["controller", "static"]), default="controller", show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--pairs", type=click.IntRange(min=1), default=None, help="At most this many (source, driver) pairs.")
@click.option("--videos-per-subject", type=click.IntRange(min=1), default=1, show_default=True,
              help="Source videos per held-out subject (each driven by the next subject's video of the same rank).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Whose identities: the held-out (test) subjects, or those training saw (train: what it memorised).")
@click.option("--subjects", type=click.IntRange(min=1), default=None, help="Only the split's first N subjects.")
@click.option("--motion-scale", type=float, default=1.0, show_default=True,
              help="Multiply the controller's motion by this (a diagnostic of its size; controller mode).")
@click.option("--steps", nargs=2, type=click.IntRange(min=0), default=(100, 100), show_default=True,
              help="Inversion steps: W then W+.")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Inversion learning rate.")
@click.option("--no-intrinsics", is_flag=True,
              help="Invert with the portrait's camera as given (no intrinsics correction; SynthHeads' are exact).")
@click.option("--identity-encoder", default="synthheads", show_default=True,
              help="The inversion's identity term: 'synthheads', an ArcFace ResNet-18 file, or 'none'.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@_device_option
def evaluate(weights: str, data_dir: str, mode: str, frames: int, pairs: int | None, videos_per_subject: int,
             split: str, subjects: int | None, motion_scale: float, steps: tuple[int, int], lr: float,
             no_intrinsics: bool, identity_encoder: str, json_out: str | None, threads: int | None,
             device: str) -> None:
    """One-shot cross-identity reenactment on held-out SynthHeads identities (PSNR, SSIM, AKD, AED)."""
    import numpy as np

    from otavatar import inversion
    from otavatar.training.evaluate import (default_pairs, evaluate_reenactment, evaluation_inversion,
                                            evaluation_inverter)
    from otavatar.weights import load_models

    if motion_scale != 1.0 and mode != "controller":
        raise click.BadParameter("scales a controller's motion: use it with --mode controller",
                                 param_hint="--motion-scale")
    _threads(threads)
    where = _device(device)
    models = load_models(weights, device=where)
    if models.generator is None or (mode == "controller" and models.controller is None):
        raise click.ClickException(f"{weights}: needs a generator{' and a controller' if mode == 'controller' else ''}")
    if motion_scale != 1.0:
        try:
            models.controller.scale_motion_(motion_scale)
        except ValueError as e:                    # not finite
            raise click.BadParameter(str(e), param_hint="--motion-scale") from e
    config = evaluation_inversion(steps[0], steps[1], lr, intrinsics=not no_intrinsics)
    invert_fn, _ = evaluation_inverter(models.generator, config,
                                       None if identity_encoder == "none" else identity_encoder)
    truth = Path(data_dir) / "truth.npz"
    chosen = default_pairs(np.load(truth, allow_pickle=False), videos_per_subject, split=split, subjects=subjects)
    chosen = chosen if pairs is None else chosen[:pairs]
    report = evaluate_reenactment(models.generator, models.controller if mode == "controller" else None,
                                  truth_npz=str(truth), pairs=chosen, frames=frames, mode=mode,
                                  inversion=config, render_fn=inversion.render_motion, invert_fn=invert_fn)
    click.echo(report.table())
    written = report.to_dict()
    if motion_scale != 1.0:      # a scaled controller's report says so; `train compare` pairs it like any other
        click.echo(f"(the controller's motion x{motion_scale:g})")
        written["motion_scale"] = motion_scale
    if json_out:
        Path(json_out).write_text(json.dumps(written, indent=2))


@train.command("compare")
@click.argument("report_a")
@click.argument("report_b")
@click.option("--across-seeds", is_flag=True,
              help="REPORT_A and REPORT_B list one report per training seed, in the same seed order: test the "
                   "per-seed differences (A_i - B_i) across seeds (a t test) instead of averaging the reports.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def compare(report_a: str, report_b: str, across_seeds: bool, json_out: str | None) -> None:
    """Paired comparison of two `train evaluate --json-out` reports on the same pairs (A - B, its SE, verdict).

    REPORT_A and REPORT_B may each be several reports joined by commas (e.g. one per training seed,
    `s0.json,s1.json`): they are averaged pair by pair first (otavatar.training.compare.average_reports), or, with
    --across-seeds, compared seed by seed and tested across the seeds (compare_across_seeds)."""
    from otavatar.training.compare import (average_reports, compare_across_seeds, compare_reports,
                                           comparison_table, seed_comparison_table)

    groups, names = [], []
    for argument in (report_a, report_b):
        group, paths = [], [Path(p) for p in argument.split(",") if p]
        names.append("+".join(path.stem for path in paths))
        for path in paths:
            if not path.is_file():
                raise click.ClickException(f"{path}: no such report file")
            try:
                group.append(json.loads(path.read_text()))
            except ValueError as e:
                raise click.ClickException(f"{path}: not JSON: {e}") from None
        if not group:
            raise click.ClickException(f"{argument!r} names no report file")
        groups.append(group)
    if across_seeds and (len(groups[0]) != len(groups[1]) or len(groups[0]) < 2):
        raise click.ClickException(f"--across-seeds needs one report per seed on each side, at least 2 seeds and "
                                   f"as many for A as for B (got {len(groups[0])} and {len(groups[1])})")
    try:
        if across_seeds:
            rows = compare_across_seeds(list(zip(*groups)))
            table = seed_comparison_table(rows, *names)
        else:
            rows = compare_reports(*(g[0] if len(g) == 1 else average_reports(g) for g in groups))
            table = comparison_table(rows, *names)
    except (KeyError, TypeError) as e:
        raise click.ClickException(f"not an evaluate report (missing or malformed {e})") from None
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(table)
    if json_out:
        Path(json_out).write_text(json.dumps([r.to_dict() for r in rows], indent=2))


@train.command("ablation", context_settings={"ignore_unknown_options": True})
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="The SynthHeads training set (its test split is the first evaluation set).")
@click.option("--heldout", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A further SynthHeads set whose test split is scored too (repeat for several).")
@click.option("--prior", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Weights with the starting generator (passed to every `train controller --prior`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The ablation's folder (resumable).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds, comma-separated (at least 2).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Each training run's wall-clock budget.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Training runs at a time.")
@click.option("--eval-jobs", type=click.IntRange(min=1), default=None, help="Evaluations at a time (default: --jobs).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per job.")
@click.option("--eval-args", default="--steps 30 30 --videos-per-subject 2", show_default=True,
              help="Options for every `train evaluate` job.")
@click.option("--criteria", default="akd_detected,aed_detected", show_default=True,
              help="The columns on which (a) must beat (b) and (c) on every set, across seeds and over the pairs.")
@_device_option
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def ablation(data_dir: str, heldout: tuple[str, ...], prior: str, out: str, seeds: str, max_minutes: float,
             jobs: int, eval_jobs: int | None, threads: int, eval_args: str, criteria: str, device: str,
             train_args: tuple[str, ...]) -> None:
    """The issue's ablation: (successive, joint) pairs over seeds, scored as (a), (b), (c) and tested across seeds.

    TRAIN_ARGS (after `--`) are the recipe, given to every `train controller` run of both schedules, e.g.
    `-- --fresh-controller --batch 8 --inversion-steps 3 --controller-steps 1 --sr-steps 1 --iterations 100000`.
    Writes OUT/summary.md and OUT/summary.json; rerunning the command resumes where it stopped
    (otavatar.training.ablation)."""
    import shlex

    from otavatar.training.ablation import AblationPlan, run_ablation

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers joined by commas, got {seeds!r}", param_hint="--seeds") from None
    try:
        plan = AblationPlan(data=Path(data_dir), out=Path(out), prior=Path(prior), seeds=seed_list,
                            heldout=tuple(Path(h) for h in heldout), train_args=tuple(train_args),
                            eval_args=tuple(shlex.split(eval_args)), max_minutes=max_minutes, jobs=jobs,
                            eval_jobs=eval_jobs, device=device, threads=threads,
                            criteria=tuple(c.strip() for c in criteria.split(",") if c.strip()))
        summary = run_ablation(plan, echo=click.echo)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.markdown())


@train.command("package")
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A controller run's ema.safetensors (generator + controller).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write, e.g. sdk/weights/default/otavatar-tiny.safetensors (the embedded default).")
@click.option("--info", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A JSON file of provenance (commands, data, seeds, wall times) stored in the file's metadata.")
def package(weights: str, out: str, info: str | None) -> None:
    """Write a trained generator + controller as a shippable weights file (float32, with provenance)."""
    from otavatar.weights import load_models, save_models

    models = load_models(weights)
    if models.generator is None or models.controller is None:
        raise click.ClickException(f"{weights}: a default model needs a generator and a controller")
    metadata = {"source": Path(weights).name, "trained": models.metadata}
    if info:
        try:
            metadata["provenance"] = json.loads(Path(info).read_text())
        except ValueError as e:
            raise click.ClickException(f"{info}: not JSON: {e}") from None
    path = save_models(out, generator=models.generator, controller=models.controller, metadata=metadata)
    click.echo(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
