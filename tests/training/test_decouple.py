"""Decoupling-by-inverting on a micro dataset: the schedules, resume, EMA and a 2-process gloo run."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch

from otavatar.training.decouple import DecoupleConfig, train_controller
from otavatar.weights import load_models


def _config(**kw):
    base = dict(iterations=1, batch=1, inversion_steps=2, controller_steps=1, sr_steps=1, density_points=64,
                sr_perceptual_size=32, checkpoint_every=1, preview_every=1)
    base.update(kw)
    return DecoupleConfig(**base)


def _controller_params(path):
    return torch.cat([p.flatten() for p in load_models(path).controller.parameters()])


def test_one_iteration_writes_a_resumable_run(micro_dataset, random_prior, tmp_path):
    result = train_controller(micro_dataset, random_prior, tmp_path / "run", _config(), progress=False,
                              identity_encoder=None)
    assert result.iterations == 1
    run = tmp_path / "run"
    for name in ("checkpoint.safetensors", "ema.safetensors", "extra.safetensors", "optim.pt", "state.json",
                 "metrics.jsonl", "preview/step_0000001.png"):
        assert (run / name).exists(), name
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"inversion", "refine", "pixel_lo_f0", "local_sr_f1"} <= set(row)
    # EMA 0.95: after one step the EMA sits 5% of the way from the start to the trained controller
    start = torch.cat([p.flatten() for p in _fresh_controller_like(run)])
    trained = _controller_params(run / "checkpoint.safetensors")
    ema = _controller_params(run / "ema.safetensors")
    torch.testing.assert_close(ema, start + 0.05 * (trained - start), atol=1e-6, rtol=0)

    with pytest.raises(ValueError, match="different config"):
        train_controller(micro_dataset, random_prior, run, _config(iterations=2, schedule="joint"), progress=False,
                         identity_encoder=None, resume=True)


def _fresh_controller_like(run):
    """The parameters a run's controller starts from."""
    return _fresh_controller(load_models(run / "checkpoint.safetensors").generator).parameters()


def _fresh_controller(generator, basis_scale: float = 1.0):
    """The controller train_controller builds for `generator` (seeded by config.seed)."""
    from otavatar.training.decouple import fresh_controller_for

    torch.manual_seed(0)
    return fresh_controller_for(generator.config, basis_scale=basis_scale)


@pytest.mark.parametrize("schedule, changes", [("successive", False), ("joint", True)])
def test_schedules_decide_who_learns_during_inversion(micro_dataset, random_prior, tmp_path, schedule, changes):
    # no refine and no controller steps: in 'successive' only the code moves; in 'joint' the controller too
    cfg = _config(schedule=schedule, controller_steps=0, refine=False, finetune_generator=False)
    train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    start = torch.cat([p.flatten() for p in _fresh_controller_like(tmp_path / "run")])
    trained = _controller_params(tmp_path / "run" / "checkpoint.safetensors")
    assert (not torch.equal(start, trained)) is changes


def test_frozen_generator_stays_exact_while_the_controller_learns(micro_dataset, random_prior, tmp_path):
    """finetune_generator=False: the refine step trains only the controller, so the run's generator (and its EMA
    copy) is the prior's, bit for bit, and banked codes keep meaning what they meant."""
    train_controller(micro_dataset, random_prior, tmp_path / "run", _config(finetune_generator=False),
                     progress=False, identity_encoder=None)
    prior = load_models(random_prior).generator.state_dict()
    for name in ("checkpoint.safetensors", "ema.safetensors"):
        trained = load_models(tmp_path / "run" / name).generator.state_dict()
        assert all(torch.equal(prior[k], trained[k]) for k in prior), name
    start = torch.cat([p.flatten() for p in _fresh_controller_like(tmp_path / "run")])
    assert not torch.equal(start, _controller_params(tmp_path / "run" / "checkpoint.safetensors"))


def _first_rendered_ws(generator, controller, batch, cfg, codes=None):
    """The ws that `_iteration` hands to its first loss call (the iteration is stopped there)."""
    from otavatar.training.decouple import _iteration

    seen = []

    class Stop(Exception):
        pass

    def losses(generator, ws, *args, **kw):
        seen.append(ws.detach())
        raise Stop

    opt = torch.optim.SGD(controller.parameters(), lr=0.0)
    with pytest.raises(Stop):
        _iteration(generator, controller, losses, batch, cfg, opt, opt, torch.Generator(), codes)
    return seen[0]


