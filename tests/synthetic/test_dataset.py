"""SynthHeads dataset writer: the published OTAvatar LMDB layout (spec 3.1), ground truth, safety, CLI."""
from __future__ import annotations

import io

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb")
pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from otavatar import synthetic as S  # noqa: E402
from otavatar.cli import main  # noqa: E402
from otavatar.coeffs import ANGLE, EXP, TRANS  # noqa: E402
from otavatar.synthetic.dataset import (  # noqa: E402
    KEYPOINT_SIZE, identity_fields, identity_vector, video_name, write_dataset,
)

RES, FRAMES = 32, 4


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = write_dataset(out, subjects=2, videos_per_subject=2, frames=FRAMES, resolution=RES, seed=3,
                            progress=False, chunk_frames=3)          # 3 does not divide 4: chunk seams
    return out, summary


def _raw(out):
    env = lmdb.open(str(out / str(RES)), readonly=True, lock=False)
    with env.begin() as txn:
        items = {k.decode(): v for k, v in txn.cursor()}
    env.close()
    return items


def test_layout_and_every_key(written):
    out, summary = written
    assert sorted(p.name for p in out.iterdir()) == [str(RES), "test_list.txt", "train_list.txt", "truth.npz"]
    names = [video_name(s, v) for s in range(2) for v in range(2)]
    assert (out / "train_list.txt").read_text().split() == names[:2]
    assert (out / "test_list.txt").read_text().split() == names[2:]
    assert summary.train == tuple(names[:2]) and summary.test == tuple(names[2:]) and summary.videos == 4
    items = _raw(out)
    per_video = ["length", "keypoint", "coeff_3dmm", "condition", "id", "camera"]
    per_video += [f"{i:07d}" for i in range(FRAMES)]
    assert set(items) == {"length"} | {f"{v}-{k}" for v in names for k in per_video}
    assert items["length"] == b"4"
    for v in names:
        assert items[f"{v}-length"] == b"0000004"
        assert len(items[f"{v}-keypoint"]) == FRAMES * 68 * 2 * 4
        assert len(items[f"{v}-coeff_3dmm"]) == FRAMES * 260 * 4
        assert len(items[f"{v}-condition"]) == FRAMES * 7 * 4
        assert len(items[f"{v}-camera"]) == FRAMES * 25 * 4
        assert len(items[f"{v}-id"]) == len(identity_fields()) * 4
        with Image.open(io.BytesIO(items[f"{v}-0000000"])) as im:
            assert im.format == "JPEG" and im.size == (RES, RES) and im.mode == "RGB"


def test_values_match_a_direct_render(written):
    """Video 1 of subject 0 re-rendered in one go equals what was written (coeff offsets, condition, cameras,
    keypoints in 512-px coordinates, JPEG frames) and what truth.npz says."""
    out, _ = written
    truth = np.load(out / "truth.npz")
    i = 1
    who = S.Identity.sample(int(truth["identity_seed"][0]))
    motion = S.talking_motion(seed=int(truth["video_seed"][i]), frames=FRAMES)
    clip = S.render(who, motion, resolution=RES)
    items = _raw(out)
    v = video_name(0, 1)
    coeff = np.frombuffer(items[f"{v}-coeff_3dmm"], "<f4").reshape(FRAMES, 260)
    np.testing.assert_allclose(coeff[:, EXP], clip.coeffs[:, :64], atol=1e-6)
    np.testing.assert_array_equal(coeff[:, ANGLE], clip.coeffs[:, 64:67])
    np.testing.assert_array_equal(coeff[:, TRANS], clip.coeffs[:, 67:70])
    rest = np.ones(260, bool)
    rest[EXP] = rest[ANGLE] = rest[TRANS] = False
    assert not coeff[:, rest].any()                                      # documented fill: zeros
    cond = np.frombuffer(items[f"{v}-condition"], "<f4").reshape(FRAMES, 7)
    np.testing.assert_array_equal(cond[:, :3], motion.angles)
    np.testing.assert_array_equal(cond[:, 3:6], motion.translation)
    assert (cond[:, 6] == S.TRACKER_FOCAL).all()
    cams = np.frombuffer(items[f"{v}-camera"], "<f4").reshape(FRAMES, 25)
    np.testing.assert_allclose(cams, clip.cameras, atol=1e-6)
    kp = np.frombuffer(items[f"{v}-keypoint"], "<f4").reshape(FRAMES, 68, 2)
    np.testing.assert_allclose(kp, clip.landmarks * (KEYPOINT_SIZE / RES), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.frombuffer(items[f"{v}-id"], "<f4"), identity_vector(who), rtol=1e-6)
    for f in range(FRAMES):
        img = np.asarray(Image.open(io.BytesIO(items[f"{v}-{f:07d}"])).convert("RGB")).astype(int)
        assert np.abs(img - clip.images[f]).mean() < 4                 # JPEG q95
    # truth.npz
    assert list(truth["videos"]) == [video_name(s, k) for s in range(2) for k in range(2)]
    assert list(truth["split"]) == ["train", "train", "test", "test"]
    assert list(truth["subject"]) == [0, 0, 1, 1]
    assert list(truth["control_names"]) == list(S.CONTROLS)
    np.testing.assert_array_equal(truth["controls"][i], motion.controls)
    np.testing.assert_allclose(truth["exp"][i], motion.exp(), atol=1e-6)
    np.testing.assert_array_equal(truth["angles"][i], motion.angles)
    np.testing.assert_array_equal(truth["translation"][i], motion.translation)
    np.testing.assert_allclose(truth["cameras"][i], clip.cameras, atol=1e-6)
    np.testing.assert_allclose(truth["landmarks"][i], clip.landmarks, atol=1e-3)
    np.testing.assert_array_equal(truth["identity_params"][0], identity_vector(who))
    assert truth["identity_params"].shape == (2, len(identity_fields()))
    np.testing.assert_allclose(S.exp_to_controls(truth["exp"][i]), motion.controls, atol=1e-5)
    assert int(truth["resolution"]) == RES and int(truth["seed"]) == 3


