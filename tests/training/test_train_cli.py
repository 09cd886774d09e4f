"""`otavatar train ...`: commands exist, user errors are one-line messages, a micro run goes end to end."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from otavatar.cli import main


def _run(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_commands_are_listed():
    result = _run("--help")
    assert result.exit_code == 0
    for name in ("multiview", "prior", "controller", "evaluate"):
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
