"""RunDir: refuses to overwrite a run, refuses a resumed run with another config, round-trips its state."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from otavatar.models import MotionController
from otavatar.training.run import RunDir, image_grid, resolve_device, step_streams, to_uint8


@dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    steps: int = 3


def _saved_run(path):
    run = RunDir(path, _Cfg())
    model = MotionController.tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(1, 70, 27)).square().mean().backward()
    opt.step()
    run.save(step=2, seconds=1.5, models={"controller": model}, extra={"codes": torch.arange(6.0).view(2, 3)},
             optimizers={"c": opt})
    return run, model, opt


def test_save_then_resume_restores_models_extra_optimizer_and_step(tmp_path):
    _, model, opt = _saved_run(tmp_path)
    fresh = torch.optim.Adam(MotionController.tiny().parameters(), lr=0.1)
    models, extra, state = RunDir(tmp_path, _Cfg(), resume=True).load({"c": fresh})
    assert state == {"step": 2, "seconds": 1.5}
    assert torch.equal(extra["codes"], torch.arange(6.0).view(2, 3))
    for a, b in zip(models.controller.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    saved = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], saved)


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    _saved_run(tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        RunDir(tmp_path, _Cfg())


def test_resume_with_another_config_is_refused_but_more_steps_are_allowed(tmp_path):
    _saved_run(tmp_path)
    with pytest.raises(ValueError, match="lr"):
        RunDir(tmp_path, _Cfg(lr=0.2), resume=True)
    RunDir(tmp_path, _Cfg(steps=10), resume=True)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 10


def test_a_setting_added_after_the_run_started_resumes_at_its_default(tmp_path):
    """An older run's config.json lacks a field added since; it ran with that field's default."""
    _saved_run(tmp_path)
    path = tmp_path / "config.json"
    old = json.loads(path.read_text())
    del old["lr"]
    path.write_text(json.dumps(old))
    RunDir(tmp_path, _Cfg(), resume=True)                     # lr at its default: the same run
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="lr"):
        RunDir(tmp_path, _Cfg(lr=0.2), resume=True)           # not the default: another run


def test_log_appends_json_lines_and_preview_writes_png(tmp_path):
    run = RunDir(tmp_path, _Cfg())
    run.log(1, {"loss": torch.tensor(0.5)})
    run.log(2, {"loss": 0.25})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["loss"] == 0.25
    images = to_uint8(torch.linspace(-1, 1, 2 * 3 * 4 * 4).view(2, 3, 4, 4))
    assert images.dtype.name == "uint8" and images.shape == (2, 4, 4, 3)
    assert images.min() == 0 and images.max() == 255
    grid = image_grid([images, to_uint8(torch.zeros(2, 3, 2, 2))])
    assert grid.shape == (8, 8, 3)
    assert run.preview(7, grid).name == "step_0000007.png"


def test_step_streams_keep_a_fresh_runs_draws_and_give_a_resumed_run_new_ones():
    def draws(streams):
        numpy_rng, torch_rng = streams
        return numpy_rng.integers(1 << 30, size=8), torch.rand(4, generator=torch_rng)

    seeded_alone = (np.random.default_rng(7), torch.Generator().manual_seed(7))
    fresh, reference = draws(step_streams(7, 0)), draws(seeded_alone)
    np.testing.assert_array_equal(fresh[0], reference[0])
    torch.testing.assert_close(fresh[1], reference[1])
    resumed = draws(step_streams(7, 50))
    assert not np.array_equal(resumed[0], reference[0]) and not torch.equal(resumed[1], reference[1])
    again = draws(step_streams(7, 50))              # reproducible: the same step resumes with the same draws
    np.testing.assert_array_equal(again[0], resumed[0])
    torch.testing.assert_close(again[1], resumed[1])


def test_resolve_device_takes_the_gpu_when_there_is_one_and_names_bad_requests(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("tpu", "gpu0", "mps"):
        with pytest.raises(ValueError, match=f"'auto', 'cpu', 'cuda' or 'cuda:N'; got '{bad}'"):
            resolve_device(bad)
