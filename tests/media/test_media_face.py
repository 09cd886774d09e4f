"""Face detection on a real photo: one face with landmarks on the eyes; the three refusals."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from otavatar.media import FaceTooSmallError, MultipleFacesError, NoFaceError

# Eye centres of the astronaut photo, read off the image by eye (pixels, x right, y down).
ASTRONAUT_EYES = np.array([[205.0, 101.0], [247.0, 103.0]])


def test_one_face_with_landmarks_on_the_eyes(astronaut_face):
    face = astronaut_face
    assert face.score > 0.95
    assert np.abs(face.landmarks5[:2] - ASTRONAUT_EYES).max() < 6.0      # ~15% of the 42-px eye distance
    x0, y0, x1, y1 = face.box
    assert (x0 < face.landmarks5[:, 0]).all() and (face.landmarks5[:, 0] < x1).all()
    assert (y0 < face.landmarks5[:, 1]).all() and (face.landmarks5[:, 1] < y1).all()
    nose, mouth = face.landmarks5[2], face.landmarks5[3:].mean(axis=0)
    assert face.landmarks5[0, 0] < nose[0] < face.landmarks5[1, 0]       # order: left eye, right eye, nose
    assert face.landmarks5[:2, 1].max() < nose[1] < mouth[1]            # eyes above nose above mouth
    assert face.landmarks5[3, 0] < face.landmarks5[4, 0]


def test_large_image_is_downscaled_for_the_network(detector, astronaut, astronaut_face):
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.BILINEAR))
    faces = detector.detect_faces(big)
    assert len(faces) == 1
    # coordinates come back in the caller's pixels: twice the 512-px ones, within 2 px of the 512 px fit
    assert np.abs(faces[0].landmarks5 - 2 * astronaut_face.landmarks5).max() < 4.0


def test_no_face_on_a_blank_image(detector):
    with pytest.raises(NoFaceError, match="no face found"):
        detector.detect_face(np.full((200, 240, 3), 180, np.uint8), name="blank.png")


def test_two_faces_side_by_side(detector, astronaut):
    with pytest.raises(MultipleFacesError, match=r"2 faces found \(scores \d\.\d\d, \d\.\d\d\)"):
        detector.detect_face(np.concatenate([astronaut, astronaut], axis=1))


def test_tiny_face(detector, astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.LANCZOS))   # face ~28 px
    with pytest.raises(FaceTooSmallError, match=r"too small: \d+ px across \(minimum 64 px"):
        detector.detect_face(small)
    assert detector.detect_face(small, min_size=16).size < 64                         # found, just small


def test_input_validation(detector):
    with pytest.raises(ValueError, match=r"uint8 RGB \[H,W,3\]"):
        detector.detect_faces(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="min_score"):
        detector.detect_face(np.zeros((32, 32, 3), np.uint8), min_score=0.0)
