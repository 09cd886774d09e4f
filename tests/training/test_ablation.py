"""The ablation runner: its plan, the job runner (skip, resume, failures), the across-seed summary and the CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from otavatar.cli import main
from otavatar.synthetic import CONTROLS
from otavatar.training.ablation import AblationPlan, Job, _resumed, plan_jobs, run_jobs, summarise


def _plan(tmp_path, **kw) -> AblationPlan:
    args = {"data": tmp_path / "synth", "out": tmp_path / "out", "prior": tmp_path / "prior.safetensors",
            "seeds": (0, 1, 2), "heldout": (tmp_path / "heldout-s1",), "train_args": ("--batch", "8"),
            "eval_args": ("--steps", "30", "30"), "max_minutes": 5.0} | kw
    return AblationPlan(**args)


@pytest.mark.parametrize(("kw", "match"), [
    ({"seeds": (0,)}, "at least 2 seeds"),
    ({"seeds": (1, 1)}, "seeds must differ"),
    ({"train_args": ("--seed", "3")}, r"train_args must not set \['--seed'\]"),
    ({"eval_args": ("--json-out=x.json",)}, r"eval_args must not set \['--json-out'\]"),
    ({"criteria": ("akd", "speed")}, "criteria must be metrics"),
    ({"max_minutes": 0.0}, "max_minutes must be > 0"),
])
def test_plan_refuses_what_would_break_the_comparison(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _plan(tmp_path, **kw)


def test_plan_refuses_two_sets_of_one_name(tmp_path):
    with pytest.raises(ValueError, match="distinct folder names"):          # reports are filed by the name
        _plan(tmp_path, heldout=(tmp_path / "other" / "synth",))


def test_jobs_pair_the_schedules_per_seed_and_score_three_models_per_set(tmp_path):
    plan = _plan(tmp_path)
    train, evaluate = plan_jobs(plan)
    assert [j.name for j in train] == [f"train-{s}-s{k}" for k in (0, 1, 2) for s in ("successive", "joint")]
    for job in train:
        argv = job.argv[job.argv.index("controller") + 1:]
        assert argv[argv.index("--batch") + 1] == "8"              # the recipe, the same for both schedules
        assert argv[argv.index("--schedule") + 1] in ("successive", "joint")
        assert job.output == job.run_dir / "ema.safetensors"
    assert len(evaluate) == 2 * 3 * 3                              # sets x seeds x (a, b, c)
    static = next(j for j in evaluate if j.name == "eval-heldout-s1-static-s2")
    assert "--mode" in static.argv and str(plan.run_dir("successive", 2) / "ema.safetensors") in static.argv
    assert static.output == tmp_path / "out" / "reports" / "heldout-s1" / "static-s2.json"
    assert all(j.argv[-4:] == ("--device", "auto", "--threads", "1") for j in train + evaluate)


def test_a_frozen_generator_scores_the_static_identity_once_per_set(tmp_path):
    plan = _plan(tmp_path, train_args=("--freeze-generator",))
    _, evaluate = plan_jobs(plan)
    static = [j for j in evaluate if "--mode" in j.argv]
    assert len(evaluate) == 2 * (3 * 2 + 1) and len(static) == 2
    assert all(j.argv[j.argv.index("--weights") + 1] == str(plan.prior) for j in static)
    assert {plan.report(plan.sets[0], "static", seed) for seed in plan.seeds} == {static[0].output}


def test_a_stopped_run_resumes_within_its_budget(tmp_path):
    run = tmp_path / "run"
    job = Job("train-x", (sys.executable, "-m", "otavatar.cli", "train", "controller"), run / "ema.safetensors", run)
    assert _resumed(job, 5.0)[-2:] == ("--max-minutes", "5")
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"step": 40, "seconds": 120.0}))
    assert _resumed(job, 5.0)[-3:] == ("--resume", "--max-minutes", "5")      # the trainer counts from its start
    (run / "state.json").write_text(json.dumps({"step": 99, "seconds": 300.0}))
    assert _resumed(job, 5.0) is None


def _writer(path: Path, code: int = 0) -> tuple[str, ...]:
    return (sys.executable, "-c", f"import pathlib, sys; pathlib.Path({str(path)!r}).write_text('x'); sys.exit({code})")


def test_runner_skips_done_jobs_and_names_every_failure(tmp_path):
    ok = Job("ok", _writer(tmp_path / "a" / "ok.txt"), tmp_path / "a" / "ok.txt")
    bad = Job("bad", _writer(tmp_path / "bad.txt", code=3), tmp_path / "bad.txt")
    silent = Job("silent", (sys.executable, "-c", "pass"), tmp_path / "never.txt")   # exits 0, makes nothing
    lines = []
    with pytest.raises(RuntimeError, match="2 job") as err:
        run_jobs([bad, ok, silent], tmp_path / "out", parallel=2, echo=lines.append)
    assert "bad (exit 3" in str(err.value) and "silent (exit 0" in str(err.value)
    assert (tmp_path / "a" / "ok.txt").exists() and (tmp_path / "out" / "done" / "ok.json").exists()
    assert not (tmp_path / "out" / "done" / "bad.json").exists()
    (tmp_path / "a" / "ok.txt").unlink()
    lines.clear()
    run_jobs([ok], tmp_path / "out", parallel=1, echo=lines.append)
    assert lines == ["skip ok (done)"] and not (tmp_path / "a" / "ok.txt").exists()


def _report(akd_detected, aed_detected):
    pairs = [{"source": f"s{i}", "driver": f"d{i}", "frames": 32, "psnr": 20.0, "ssim": 0.75, "akd": 4.0,
              "aed": 0.1, "aed_controls": [0.1] * len(CONTROLS), "akd_detected": k, "aed_detected": e,
              "akd_detected_landmarks": [k] * 68, "aed_detected_controls": [e] * len(CONTROLS)}
             for i, (k, e) in enumerate(zip(akd_detected, aed_detected))]
    return {"frames": 32, "resolution": 128, "pairs": pairs, "readable_controls": ["jaw_open"]}


def _write_reports(plan: AblationPlan, offsets: dict[str, float]) -> None:
    """Per kind, every pair's scores are a shared difficulty plus the kind's offset plus a little seed noise."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(3.0, 5.0, 10)
    for dataset in plan.sets:
        for seed in plan.seeds:
            for kind, offset in offsets.items():
                noise = rng.normal(0, 0.002, 10)
                path = plan.report(dataset, kind, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(_report(difficulty + offset + noise, 0.1 + offset / 10 + noise / 10)))


