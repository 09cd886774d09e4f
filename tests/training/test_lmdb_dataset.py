"""otavatar.training.LmdbDataset: reads the OTAvatar LMDB layout written by `otavatar synth` (and the published
preprocessing): every key round-trips, cameras/coefficients agree with the rendered Clip, errors are clear."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb")
pytest.importorskip("torch")

from otavatar import synthetic as S  # noqa: E402
from otavatar.camera import camera_from_pose, validate_camera  # noqa: E402
from otavatar.synthetic.dataset import KEYPOINT_SIZE, identity_vector, write_dataset  # noqa: E402
from otavatar.training import LmdbDataset, LmdbLayoutError, person_id  # noqa: E402

RES, FRAMES = 48, 4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("lmdb") / "ds"
    write_dataset(out, subjects=2, videos_per_subject=1, frames=FRAMES, resolution=RES, seed=11, progress=False)
    return out


@pytest.fixture(scope="module")
def clips(root):
    truth = np.load(root / "truth.npz")
    out = {}
    for i, v in enumerate(truth["videos"]):
        who = S.Identity.sample(int(truth["identity_seed"][truth["subject"][i]]))
        out[str(v)] = S.render(who, S.talking_motion(seed=int(truth["video_seed"][i]), frames=FRAMES), RES)
    return out


def test_lists_and_lengths(root):
    with LmdbDataset(root) as ds:
        assert ds.train == ["synth0000#00"] and ds.test == ["synth0001#00"] and len(ds) == 2
        assert ds.num_videos == 2 and ds.lmdb_dir == root / str(RES)
        assert all(ds.length(v) == FRAMES for v in ds.videos)
        assert ds.persons() == ["synth0000", "synth0001"] and ds.persons("test") == ["synth0001"]
        assert "1 train / 1 test" in repr(ds)
    assert person_id("WDA_BarackObama_000") == "WDA_BarackObama_000" and person_id("a#b#c") == "a"


def test_round_trip_every_key(root, clips):
    truth = np.load(root / "truth.npz")
    with LmdbDataset(root / str(RES)) as ds:                        # the LMDB folder itself works too
        assert ds.videos == list(clips)
        for i, (v, clip) in enumerate(clips.items()):
            imgs = ds.frames(v)
            assert imgs.shape == (FRAMES, RES, RES, 3) and imgs.dtype == np.uint8
            assert np.abs(imgs.astype(int) - clip.images).mean() < 4
            np.testing.assert_array_equal(ds.frame(v, 2), imgs[2])
            assert ds.frame_bytes(v, 0)[:2] == b"\xff\xd8"           # JPEG SOI
            np.testing.assert_allclose(ds.keypoints(v), clip.landmarks * (KEYPOINT_SIZE / RES), atol=2e-3)
            np.testing.assert_allclose(ds.keypoints(v, resolution=RES), clip.landmarks, atol=1e-3)
            assert ds.coeffs(v).shape == (FRAMES, 260)
            np.testing.assert_allclose(ds.controller_input(v), clip.coeffs, atol=1e-6)
            cond = ds.condition(v)
            np.testing.assert_array_equal(cond[:, :3], clip.motion.angles)
            np.testing.assert_array_equal(cond[:, 3:6], clip.motion.translation)
            np.testing.assert_allclose(ds.cameras(v), clip.cameras, atol=1e-6)
            exact = ds.cameras_from_condition(v, smooth=False, radius=2.7)   # the render's convention
            np.testing.assert_allclose(exact, clip.cameras, atol=1e-5)
            published = ds.cameras_from_condition(v)                   # spec 3.2 as in training
            validate_camera(published, batch=FRAMES)
            np.testing.assert_allclose(published, camera_from_pose(cond[:, :3], cond[:, 3:6], focal=cond[:, 6]),
                                       atol=1e-6)
            np.testing.assert_allclose(ds.identity(v), identity_vector(clip.identity).astype(np.float32))
            np.testing.assert_allclose(truth["cameras"][i], ds.cameras(v), atol=1e-6)


def test_without_camera_key_cameras_come_from_condition(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    env = lmdb.open(str(copy / str(RES)))
    with env.begin(write=True) as txn:
        assert txn.delete(b"synth0000#00-camera")
    env.close()
    with LmdbDataset(copy) as ds:
        np.testing.assert_allclose(ds.cameras("synth0000#00"), ds.cameras_from_condition("synth0000#00"))


def test_without_lists_videos_are_scanned(root, tmp_path):
    copy = tmp_path / "nolists"
    shutil.copytree(root, copy)
    (copy / "train_list.txt").unlink()
    (copy / "test_list.txt").unlink()
    with LmdbDataset(copy) as ds:
        assert ds.train == ["synth0000#00", "synth0001#00"] and ds.test == []


def test_clear_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset folder"):
        LmdbDataset(tmp_path / "nowhere")
    with pytest.raises(LmdbLayoutError, match="one resolution folder"):
        LmdbDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no LMDB"):
        LmdbDataset(root, resolution=512)
    with LmdbDataset(root, resolution=RES) as ds:
        with pytest.raises(LmdbLayoutError, match="key 'nobody-length' is missing"):
            ds.length("nobody")
        with pytest.raises(IndexError, match=r"frame 4 out of range \[0, 4\)"):
            ds.frame("synth0000#00", 4)
        assert ds.has_key("length") and not ds.has_key("nobody-keypoint")
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    env = lmdb.open(str(bad / str(RES)))
    with env.begin(write=True) as txn:
        txn.put(b"synth0000#00-coeff_3dmm", np.zeros((FRAMES, 257), np.float32).tobytes())
        txn.put(b"synth0001#00-length", b"four")
        txn.delete(b"synth0000#00-keypoint")
    env.close()
    with LmdbDataset(bad) as ds:
        with pytest.raises(LmdbLayoutError, match=r"coeff_3dmm' holds .* not \[4,260\] float32"):
            ds.coeffs("synth0000#00")
        with pytest.raises(LmdbLayoutError, match="decimal integer"):
            ds.length("synth0001#00")
        with pytest.raises(LmdbLayoutError, match="'synth0000#00-keypoint' is missing"):
            ds.keypoints("synth0000#00")
    ds.close()
    with pytest.raises(ValueError, match="closed"):
        ds.length("synth0000#00")


def test_reader_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, otavatar.training; import otavatar.training.lmdb_dataset; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