def _micro_batch(micro_dataset, size):
    from otavatar.training.decouple import PairSampler

    sampler = PairSampler(micro_dataset)
    try:
        return sampler.sample(size, np.random.default_rng(0))
    finally:
        sampler.close()


def test_init_codes_start_the_inversion_of_their_video(micro_dataset, random_prior):
    """With no code step (successive, every inversion step trains the controller) the rendered ws are exactly
    init code + motion for a video that has one, and w_avg + motion for one that does not."""
    from otavatar.training.decouple import _check_init_codes

    models = load_models(random_prior)
    generator, controller = models.generator, _fresh_controller(models.generator)
    batch = _micro_batch(micro_dataset, 2)
    w_dim = generator.config.w_dim
    start = torch.randn(w_dim)
    codes = _check_init_codes({batch.videos[0]: start}, w_dim)
    cfg = _config(inversion_steps=1, controller_steps=1, sr_steps=0)
    ws = _first_rendered_ws(generator, controller, batch, cfg, codes)
    with torch.no_grad():
        motion = controller(batch.windows.flatten(0, 1))
    expected = torch.stack([start, start, generator.w_avg, generator.w_avg])[:, None] + motion
    torch.testing.assert_close(ws, expected)
    with pytest.raises(ValueError, match="finite"):
        _check_init_codes({"v": torch.zeros(3)}, w_dim)


def _spy_iterations(monkeypatch):
    """Record, per `_iteration` call, the start codes it was given, its returned codes and the controller's
    parameters before the call."""
    import otavatar.training.decouple as D

    calls = []
    original = D._iteration

    def spy(generator, controller, losses, batch, config, opt_c, opt_g, dens_rng, init_codes=None, **kw):
        before = torch.cat([p.detach().flatten().clone() for p in controller.parameters()])
        out = original(generator, controller, losses, batch, config, opt_c, opt_g, dens_rng, init_codes, **kw)
        calls.append({"videos": list(batch.videos), "starts": {k: v.clone() for k, v in (init_codes or {}).items()},
                      "final": out[2].clone(), "controller": before, "config": config,
                      "images": batch.images.clone()})
        return out

    monkeypatch.setattr(D, "_iteration", spy)
    return calls


def test_persistent_codes_continue_each_videos_inversion_and_survive_resume(micro_dataset, random_prior,
                                                                              tmp_path, monkeypatch):
    from safetensors.torch import load_file

    calls = _spy_iterations(monkeypatch)
    run = tmp_path / "run"
    cfg = _config(iterations=2, batch=2, persistent_codes=True)     # 2 train subjects: both videos every time
    train_controller(micro_dataset, random_prior, run, cfg, progress=False, identity_encoder=None)
    first, second = calls
    assert first["starts"] == {}                                   # nothing banked yet: w_avg
    for i, video in enumerate(first["videos"]):
        torch.testing.assert_close(second["starts"][video], first["final"][i], atol=0, rtol=0)
    bank = {k: v for k, v in load_file(str(run / "extra.safetensors")).items() if k.startswith("code_bank.")}
    assert set(bank) == {f"code_bank.{v}" for v in second["videos"]}
    train_controller(micro_dataset, random_prior, run, replace(cfg, iterations=3), progress=False,
                     identity_encoder=None, resume=True)
    third = calls[2]
    for i, video in enumerate(second["videos"]):
        torch.testing.assert_close(third["starts"][video], second["final"][i], atol=0, rtol=0)
    # the resumed run draws new frames: it does not replay iteration 0's batch (step_streams)
    assert not torch.equal(third["images"], first["images"])


def test_without_persistent_codes_every_inversion_restarts(micro_dataset, random_prior, tmp_path, monkeypatch):
    calls = _spy_iterations(monkeypatch)
    train_controller(micro_dataset, random_prior, tmp_path / "run", _config(iterations=2, batch=2), progress=False,
                     identity_encoder=None)
    assert [c["starts"] for c in calls] == [{}, {}]


