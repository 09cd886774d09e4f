"""`otavatar train ...`: commands exist, user errors are one-line messages, a micro run goes end to end."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from otavatar.cli import main


def _run(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_commands_are_listed():
    result = _run("--help")
    assert result.exit_code == 0
    for name in ("multiview", "prior", "controller", "evaluate", "compare", "ablation"):
        assert name in result.output


def test_user_errors_are_clear(tmp_path, random_prior):
    np.savez(tmp_path / "other.npz", x=np.zeros(1))
    result = _run("prior", "--multiview", str(tmp_path / "other.npz"), "--out", str(tmp_path / "run"))
    assert result.exit_code != 0 and "not a multiview set" in result.output
    result = _run("multiview", "--data", str(tmp_path), "--out", str(tmp_path / "mv.npz"))
    assert result.exit_code != 0 and "truth.npz" in result.output
    result = _run("controller", "--data", str(tmp_path), "--prior", str(tmp_path / "missing.safetensors"),
                  "--out", str(tmp_path / "c"))
    assert result.exit_code != 0 and "does not exist" in result.output
    result = _run("controller", "--data", str(tmp_path), "--prior", str(random_prior), "--out", str(tmp_path / "c"),
                  "--spike-guard", "0.5")
    assert result.exit_code != 0 and "the spike factor must be > 1, got 0.5" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c").exists()
    for command in ("prior", "controller", "evaluate"):
        result = _run(command, "--device", "tpu", "--help")       # --help still parses: only the listing
        assert result.exit_code == 0 and "--device" in result.output
    result = _run("controller", "--data", str(tmp_path), "--prior", str(random_prior), "--out", str(tmp_path / "c"),
                  "--device", "tpu")
    assert result.exit_code != 0 and "Invalid value for --device" in result.output and "got 'tpu'" in result.output
    assert not (tmp_path / "c").exists()


def test_micro_prior_run(micro_dataset, tmp_path):
    mv = tmp_path / "mv.npz"
    result = _run("multiview", "--data", str(micro_dataset), "--out", str(mv), "--frames-per-video", "1",
                  "--extra-views", "1")
    assert result.exit_code == 0, result.output
    result = _run("prior", "--multiview", str(mv), "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "1",
                  "--perceptual-weight", "0", "--no-density")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
    again = _run("prior", "--multiview", str(mv), "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "1")
    assert again.exit_code != 0 and "resume" in again.output        # never overwrites a finished run
    warm = ["prior", "--multiview", str(mv), "--out", str(tmp_path / "warm"), "--steps", "1", "--batch", "1",
            "--perceptual-weight", "0", "--no-density", "--init-generator",
            str(tmp_path / "run" / "checkpoint.safetensors"), "--generator-warmup-steps", "1",
            "--code-layout", "video+frame", "--code-optimizer", "row-adam"]
    result = _run(*warm, "--init-from", str(tmp_path / "run"))
    assert result.exit_code != 0 and "not both" in result.output and "Traceback" not in result.output
    result = _run(*warm)
    assert result.exit_code == 0, result.output
    prior_config = json.loads((tmp_path / "warm" / "config.json").read_text())["prior"]
    assert prior_config["generator_warmup_steps"] == 1 and prior_config["code_layout"] == "video+frame"

    # the controller trainer, starting each video's inversion at the prior's codes of its frames
    args = ["controller", "--data", str(micro_dataset), "--prior", str(tmp_path / "run" / "checkpoint.safetensors"),
            "--out", str(tmp_path / "ctrl"), "--iterations", "1", "--batch", "1", "--inversion-steps", "2",
            "--controller-steps", "1", "--sr-steps", "1", "--density-points", "64", "--sr-perceptual-size", "32",
            "--identity-encoder", "none", "--init-codes", str(tmp_path / "run")]
    result = _run(*args)
    assert result.exit_code != 0 and "--init-codes and --multiview go together" in result.output
    result = _run(*args, "--multiview", str(mv), "--persistent-codes", "--fresh-controller", "--warmup-code-steps",
                  "1", "--warmup-lr-code", "0.03", "--freeze-generator", "--ema", "0.99", "--spike-guard", "0",
                  "--controller-local-weight", "20", "--controller-fresh-frames", "--basis-init-scale", "0.1",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ctrl" / "ema.safetensors").is_file()
    recorded = json.loads((tmp_path / "ctrl" / "config.json").read_text())
    assert recorded["decouple"]["persistent_codes"] is True and recorded["fresh_controller"] is True
    assert recorded["decouple"]["warmup_lr_code"] == 0.03
    assert recorded["decouple"]["finetune_generator"] is False
    assert recorded["decouple"]["ema"] == 0.99
    assert recorded["decouple"]["spike_guard"] is None                   # 0 turns the guard off
    assert recorded["decouple"]["controller_local_weight"] == 20
    assert recorded["decouple"]["controller_fresh_frames"] is True
    assert recorded["decouple"]["basis_init_scale"] == 0.1
    assert "device" not in json.dumps(recorded)             # a run may be resumed on another device

    # the held-out evaluation of what the controller trainer wrote
    report = tmp_path / "report.json"
    result = _run("evaluate", "--weights", str(tmp_path / "ctrl" / "ema.safetensors"), "--data", str(micro_dataset),
                  "--steps", "1", "1", "--frames", "2", "--identity-encoder", "none", "--device", "cpu",
                  "--json-out", str(report))
    assert result.exit_code == 0, result.output
    written = json.loads(report.read_text())
    assert written["mean"]["akd"] > 0 and "AKD" in result.output
    assert written["inversion"]["optimize_intrinsics"] is True
    result = _run("evaluate", "--weights", str(tmp_path / "ctrl" / "ema.safetensors"), "--data", str(micro_dataset),
                  "--steps", "1", "0", "--frames", "1", "--pairs", "1", "--identity-encoder", "none", "--device", "cpu",
                  "--no-intrinsics", "--json-out", str(report))
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["inversion"]["optimize_intrinsics"] is False
    # among the identities training saw (the micro set's train subjects are 0 and 1), the motion halved
    result = _run("evaluate", "--weights", str(tmp_path / "ctrl" / "ema.safetensors"), "--data", str(micro_dataset),
                  "--steps", "1", "0", "--frames", "1", "--split", "train", "--subjects", "1",
                  "--motion-scale", "0.5", "--identity-encoder", "none", "--device", "cpu", "--json-out", str(report))
    assert result.exit_code == 0, result.output
    scaled = json.loads(report.read_text())
    assert [(p["source"], p["driver"]) for p in scaled["pairs"]] == [("synth0000#00", "synth0000#00")]
    assert scaled["motion_scale"] == 0.5 and "motion x0.5" in result.output
    result = _run("evaluate", "--weights", str(tmp_path / "ctrl" / "ema.safetensors"), "--data", str(micro_dataset),
                  "--mode", "static", "--motion-scale", "0.5")
    assert result.exit_code != 0 and "use it with --mode controller" in result.output


def test_package_writes_a_default_model_with_provenance(tmp_path):
    import json

    import torch

    from otavatar.models import MotionController, TriplaneGenerator
    from otavatar.weights import load_models, save_models

    torch.manual_seed(0)
    save_models(tmp_path / "ema.safetensors", generator=TriplaneGenerator.tiny(), controller=MotionController.tiny())
    (tmp_path / "info.json").write_text(json.dumps({"data": "synth"}))
    result = _run("package", "--weights", str(tmp_path / "ema.safetensors"), "--out", str(tmp_path / "d.safetensors"),
                  "--info", str(tmp_path / "info.json"))
    assert result.exit_code == 0, result.output
    assert load_models(tmp_path / "d.safetensors").metadata["provenance"] == {"data": "synth"}
    save_models(tmp_path / "g.safetensors", generator=TriplaneGenerator.tiny())
    result = _run("package", "--weights", str(tmp_path / "g.safetensors"), "--out", str(tmp_path / "x.safetensors"))
    assert result.exit_code != 0 and "needs a generator and a controller" in result.output
