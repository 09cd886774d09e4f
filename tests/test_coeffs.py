"""otavatar.coeffs: layouts, controller input, temporal windows (batch and streaming), file readers."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from otavatar import coeffs
from otavatar.coeffs import (
    ANGLE, CONTROLLER_DIM, CROP, DEEP3D_LAYOUT, EXP, SEMANTIC_RADIUS, TRANS, WINDOW, StreamingWindows,
    load_coeffs, neutral_coeffs, to_controller_input, windows,
)

LENGTHS = [1, 5, 13, 14, 40]
MODES = ["centered", "causal"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def rows(rng, request) -> np.ndarray:
    """Random float32 rows [7, width], width from the test's `width` parameter."""
    return rng.standard_normal((7, request.getfixturevalue("width"))).astype(np.float32)


def controller_part(rows: np.ndarray) -> np.ndarray:
    """What the controller should read from rows of any accepted width: exp, angle, trans."""
    if rows.shape[-1] == CONTROLLER_DIM:
        return rows
    return np.concatenate([rows[..., EXP], rows[..., ANGLE], rows[..., TRANS]], axis=-1)


def naive_windows(x: np.ndarray, window: int, mode: str) -> np.ndarray:
    """The definition, one frame and one tap at a time."""
    t = len(x)
    first = -(window // 2) if mode == "centered" else -(window - 1)
    out = np.empty((t, x.shape[1], window), dtype=np.float32)
    for i in range(t):
        for k in range(window):
            out[i, :, k] = x[min(max(i + first + k, 0), t - 1)]
    return out


def test_layout_constants():
    parts = [DEEP3D_LAYOUT.id, EXP, DEEP3D_LAYOUT.tex, ANGLE, DEEP3D_LAYOUT.gamma, TRANS, CROP]
    assert [p.stop - p.start for p in parts] == [80, 64, 80, 3, 27, 3, 3]
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:])) and parts[0].start == 0
    assert DEEP3D_LAYOUT.as_dict()["exp"] == [80, 144]
    assert (CONTROLLER_DIM, WINDOW, SEMANTIC_RADIUS) == (70, 27, 13)


@pytest.mark.parametrize("width", [70, 257, 260])
def test_to_controller_input_layouts(rows, width):
    expected = controller_part(rows)
    out = to_controller_input(rows)
    assert out.shape == (7, 70) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(to_controller_input(rows[3]), expected[3:4])       # one row -> [1,70]
    np.testing.assert_array_equal(to_controller_input(rows.astype(np.float64).tolist()), expected)


@pytest.mark.parametrize("shape", [(5, 69), (5, 256), (73,), (2, 3, 70)])
def test_to_controller_input_rejects_widths(shape):
    with pytest.raises(ValueError, match=rf"70 / 257 / 260 columns .*got shape \[{', '.join(map(str, shape))}\]"):
        to_controller_input(np.zeros(shape))


@pytest.mark.parametrize("width, column, match", [
    (257, 225, r"frame 2, column 65 \(angle\[1\], column 225 of the 257-column row\)"),
    (70, 3, r"frame 2, column 3 \(exp\[3\]\)"),
])
def test_to_controller_input_names_first_non_finite(width, column, match):
    x = np.zeros((4, width))
    x[2, column] = np.inf
    x[3, column] = np.nan
    with pytest.raises(ValueError, match=match):
        to_controller_input(x)


def test_non_finite_unused_columns_are_ignored():
    x = np.zeros((2, 260))
    x[:, CROP] = np.nan
    assert np.isfinite(to_controller_input(x)).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t", LENGTHS)
def test_windows_match_naive_loop(rng, t, mode):
    x = rng.standard_normal((t, 70)).astype(np.float32)
    out = windows(x, mode=mode)
    assert out.shape == (t, 70, 27) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, naive_windows(x, 27, mode))


@pytest.mark.parametrize("mode", MODES)
def test_windows_small_window_and_257_rows(rng, mode):
    x = rng.standard_normal((9, 257)).astype(np.float32)
    np.testing.assert_array_equal(windows(x, window=5, mode=mode), naive_windows(controller_part(x), 5, mode))


def test_single_frame_window_is_replicated():
    x = np.arange(70, dtype=np.float32)
    np.testing.assert_array_equal(windows(x)[0], np.repeat(x[:, None], 27, axis=1))


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "future"}, "unknown window mode 'future'; valid modes: centered, causal"),
    ({"window": 4}, "odd for mode 'centered'"),
    ({"window": 0, "mode": "causal"}, "positive integer"),
])
def test_window_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        windows(np.zeros((3, 70)), **kwargs)
    with pytest.raises(ValueError, match=match):
        StreamingWindows(**kwargs)