def test_fresh_controller_ignores_the_prior_files_controller(micro_dataset, random_prior, tmp_path, monkeypatch):
    from otavatar.weights import save_models

    generator = load_models(random_prior).generator
    trained = _fresh_controller(generator)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(0.5)                                            # not what a fresh controller holds
    both = tmp_path / "both.safetensors"
    save_models(both, generator=generator, controller=trained)
    calls = _spy_iterations(monkeypatch)
    for fresh, expected in ((False, trained), (True, _fresh_controller(generator))):
        train_controller(micro_dataset, both, tmp_path / f"run{fresh}", _config(), progress=False,
                         identity_encoder=None, fresh_controller=fresh)
        torch.testing.assert_close(calls[-1]["controller"],
                                   torch.cat([p.detach().flatten() for p in expected.parameters()]))


def test_sampler_draws_given_videos_and_names_unknown_ones(micro_dataset):
    from otavatar.training.decouple import PairSampler

    sampler = PairSampler(micro_dataset)
    try:
        assert sampler.videos == ["synth0000#00", "synth0001#00"]
        batch = sampler.sample_videos(["synth0001#00"], np.random.default_rng(0))
        assert batch.videos == ["synth0001#00"] and batch.images.shape[:2] == (1, 2)
        assert batch.windows.shape == (1, 2, 70, 27) and batch.cameras.shape == (1, 2, 25)
        with pytest.raises(ValueError, match="not in this split.*synth0002#00"):
            sampler.sample_videos(["synth0002#00"], np.random.default_rng(0))      # the test split's video
    finally:
        sampler.close()


@pytest.mark.parametrize("pin", [{}, {"pin_mean_windows": 4}])     # the warm-up has nothing to pin
def test_code_warm_up_banks_every_video_before_the_first_iteration(micro_dataset, random_prior, tmp_path, pin,
                                                                    monkeypatch):
    calls = _spy_iterations(monkeypatch)
    run = tmp_path / "run"
    cfg = _config(persistent_codes=True, warmup_code_steps=2, lr_code=0.005, warmup_lr_code=0.02, **pin)
    train_controller(micro_dataset, random_prior, run, cfg, progress=False, identity_encoder=None)
    *warm, first = calls
    assert {c["config"].lr_code for c in warm} == {0.02} and first["config"].lr_code == 0.005
    assert sorted(v for c in warm for v in c["videos"]) == ["synth0000#00", "synth0001#00"]   # every train video
    for c in warm:                       # code steps only: controller frozen, no refine
        assert (c["config"].inversion_steps, c["config"].controller_steps, c["config"].refine) == (2, 0, False)
        torch.testing.assert_close(c["controller"], warm[0]["controller"], atol=0, rtol=0)
    banked = {v: c["final"][i] for c in warm for i, v in enumerate(c["videos"])}
    (video,) = first["videos"]
    torch.testing.assert_close(first["starts"][video], banked[video], atol=0, rtol=0)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "warmup" in rows[0]
    with pytest.raises(ValueError, match="persistent_codes"):
        DecoupleConfig(warmup_code_steps=3)
    with pytest.raises(ValueError, match="warmup_lr_code"):
        DecoupleConfig(persistent_codes=True, warmup_code_steps=3, warmup_lr_code=0.0)


def test_code_refresh_reinverts_every_banked_code_every_n_iterations(micro_dataset, random_prior, tmp_path,
                                                                     monkeypatch):
    calls = _spy_iterations(monkeypatch)
    cfg = _config(iterations=3, persistent_codes=True, warmup_code_steps=1, lr_code=0.005, warmup_lr_code=0.02,
                  refresh_codes_every=2)
    train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    warm, it1, it2, refresh, it3 = calls       # a refresh after iteration 2 only (none after the last)
    assert refresh["config"].refine is False and refresh["config"].lr_code == 0.005    # from the bank, iteration lr
    assert sorted(refresh["videos"]) == ["synth0000#00", "synth0001#00"]
    bank = {v: warm["final"][i] for i, v in enumerate(warm["videos"])}
    for it in (it1, it2):
        bank.update({v: it["final"][i] for i, v in enumerate(it["videos"])})
    for video in refresh["videos"]:            # it continues every video from its banked code
        torch.testing.assert_close(refresh["starts"][video], bank[video], atol=0, rtol=0)
    (video,) = it3["videos"]
    refreshed = refresh["final"][refresh["videos"].index(video)]
    torch.testing.assert_close(it3["starts"][video], refreshed, atol=0, rtol=0)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "code_refresh" in r] == [2]
    with pytest.raises(ValueError, match="warmup_code_steps"):
        DecoupleConfig(persistent_codes=True, refresh_codes_every=5)


