"""otavatar.motion: built-in procedural motions (numpy only)."""
from __future__ import annotations

import numpy as np
import pytest

from otavatar import motion as M
from otavatar.camera import look_at_camera
from otavatar.synthetic import CONTROLS, exp_to_controls

SMILE, JAW = CONTROLS.index("smile"), CONTROLS.index("jaw_open")


@pytest.mark.parametrize("name", M.NAMES)
def test_builtins_have_the_asked_length_and_rate(name):
    m = M.get(name)(seconds=2, fps=10)
    assert isinstance(m, M.Motion) and m.name == name
    assert m.coeffs.shape == (20, 70) and m.coeffs.dtype == np.float32 and m.fps == 10.0
    assert len(m) == m.frames == 20 and m.seconds == 2.0
    assert np.isfinite(m.coeffs).all() and np.all(m.coeffs[:, 67:70] == 0)      # no translation
    assert m.cameras().shape == (20, 25)
    np.testing.assert_array_equal(m.coeffs, M.get(name)(seconds=2, fps=10).coeffs)   # deterministic
    with pytest.raises(ValueError):                                                  # read-only
        m.coeffs[0, 0] = 1.0


def test_seeds_change_the_talk():
    a, b = M.talk(seconds=2, seed=0), M.talk(seconds=2, seed=1)
    assert not np.array_equal(a.coeffs, b.coeffs)


def test_expressions_mean_what_they_say():
    talk = exp_to_controls(M.talk(seconds=4).coeffs)
    assert talk[:, JAW].max() > 0.3 and np.ptp(talk[:, JAW]) > 0.3                  # the jaw moves
    smile = exp_to_controls(M.smile(seconds=2, fps=10).coeffs)
    assert smile[10, SMILE] == pytest.approx(1.0, abs=1e-3) and smile[0, SMILE] == pytest.approx(0, abs=1e-3)
    nod = M.nod(seconds=2, fps=25).coeffs
    assert np.abs(nod[:, 64]).max() > 0.1 and np.all(nod[:, 65:67] == 0)              # pitch only
    look = M.look_around(seconds=4, fps=25).coeffs
    assert np.abs(look[:, 65]).max() == pytest.approx(0.4, abs=0.01)                 # yaw sweep


def test_driver_cameras_follow_the_head():
    still = M.nod(seconds=0.04, fps=25)                                               # one frame at rest
    # camera_from_pose's tracker offsets put the frontal camera 0.014 above look_at_camera's (camera.py)
    np.testing.assert_allclose(still.cameras()[0], look_at_camera(0.0, 0.0), atol=0.02)
    look = M.look_around(seconds=1, fps=8).cameras()
    assert np.ptp(look[:, 3]) > 0.5                                                   # camera x moves


def test_get_load_and_from_array(tmp_path):
    assert M.get("look-around") is M.look_around and M.get(" Talk ") is M.talk
    with pytest.raises(ValueError, match="unknown motion 'dance'; built-in motions: talk, nod, smile, look_around"):
        M.get("dance")
    rows = M.smile(seconds=1, fps=5).coeffs
    np.save(tmp_path / "mine.npy", rows)
    loaded = M.load(tmp_path / "mine.npy", fps=5)
    assert loaded.name == "mine" and loaded.fps == 5.0
    np.testing.assert_array_equal(loaded.coeffs, rows)
    wide = np.zeros((5, 257), np.float32)
    wide[:, 80:144] = rows[:, :64]
    np.testing.assert_array_equal(M.from_array(wide).coeffs[:, :64], rows[:, :64])


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
        M.talk(seconds=0)
    with pytest.raises(ValueError, match="fps must be a finite number > 0"):
        M.nod(fps=float("nan"))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        M.smile(seed=-1)
    with pytest.raises(ValueError, match="seconds must be <= 3600"):
        M.look_around(seconds=1e6)
    with pytest.raises(ValueError, match="70 / 257 / 260 columns"):
        M.Motion(np.zeros((3, 50)))
    bad = np.zeros((3, 70))
    bad[1, 66] = np.nan
    with pytest.raises(ValueError, match="frame 1, column 66"):
        M.Motion(bad)
    with pytest.raises(ValueError, match="at least one frame"):
        M.Motion(np.zeros((0, 70)))
    with pytest.raises(ValueError, match="fps must be finite"):
        M.Motion(np.zeros((1, 70)), fps=0)


def test_motion_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, otavatar.motion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