def stream(sw: StreamingWindows, x: np.ndarray) -> tuple[list[list[int]], list]:
    """Push every frame, then flush: (indices returned by each push, all (index, window) pairs)."""
    per_push, pairs = [], []
    for frame in x:
        ready = sw.push(frame)
        per_push.append([i for i, _ in ready])
        pairs += ready
    return per_push, pairs + sw.flush()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t", LENGTHS)
def test_streaming_equals_batch(rng, t, mode):
    x = rng.standard_normal((t, 70)).astype(np.float32)
    per_push, pairs = stream(StreamingWindows(mode=mode), x)
    assert [i for i, _ in pairs] == list(range(t))
    np.testing.assert_array_equal(np.stack([w for _, w in pairs]), windows(x, mode=mode))
    delay = SEMANTIC_RADIUS if mode == "centered" else 0
    assert per_push == [[i - delay] if i >= delay else [] for i in range(t)]


def test_streaming_restarts_after_flush_and_keeps_bounded_state(rng):
    x = rng.standard_normal((300, 70)).astype(np.float32)
    sw = StreamingWindows()
    _, first = stream(sw, x[:20])
    state_bytes = sum(v.nbytes for v in vars(sw).values() if isinstance(v, np.ndarray))
    _, second = stream(sw, x)
    assert [i for i, _ in second] == list(range(300))
    np.testing.assert_array_equal(np.stack([w for _, w in second]), windows(x))
    assert sum(v.nbytes for v in vars(sw).values() if isinstance(v, np.ndarray)) == state_bytes
    np.testing.assert_array_equal(np.stack([w for _, w in first]), windows(x[:20]))


def test_streaming_rejects_several_frames():
    with pytest.raises(ValueError, match="push takes one frame, got 2"):
        StreamingWindows().push(np.zeros((2, 70)))


def _write_npy(path, x):
    np.save(path, x)


def _write_txt(path, x):
    np.savetxt(path, x)


def _write_csv(path, x):
    np.savetxt(path, x, delimiter=",")


@pytest.mark.parametrize("width", [70, 257, 260])
@pytest.mark.parametrize("suffix, write", [(".npy", _write_npy), (".txt", _write_txt), (".csv", _write_csv)])
def test_load_coeffs_round_trip(tmp_path, rows, width, suffix, write):
    path = tmp_path / f"coeffs{suffix}"
    write(path, rows)
    np.testing.assert_allclose(load_coeffs(path), controller_part(rows), rtol=1e-6)


@pytest.mark.parametrize("width", [257])
def test_load_coeffs_mat(tmp_path, rows, width):
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(tmp_path / "full.mat", {"coeff": rows})
    scipy_io.savemat(tmp_path / "parts.mat", {"exp": rows[:, EXP], "angle": rows[:, ANGLE],
                                              "trans": rows[:, TRANS], "id": rows[:, :80]})
    scipy_io.savemat(tmp_path / "bad.mat", {"exp": rows[:, EXP]})
    for name in ("full.mat", "parts.mat"):
        np.testing.assert_array_equal(load_coeffs(tmp_path / name), controller_part(rows))
    with pytest.raises(ValueError, match=r"bad\.mat.*missing \['angle', 'trans'\]"):
        load_coeffs(tmp_path / "bad.mat")


def test_load_coeffs_mat_without_scipy(tmp_path, monkeypatch):
    (tmp_path / "c.mat").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "scipy.io", None)          # makes `from scipy.io import ...` fail
    with pytest.raises(ImportError, match="pip install scipy"):
        load_coeffs(tmp_path / "c.mat")


def test_load_coeffs_errors(tmp_path):
    with pytest.raises(ValueError, match=r"c\.json: unsupported .*supported: \.npy, \.txt, \.csv, \.mat"):
        load_coeffs(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_coeffs(tmp_path / "missing.npy")
    np.save(tmp_path / "wide.npy", np.zeros((3, 100)))
    with pytest.raises(ValueError, match=r"wide\.npy: coefficients must have 70 / 257 / 260 columns"):
        load_coeffs(tmp_path / "wide.npy")


def test_neutral_coeffs():
    x = neutral_coeffs(3, angles=(0.1, -0.2, 0.3), translation=(1, 2, 3))
    assert x.shape == (3, 70) and x.dtype == np.float32
    assert not x[:, :64].any()
    np.testing.assert_allclose(x[:, 64:], np.broadcast_to([0.1, -0.2, 0.3, 1, 2, 3], (3, 6)), rtol=1e-7)
    np.testing.assert_array_equal(neutral_coeffs(), np.zeros((1, 70)))


def test_public_api_is_declared():
    assert all(hasattr(coeffs, name) for name in coeffs.__all__)