def test_pin_neutral_keeps_the_neutral_motion_at_zero(micro_dataset, random_prior, tmp_path):
    cfg = _config(iterations=2, controller_steps=1, pin_neutral=True)
    train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    for name in ("checkpoint.safetensors", "ema.safetensors"):
        controller = load_models(tmp_path / "run" / name).controller
        with torch.no_grad():
            neutral = controller(controller.neutral_window())
        assert neutral.abs().max() < 1e-6, name
        with torch.no_grad():
            assert controller(torch.randn(2, 70, 27)).abs().max() > 0          # trained, not zeroed


def test_pin_mean_keeps_the_mean_motion_over_the_reference_windows_at_zero(micro_dataset, random_prior, tmp_path):
    from otavatar.training.decouple import PairSampler

    cfg = _config(iterations=2, controller_steps=1, pin_mean_windows=8)
    train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    sampler = PairSampler(micro_dataset)
    try:        # the trainer's reference: drawn with config.seed alone
        reference = sampler.reference_windows(8, np.random.default_rng([cfg.seed, 2]))
    finally:
        sampler.close()
    assert reference.shape == (8, 70, 27)
    for name in ("checkpoint.safetensors", "ema.safetensors"):
        controller = load_models(tmp_path / "run" / name).controller
        with torch.no_grad():
            assert controller(reference).mean(0).abs().max() < 1e-6, name
            assert controller(controller.neutral_window()).abs().max() > 0     # pinned at the mean, not at 0


@pytest.mark.parametrize("schedule", ["successive", "joint"])
def test_differential_grad_teaches_the_controller_only_frame_differences(micro_dataset, random_prior, schedule):
    """differential_grad: a video whose two frames share one window gives the controller no gradient at all (the
    shared residual is the code's), through the inversion and the refine step; without it the controller learns.
    Plain SGD, no weight decay, no pinning: a parameter moves by its (clipped) gradients. (Adam would blow the
    float rounding of the removed mean, ~1e-9, up to lr-sized steps.)"""
    from otavatar.training.decouple import _iteration
    from otavatar.training.losses import LossWeights
    from otavatar.training.objective import ReconstructionLoss

    models = load_models(random_prior)
    generator = models.generator
    batch = _micro_batch(micro_dataset, 2)
    batch.windows[:, 1] = batch.windows[:, 0]            # same motion input, different images
    moved = {}
    for differential in (True, False):
        controller = _fresh_controller(generator)
        before = torch.cat([p.detach().flatten().clone() for p in controller.parameters()])
        cfg = _config(schedule=schedule, inversion_steps=2, controller_steps=1, differential_grad=differential,
                      lr_controller=1.0, finetune_generator=False)
        opt_c = torch.optim.SGD(controller.parameters(), lr=1.0)
        opt_g = torch.optim.Adam(generator.parameters(), lr=0.0)
        losses = ReconstructionLoss.from_files(generator, identity_encoder=None, weights=LossWeights(),
                                               sr_perceptual_size=32)
        values, _, _ = _iteration(generator, controller, losses, batch, cfg, opt_c, opt_g,
                                  torch.Generator().manual_seed(0))
        after = torch.cat([p.detach().flatten() for p in controller.parameters()])
        moved[differential] = float((after - before).abs().max())
        assert ("pixel_lo_f01" in values) is differential          # one refine step renders both frames
    assert moved[False] > 1e-3
    assert moved[True] < 1e-5 * moved[False]


@pytest.mark.parametrize("clamp", [5.0, None])
def test_rendered_ws_are_clamped_around_w_avg(micro_dataset, random_prior, clamp):
    """Spec 2.5: the trainer renders clamp(w + motion, w_avg - 5, w_avg + 5); clamp=None renders them as they are."""
    models = load_models(random_prior)
    generator, controller = models.generator, _fresh_controller(models.generator)
    with torch.no_grad():
        controller.mapping_Refine["10"].bias.fill_(50.0)          # an exploded controller: |motion| >> 5
    ws = _first_rendered_ws(generator, controller, _micro_batch(micro_dataset, 1), _config(clamp=clamp))
    offset = (ws - generator.w_avg).abs().max()
    assert offset <= 5.0 + 1e-5 if clamp else offset > 50


