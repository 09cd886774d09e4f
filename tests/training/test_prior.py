"""The auto-decoder prior: a few steps lower nothing to NaN, checkpoint, resume and warm start work."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from otavatar.training.losses import LossWeights
from otavatar.training.multiview import render_multiview
from otavatar.training.prior import PriorConfig, train_prior
from otavatar.weights import load_models


@pytest.fixture(scope="module")
def views(micro_dataset):
    return render_multiview(micro_dataset / "truth.npz", frames_per_video=2, extra_views=1, resolution=128,
                            progress=False)


def _config(steps, **kw):
    kw.setdefault("losses", LossWeights(monotonic=1.0, tv=1.0))
    return PriorConfig(steps=steps, batch=2, views=2, checkpoint_every=2, preview_every=2, log_every=1,
                       perceptual_layers=("relu1_1", "relu2_1"), **kw)


def test_steps_checkpoint_and_resume(views, tmp_path):
    first = train_prior(views, tmp_path / "run", _config(2), progress=False)
    assert first.steps == 2 and torch.isfinite(torch.tensor(first.final_loss))
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"pixel_lo", "pixel_sr", "local_lo", "local_sr", "percep_lo", "percep_sr", "monotonic", "tv"} <= set(rows[0])
    assert rows[0]["local_lo"] > 0 and rows[0]["local_sr"] > 0      # the mouth/eye term compares real crops
    assert (tmp_path / "run" / "preview" / "step_0000002.png").is_file()
    # w_avg is the mean code: the start of every inversion
    codes = load_file(str(tmp_path / "run" / "extra.safetensors"))["codes"]
    saved = load_models(tmp_path / "run" / "checkpoint.safetensors").generator
    torch.testing.assert_close(saved.w_avg, codes.mean(0))

    with pytest.raises(ValueError, match="lr_codes"):               # a model setting differs: refused
        train_prior(views, tmp_path / "run", _config(3, lr_codes=0.5), progress=False, resume=True)
    extended = train_prior(views, tmp_path / "run", _config(3), progress=False, resume=True)
    assert extended.steps == 3                                       # more steps: the run is extended by one
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_continues_where_it_stopped(views, tmp_path):
    cfg = _config(4, max_minutes=0.0)        # stops (and checkpoints) after the first step
    stopped = train_prior(views, tmp_path / "run", cfg, progress=False)
    assert stopped.steps == 1
    done = train_prior(views, tmp_path / "run", cfg, progress=False, resume=True)
    assert done.steps == 2                   # resumed at step 1, stopped again after one more step


def test_warm_start_copies_generator_and_codes(views, tmp_path):
    first = train_prior(views, tmp_path / "a", _config(2), progress=False)
    cfg = _config(1, losses=LossWeights(perceptual=0.0, monotonic=0.0, tv=0.0, local=0.0))
    warm = train_prior(views, tmp_path / "b", cfg, progress=False, init_from=tmp_path / "a")
    assert warm.steps == 1
    row = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert "local_lo" not in row and "percep_lo" not in row          # weight 0: the term is not computed
    # one step of Adam moves each code by at most ~lr from the warm start
    assert (warm.codes - first.codes).abs().max() < 2 * cfg.lr_codes
    rows = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert "percep_lo" not in rows[0]        # a zero weight skips the VGG pass


def test_generator_warm_start_and_frozen_first_steps(views, tmp_path):
    train_prior(views, tmp_path / "a", _config(1), progress=False)
    start = load_models(tmp_path / "a" / "checkpoint.safetensors").generator.state_dict()
    weights = tmp_path / "a" / "checkpoint.safetensors"
    cfg = _config(1, generator_warmup_steps=1, code_layout="video+frame", code_optimizer="row-adam")
    frozen = train_prior(views, tmp_path / "b", cfg, progress=False, init_generator=weights)
    # the warm-up stepped only the codes: every generator weight is the file's (w_avg is the new mean code)
    for name, value in frozen.generator.state_dict().items():
        if not name.endswith("w_avg"):
            torch.testing.assert_close(value, start[name], msg=name)
    torch.testing.assert_close(frozen.generator.w_avg, frozen.codes.mean(0))
    moved = train_prior(views, tmp_path / "c", replace(cfg, steps=2), progress=False, init_generator=weights)
    assert any(not torch.equal(value, start[name]) for name, value in moved.generator.state_dict().items()
               if not name.endswith("w_avg"))                        # after the warm-up the generator trains
    with pytest.raises(ValueError, match="not both"):
        train_prior(views, tmp_path / "d", cfg, progress=False, init_generator=weights, init_from=tmp_path / "a")
    with pytest.raises(ValueError, match="not the 'official' preset"):   # refused before a run folder is made
        train_prior(views, tmp_path / "e", replace(cfg, preset="official"), progress=False, init_generator=weights)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("code_optimizer", ["adam", "row-adam"])
def test_video_layout_shares_each_video_code_and_resumes(views, tmp_path, code_optimizer):
    cfg = _config(2, code_layout="video+frame", code_optimizer=code_optimizer)
    first = train_prior(views, tmp_path / "run", cfg, progress=False)
    extra = load_file(str(tmp_path / "run" / "extra.safetensors"))
    videos = sorted(set(views.video.tolist()))
    assert extra["video_codes"].shape == (len(videos), first.codes.shape[1])
    assert extra["frame_offsets"].shape == first.codes.shape
    # a frame's code is its video's code plus its own offset, and the composed codes are what the prior reports
    index = torch.as_tensor([videos.index(v) for v in views.video.tolist()])
    torch.testing.assert_close(extra["codes"], extra["video_codes"][index] + extra["frame_offsets"])
    torch.testing.assert_close(first.codes, extra["codes"])
    # offsets start at 0 and move only when their frame is drawn: 2 steps x 2 frames move at most 4 of them
    assert 0 < int((extra["frame_offsets"].abs().sum(1) > 0).sum()) <= 4
    # resuming restores the code optimiser's state (RowAdam's per-row step counts: tests/training/test_row_adam.py)
    resumed = train_prior(views, tmp_path / "run", replace(cfg, steps=3), progress=False, resume=True)
    assert resumed.steps == 3
    # a warm start from the other layout is refused by name, not silently reshaped
    with pytest.raises(ValueError, match="layout"):
        train_prior(views, tmp_path / "b", _config(1), progress=False, init_from=tmp_path / "run")


def test_bad_config_and_data(views, tmp_path):
    with pytest.raises(ValueError, match="preset"):
        PriorConfig(preset="huge")
    with pytest.raises(ValueError, match="code_layout"):
        PriorConfig(code_layout="subject")
    with pytest.raises(ValueError, match="code_optimizer"):
        PriorConfig(code_optimizer="sgd")
    with pytest.raises(ValueError, match="generator_warmup_steps"):
        PriorConfig(generator_warmup_steps=-1)
    with pytest.raises(ValueError, match="views"):
        train_prior(views, tmp_path / "r", PriorConfig(views=5), progress=False)


def test_identity_codes_are_the_mean_code_of_each_video(views, micro_dataset, tmp_path):
    import numpy as np

    from otavatar.training.prior import prior_identity_codes

    train_prior(views, tmp_path / "run", _config(1), progress=False)
    codes = load_file(str(tmp_path / "run" / "extra.safetensors"))["codes"]
    names = [str(v) for v in np.load(micro_dataset / "truth.npz")["videos"]]
    got = prior_identity_codes(tmp_path / "run", views, micro_dataset / "truth.npz")
    assert sorted(got) == sorted(names[v] for v in set(views.video.tolist()))
    for v in set(views.video.tolist()):
        torch.testing.assert_close(got[names[v]], codes[torch.from_numpy(views.video == v)].mean(0))
    with pytest.raises(ValueError, match="not a prior run"):
        prior_identity_codes(tmp_path, views, micro_dataset / "truth.npz")
    with pytest.raises(ValueError, match="truth.npz"):
        prior_identity_codes(tmp_path / "run", views, tmp_path / "truth.npz")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prior_trains_on_cuda_and_resumes_on_the_cpu(views, tmp_path):
    first = train_prior(views, tmp_path / "run", _config(2), progress=False, device="cuda")
    assert first.codes.device.type == "cuda" and torch.isfinite(torch.tensor(first.final_loss))
    again = train_prior(views, tmp_path / "run", _config(4), progress=False, resume=True, device="cpu")
    assert again.steps == 4 and again.codes.device.type == "cpu"