def test_summary_meets_the_done_when_only_when_a_beats_b_and_c_on_every_set(tmp_path):
    plan = _plan(tmp_path)
    _write_reports(plan, {"successive": -0.2, "joint": -0.1, "static": 0.0})
    summary = summarise(plan)
    assert summary.done_when == {"synth": True, "heldout-s1": True} and summary.met
    means = summary.sets["synth"].means
    assert means["successive"]["akd_detected"] < means["joint"]["akd_detected"] < means["static"]["akd_detected"]
    row = summary.sets["heldout-s1"].tests["a_vs_b"]["akd_detected"]
    assert row.verdict == "A better" and len(row.per_seed) == 3 and row.per_seed[0] == pytest.approx(-0.1, abs=0.01)
    assert "Done-when met" in summary.markdown() and json.dumps(summary.to_dict())
    _write_reports(plan, {"successive": -0.1, "joint": -0.2, "static": 0.0})        # the ablation is better
    summary = summarise(plan)
    assert summary.done_when == {"synth": False, "heldout-s1": False} and not summary.met
    assert summary.to_dict()["sets"]["synth"]["tests"]["a_vs_b"]["aed_detected"]["verdict"] == "B better"
    assert summary.sets["synth"].tests["a_vs_c"]["aed_detected"].verdict == "A better"
    assert "Done-when not met" in summary.markdown()
    plan.report(plan.sets[1], "static", 2).unlink()
    with pytest.raises(FileNotFoundError, match="static-s2.json: missing report"):
        summarise(plan)


def test_a_lead_the_seeds_agree_on_but_the_pairs_do_not_is_not_met(tmp_path):
    """Every seed sees the same pairs: a pair-specific difference repeated in every seed passes the across-seed t
    test, so the done-when also asks for it over the pairs (seeds averaged)."""
    plan = _plan(tmp_path)
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(3.0, 5.0, 10)
    scatter = rng.normal(0, 0.3, 10)                # the successive model's pair-by-pair difference, every seed
    scatter -= scatter.mean() + 0.02                # mean lead 0.02, far inside the pairs' noise
    offsets = {"successive": scatter, "joint": np.zeros(10), "static": np.full(10, 0.1)}
    for dataset in plan.sets:
        for seed in plan.seeds:
            for kind, offset in offsets.items():
                noise = rng.normal(0, 1e-4, 10)
                path = plan.report(dataset, kind, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                scores = difficulty + offset + noise
                path.write_text(json.dumps(_report(scores, 0.1 + scores / 100)))
    summary = summarise(plan)
    entry = summary.sets["synth"]
    assert entry.tests["a_vs_b"]["akd_detected"].verdict == "A better"
    assert entry.pairs["a_vs_b"]["akd_detected"].verdict == "within noise"
    assert entry.pairs["a_vs_b"]["akd_detected"].difference == pytest.approx(-0.02, abs=1e-3)
    assert not summary.met and summary.done_when == {"synth": False, "heldout-s1": False}
    assert "over the pairs, seeds averaged" in summary.markdown()
    assert summary.to_dict()["sets"]["synth"]["pairs"]["a_vs_b"]["akd_detected"]["verdict"] == "within noise"


def test_cli_errors_name_the_problem(tmp_path, micro_dataset, random_prior):
    base = ["train", "ablation", "--data", str(micro_dataset), "--prior", str(random_prior), "--out",
            str(tmp_path / "out"), "--max-minutes", "1"]
    result = CliRunner().invoke(main, [*base, "--seeds", "0"])
    assert result.exit_code != 0 and "at least 2 seeds" in result.output
    result = CliRunner().invoke(main, [*base, "--seeds", "0,x"])
    assert result.exit_code != 0 and "expected integers joined by commas" in result.output
    result = CliRunner().invoke(main, [*base, "--", "--schedule", "joint"])
    assert result.exit_code != 0 and "train_args must not set ['--schedule']" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_micro_ablation_end_to_end(tmp_path, micro_dataset, random_prior):
    """Two seeds of a micro recipe through real subprocesses: runs, nine reports per set, the summary; a rerun
    skips every job."""
    args = ["train", "ablation", "--data", str(micro_dataset), "--prior", str(random_prior), "--out",
            str(tmp_path / "out"), "--seeds", "0,1", "--max-minutes", "1", "--jobs", "2", "--device", "cpu",
            "--eval-args", "--steps 1 1 --frames 2", "--", "--iterations", "1", "--batch", "1",
            "--inversion-steps", "2", "--controller-steps", "1", "--sr-steps", "1", "--density-points", "64",
            "--sr-perceptual-size", "16", "--identity-encoder", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert len(list((out / "reports" / micro_dataset.name).glob("*.json"))) == 6          # 2 seeds x (a, b, c)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["sets"]) == {micro_dataset.name}
    assert summary["training"]["joint-s1"]["iterations"] == 1
    assert "across seeds" in (out / "summary.md").read_text()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and result.output.count("(done)") == 10