def test_spike_guard_rolls_back_a_diverging_iteration_and_halves_the_controller_lr(micro_dataset, random_prior,
                                                                                    tmp_path, monkeypatch):
    """An iteration whose loss jumps above 3x the recent median is undone: the controller, its optimiser, the EMA
    and the code bank are as they were before it; later iterations use half the controller lr, also after resume."""
    import otavatar.training.decouple as D
    from safetensors.torch import load_file

    calls = _spy_iterations(monkeypatch)
    spied = D._iteration
    diverge_at = 6                                          # 5 accepted losses first: the guard's min history

    def diverging(*args, **kw):
        values, preview, final = spied(*args, **kw)
        if len(calls) == diverge_at:
            values = {**values, "refine": 1000 * values["refine"]}
        return values, preview, final

    monkeypatch.setattr(D, "_iteration", diverging)
    run = tmp_path / "run"
    cfg = _config(iterations=7, batch=2, persistent_codes=True, lr_controller=1e-3)
    train_controller(micro_dataset, random_prior, run, cfg, progress=False, identity_encoder=None)
    before, after = calls[diverge_at - 1], calls[diverge_at]
    torch.testing.assert_close(after["controller"], before["controller"], atol=0, rtol=0)
    for video in before["videos"]:                          # the rolled-back iteration banked no code
        torch.testing.assert_close(after["starts"][video], calls[diverge_at - 2]["final"][
            calls[diverge_at - 2]["videos"].index(video)], atol=0, rtol=0)
    assert [c["config"].lr_controller for c in calls] == [1e-3] * diverge_at + [5e-4]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "rolled_back" in rows[diverge_at - 1] and "refine" not in rows[diverge_at - 1]
    assert rows[diverge_at - 1]["lr_scale"] == 0.5
    assert float(load_file(str(run / "extra.safetensors"))["spike_guard.lr_scale"]) == 0.5
    monkeypatch.setattr(D, "_iteration", spied)
    train_controller(micro_dataset, random_prior, run, replace(cfg, iterations=8), progress=False,
                     identity_encoder=None, resume=True)
    assert calls[-1]["config"].lr_controller == 5e-4


@pytest.mark.slow
def test_a_run_that_cannot_get_past_a_spike_stops_naming_the_checkpoint_to_resume(micro_dataset, random_prior,
                                                                                   tmp_path, monkeypatch):
    """Five rejections in a row stop the run; the error says which checkpoint --resume continues from."""
    import otavatar.training.decouple as D

    original = D._iteration
    calls = []

    def spiking_from_the_seventh(*args, **kw):
        calls.append(1)
        values, preview, final = original(*args, **kw)
        return ({**values, "refine": 1000 * values["refine"]} if len(calls) >= 7 else values), preview, final

    monkeypatch.setattr(D, "_iteration", spiking_from_the_seventh)
    cfg = _config(iterations=20, checkpoint_every=5, persistent_codes=True)
    # rolled-back iterations count: iteration 10's checkpoint holds the state the rollbacks restored
    with pytest.raises(FloatingPointError, match=r"in a row were rolled back.*written at iteration 10: --resume"):
        train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    assert len(calls) == 11                                  # 6 accepted, then 5 rolled back


def test_without_the_spike_guard_a_non_finite_loss_stops_the_run(micro_dataset, random_prior, tmp_path,
                                                                 monkeypatch):
    import otavatar.training.decouple as D

    original = D._iteration

    def nan_loss(*args, **kw):
        values, preview, final = original(*args, **kw)
        return {**values, "refine": math.nan}, preview, final

    monkeypatch.setattr(D, "_iteration", nan_loss)
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        train_controller(micro_dataset, random_prior, tmp_path / "run", _config(spike_guard=None), progress=False,
                         identity_encoder=None)