def test_deterministic_per_seed(tmp_path, written):
    out, _ = written
    write_dataset(tmp_path / "again", 2, 2, FRAMES, RES, seed=3, progress=False)
    assert _raw(tmp_path / "again") == _raw(out)
    write_dataset(tmp_path / "other", 2, 2, FRAMES, RES, seed=4, progress=False)
    assert _raw(tmp_path / "other")["synth0000#00-coeff_3dmm"] != _raw(out)["synth0000#00-coeff_3dmm"]


def test_refuses_to_overwrite_unless_forced(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(out, 1, 1, 1, 16, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]          # no temp folder left behind
    write_dataset(out, 1, 1, 1, 16, force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "truth.npz").is_file()
    assert (out / "test_list.txt").read_text() == ""                       # one subject: all train
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        write_dataset(tmp_path / "file", 1, 1, 1, 16, force=True, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, 1, 1, 1, 16, progress=False)                      # an empty folder is fine


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"subjects": 0}, "subjects must be an int >= 1"),
    ({"subjects": 2.5}, "subjects must be an int"),
    ({"videos_per_subject": 0}, "videos_per_subject"),
    ({"frames": 0}, "frames must be"),
    ({"frames": True}, "frames must be"),
    ({"resolution": 4}, "resolution must be"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"),
])
def test_validation(tmp_path, kwargs, match):
    args = {"subjects": 1, "videos_per_subject": 1, "frames": 1, "resolution": 16, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        write_dataset(tmp_path / "ds", progress=False, **args)
    assert not any(tmp_path.iterdir())


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--subjects", "2", "--videos-per-subject", "1", "--frames", "2",
            "--resolution", "16", "--seed", "1", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "2 videos" in r.output and " s (" in r.output and (out / "truth.npz").is_file()
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "not empty" in r.output and "--force" in r.output
    r = CliRunner().invoke(main, [*args, "--force"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*args[:-1], "--frames", "0"])
    assert r.exit_code == 2 and "--frames" in r.output


def test_device_cpu_is_the_default_render(tmp_path, written):
    out, _ = written
    write_dataset(tmp_path / "cpu", 2, 2, FRAMES, RES, seed=3, progress=False, device="cpu")
    assert _raw(tmp_path / "cpu") == _raw(out)


def test_cli_refuses_an_unknown_device(tmp_path):
    r = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "ds"), "--subjects", "1", "--frames", "1",
                                  "--resolution", "16", "--quiet", "--device", "tpu"])
    assert r.exit_code != 0 and "got 'tpu'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.gpu
def test_device_cuda_renders_the_same_dataset(tmp_path, written):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out, _ = written
    write_dataset(tmp_path / "gpu", 2, 2, FRAMES, RES, seed=3, progress=False, device="cuda")
    with np.load(out / "truth.npz") as cpu, np.load(tmp_path / "gpu" / "truth.npz") as gpu:
        np.testing.assert_allclose(gpu["landmarks"], cpu["landmarks"], atol=1e-2)
        np.testing.assert_array_equal(gpu["controls"], cpu["controls"])
    frames = [k for k in _raw(out) if k.endswith("-0000000")]
    for key in frames:                        # the same faces, up to float rounding at a few pixels' edges
        a, b = (np.asarray(Image.open(io.BytesIO(_raw(d)[key])), np.float32) for d in (out, tmp_path / "gpu"))
        assert np.abs(a - b).mean() < 2.0, key
