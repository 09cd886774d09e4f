"""Video writers: mp4 reads back with the fps and frame count asked for; GIF timing; contact sheet; checks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from otavatar.media import contact_sheet, write_video


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """[9, 32, 48, 3]: a moving white block on a changing background (no two frames alike)."""
    out = np.zeros((9, 32, 48, 3), np.uint8)
    for i in range(len(out)):
        out[i, ..., 0] = 20 * i
        out[i, 8:20, 4 * i:4 * i + 10] = 255
    return out


@pytest.fixture(scope="module")
def ffmpeg():
    return pytest.importorskip("imageio_ffmpeg")


@pytest.mark.parametrize("fps", [30.0, 12.5])
def test_mp4_round_trip(ffmpeg, frames, tmp_path, fps):
    path = write_video(tmp_path / "clip.mp4", frames, fps=fps)
    reader = ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = np.stack([np.frombuffer(b, np.uint8).reshape(32, 48, 3) for b in reader])
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == pytest.approx(fps) and meta["size"] == (48, 32)
    assert len(decoded) == len(frames)
    assert np.abs(decoded.astype(int) - frames).mean() < 6      # CRF 18 on flat colours: mean error ~1
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left behind


def test_mp4_odd_size_is_padded_to_even(ffmpeg, frames, tmp_path):
    path = write_video(tmp_path / "odd.mp4", frames[:3, :31, :47], fps=10, quality=0)
    meta = next(ffmpeg.read_frames(str(path)))
    assert meta["size"] == (48, 32)


def test_gif_loops_with_the_requested_rate(frames, tmp_path):
    path = write_video(tmp_path / "clip.gif", frames, fps=30)
    with Image.open(path) as gif:
        assert gif.n_frames == len(frames) and gif.info.get("loop") == 0
        delays = []
        for i in range(gif.n_frames):
            gif.seek(i)
            delays.append(gif.info["duration"])
            assert np.abs(np.asarray(gif.convert("RGB"), int) - frames[i]).max() <= 8
    assert sum(delays) == 300 and set(delays) == {30, 40}       # 9 frames at 30 fps = 0.3 s exactly
    with pytest.raises(ValueError, match="50"):
        write_video(tmp_path / "fast.gif", frames, fps=60)
    assert not (tmp_path / "fast.gif").exists()


def test_png_contact_sheet(frames, tmp_path):
    sheet = contact_sheet(frames)                              # 9 frames -> 3x3
    assert sheet.shape == (96, 144, 3)
    assert np.array_equal(sheet[32:64, 48:96], frames[4])
    gapped = contact_sheet(frames[:5], columns=2, gap=2)       # 3 rows, last tile empty (white)
    assert gapped.shape == (3 * 32 + 4, 2 * 48 + 2, 3)
    assert (gapped[68:, 50:] == 255).all()
    path = write_video(tmp_path / "sheet.png", frames, columns=9)
    assert np.array_equal(np.asarray(Image.open(path)), contact_sheet(frames, 9))


def test_validation(frames, tmp_path):
    for bad in (0, -1, float("nan"), float("inf"), "fast"):
        with pytest.raises(ValueError, match="fps"):
            write_video(tmp_path / "x.gif", frames, fps=bad)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.gif", frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[T,H,W,3\]"):
        write_video(tmp_path / "x.gif", frames[..., :2])
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "x.avi", frames)
    with pytest.raises(ValueError, match="mp4 only"):
        write_video(tmp_path / "x.gif", frames, quality=20)
    with pytest.raises(ValueError, match="CRF"):
        write_video(tmp_path / "x.mp4", frames, quality=99)
    assert list(tmp_path.iterdir()) == []