@pytest.mark.parametrize("schedule, inversion_local", [("successive", [10.0, 10.0, 40.0]), ("joint", [40.0] * 3)])
def test_controller_local_weight_applies_where_the_controller_learns(micro_dataset, random_prior, tmp_path,
                                                                       monkeypatch, schedule, inversion_local):
    """successive: the code steps keep the published 10, the controller step and the refine take 40; joint steps
    the controller at every step, so every loss takes 40."""
    from otavatar.training.objective import ReconstructionLoss

    seen = []
    forward = ReconstructionLoss.forward

    def spy(self, *args, weights=None, **kwargs):
        seen.append((weights or self.weights).local)
        return forward(self, *args, weights=weights, **kwargs)

    monkeypatch.setattr(ReconstructionLoss, "forward", spy)
    cfg = _config(schedule=schedule, inversion_steps=3, controller_steps=1, controller_local_weight=40.0)
    train_controller(micro_dataset, random_prior, tmp_path / "run", cfg, progress=False, identity_encoder=None)
    assert seen == inversion_local + [40.0, 40.0]              # 3 inversion steps, then one refine step per frame
    assert replace(cfg, controller_local_weight=None).controller_weights == cfg.weights


@pytest.mark.parametrize("schedule", ["successive", "joint"])
def test_controller_fresh_frames_give_each_controller_step_new_frames_of_the_same_videos(
        micro_dataset, random_prior, tmp_path, monkeypatch, schedule):
    """successive: the code step renders the batch's frames, each controller step a redraw of the same videos (one
    redraw per step), the refine the batch's frames again; the iterations' batches are those of a run without the
    option. joint has no controller-only step, so nothing is redrawn."""
    from otavatar.training.decouple import PairSampler
    from otavatar.training.objective import ReconstructionLoss

    rendered, redrawn = [], []
    forward, sample_videos = ReconstructionLoss.forward, PairSampler.sample_videos

    def spy_forward(self, generator, ws, cameras, images, *args, **kwargs):
        rendered.append(images.detach().clone())
        return forward(self, generator, ws, cameras, images, *args, **kwargs)

    def spy_sample_videos(self, videos, rng):
        batch = sample_videos(self, videos, rng)
        redrawn.append((list(videos), batch.images.flatten(0, 1).clone()))
        return batch

    monkeypatch.setattr(ReconstructionLoss, "forward", spy_forward)
    monkeypatch.setattr(PairSampler, "sample_videos", spy_sample_videos)
    calls = _spy_iterations(monkeypatch)
    cfg = _config(schedule=schedule, batch=2, inversion_steps=3, controller_steps=2, differential_grad=True,
                  finetune_generator=False)
    train_controller(micro_dataset, random_prior, tmp_path / "on", replace(cfg, controller_fresh_frames=True),
                     progress=False, identity_encoder=None)
    batch_images = calls[0]["images"].flatten(0, 1)
    assert torch.equal(rendered[0], batch_images)                       # the code step
    assert torch.equal(rendered[-1], batch_images)                      # the refine (both frames in one step)
    if schedule == "joint":
        assert redrawn == []
        assert all(torch.equal(images, batch_images) for images in rendered)
    else:
        assert [videos for videos, _ in redrawn] == [calls[0]["videos"]] * 2
        assert all(torch.equal(rendered[1 + k], images) for k, (_, images) in enumerate(redrawn))
    train_controller(micro_dataset, random_prior, tmp_path / "off", cfg, progress=False, identity_encoder=None)
    assert torch.equal(calls[1]["images"], calls[0]["images"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_matches_the_cpu_run_and_resumes_on_the_cpu(micro_dataset, random_prior, tmp_path):
    rows = {}
    for device in ("cpu", "cuda"):
        train_controller(micro_dataset, random_prior, tmp_path / device, _config(), progress=False,
                         identity_encoder=None, device=device)
        rows[device] = json.loads((tmp_path / device / "metrics.jsonl").read_text().splitlines()[0])
    # cuDNN convolutions run in TF32 by default (10-bit mantissa, ~5e-4 relative per product); 1e-2 over three
    # steps of Adam on the same draws (the density points come from a CPU generator on both devices)
    for key in ("inversion", "refine"):
        assert rows["cuda"][key] == pytest.approx(rows["cpu"][key], rel=1e-2)
    result = train_controller(micro_dataset, random_prior, tmp_path / "cuda", _config(iterations=2), progress=False,
                              identity_encoder=None, resume=True, device="cpu")
    assert result.iterations == 2 and math.isfinite(result.final_loss)


def test_basis_init_scale_shrinks_the_direction_matrix_not_the_controllers_motion(micro_dataset, random_prior,
                                                                                  tmp_path, monkeypatch):
    generator = load_models(random_prior).generator
    published, small = _fresh_controller(generator), _fresh_controller(generator, basis_scale=0.05)
    torch.testing.assert_close(small.direction.weight, 0.05 * published.direction.weight)
    windows = torch.randn(3, 70, 27)
    with torch.no_grad():                    # the QR basis is scale-free: the same motion from the same start
        torch.testing.assert_close(small(windows), published(windows), atol=1e-6, rtol=1e-5)
    # the trainer builds its fresh controller with the config's scale
    calls = _spy_iterations(monkeypatch)
    train_controller(micro_dataset, random_prior, tmp_path / "run", replace(_config(), basis_init_scale=0.05),
                     progress=False, identity_encoder=None, fresh_controller=True)
    torch.testing.assert_close(calls[0]["controller"], torch.cat([p.detach().flatten() for p in small.parameters()]))
    # a prior file's controller is not redrawn: asking for a scale there is an error, not a silent no-op
    from otavatar.weights import save_models

    both = tmp_path / "both.safetensors"
    save_models(both, generator=generator, controller=published)
    with pytest.raises(ValueError, match="fresh_controller"):
        train_controller(micro_dataset, both, tmp_path / "kept", replace(_config(), basis_init_scale=0.05),
                         progress=False, identity_encoder=None)


def test_config_validation():
    with pytest.raises(ValueError, match="schedule"):
        DecoupleConfig(schedule="alternate")
    with pytest.raises(ValueError, match="controller_steps"):
        DecoupleConfig(inversion_steps=5, controller_steps=6)
    with pytest.raises(ValueError, match="clamp"):
        DecoupleConfig(clamp=0.0)
    with pytest.raises(ValueError, match="choose one"):
        DecoupleConfig(pin_neutral=True, pin_mean_windows=8)
    with pytest.raises(ValueError, match="pin_mean_windows"):
        DecoupleConfig(pin_mean_windows=-1)
    with pytest.raises(ValueError, match="spike factor"):
        DecoupleConfig(spike_guard=0.5)
    with pytest.raises(ValueError, match="controller_local_weight"):
        DecoupleConfig(controller_local_weight=-1.0)
    with pytest.raises(ValueError, match="basis_init_scale"):
        DecoupleConfig(basis_init_scale=0.0)
    assert DecoupleConfig().identity_steps == 90          # spec 3.4: 90 + 10 of 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_keeps_replicas_identical(micro_dataset, random_prior, tmp_path):
    """Each rank draws different videos; explicit gradient all-reduce must keep the controllers equal."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SYNC)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(micro_dataset), str(random_prior),
                                       str(tmp_path / "run"), str(tmp_path / f"rank{rank}.pt")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert not torch.equal(ranks[0]["batch"], ranks[1]["batch"])          # different data per rank
    for name in ("controller", "generator"):
        torch.testing.assert_close(ranks[0][name], ranks[1][name], atol=0, rtol=0)
    assert (tmp_path / "run" / "ema.safetensors").is_file()              # rank 0 wrote the run


_WORKER_SYNC = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    import otavatar.training.decouple as D
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    data, prior, out, result = sys.argv[1:5]
    seen = []
    sample = D.PairSampler.sample
    D.PairSampler.sample = lambda self, b, rng: seen.append(sample(self, b, rng)) or seen[-1]
    captured = {}
    original = D._iteration
    def spy(generator, controller, *args, **kw):
        out = original(generator, controller, *args, **kw)
        captured["generator"] = torch.cat([p.detach().flatten() for p in generator.parameters()])
        captured["controller"] = torch.cat([p.detach().flatten() for p in controller.parameters()])
        return out
    D._iteration = spy
    cfg = D.DecoupleConfig(iterations=1, batch=1, inversion_steps=2, controller_steps=1, sr_steps=1,
                           density_points=64, sr_perceptual_size=32)
    D.train_controller(data, prior, out, cfg, progress=False, identity_encoder=None, device="cpu")   # gloo on CPUs
    torch.save({"batch": seen[0].windows, **captured}, result)
    dist.destroy_process_group()
""")
