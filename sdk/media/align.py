"""FFHQ-style portrait alignment from 5 landmarks: an oriented square around the face, resampled to size².

The recipe (Karras et al., FFHQ dataset preparation, which EG3D's in-the-wild preprocessing follows for the
crop's extent and orientation), implemented here from its description with numpy + Pillow:

* e = eye-to-eye vector (left eye -> right eye, image coordinates), m = eye-midpoint-to-mouth-midpoint vector;
* the square's x axis is e - rot90(m) (the average of the eye line and the perpendicular of the eye-mouth line,
  so neither a tilted mouth nor a tilted eye line alone sets the roll), normalised, with half-side
  max(2 |e|, 1.8 |m|);
* its centre is the eye midpoint moved 0.1 m toward the mouth.

For an upright face whose width term wins (2|e| >= 1.8|m|), the eyes land at x = (0.5 -+ 1/8) size and
y = (0.5 - 0.025 |m|/|e|) size: (192, ~244) and (320, ~244) in a 512 crop. EG3D's own in-the-wild script
instead takes the crop from Deep3DFaceRecon's 3D fit; the square here is FFHQ's, which is what EG3D's FFHQ
weights were trained on.

Resampling: when the square is more than twice the output size, the image is first reduced by an integer
factor (box filter, no aliasing); the square is rendered at 2x with bicubic interpolation and box-reduced to
size. Where the square leaves the image, `padding="reflect"` (default, as FFHQ) mirrors the image and blends
it toward a blurred copy and then toward the median colour with distance from the edge, so the generator sees
plausible texture, not a hard edge; `padding="white"` fills with white (the matted look of OTAvatar's data).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image, ImageFilter

__all__ = ["AlignedPortrait", "align_portrait", "ffhq_quad", "PADDING_MODES"]

PADDING_MODES = ("reflect", "white")
_WIDTH_FACTOR = 2.0       # half-side >= 2 x eye distance
_HEIGHT_FACTOR = 1.8      # half-side >= 1.8 x eye-to-mouth distance
_CENTRE_SHIFT = 0.1       # centre = eye midpoint + 0.1 x eye-to-mouth
_BORDER = 0.1             # context kept around the square before padding, as a fraction of its side
_BLUR = 0.02              # blur sigma of the padding, as a fraction of the square's side
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class AlignedPortrait:
    """An aligned crop. transform maps source pixel coordinates to crop coordinates: [x', y'] = A @ [x, y, 1]
    (continuous coordinates, pixel centres at integer + 0.5 in both)."""
    image: NDArray[np.uint8] = field(repr=False)        # [size, size, 3]
    landmarks5: NDArray[np.float32] = field(repr=False)  # [5,2] in the crop
    transform: NDArray[np.float64] = field(repr=False)   # [2,3] source -> crop

    def __repr__(self) -> str:
        scale = float(np.hypot(*self.transform[:, 0]))
        return f"AlignedPortrait(size={self.image.shape[0]}, scale={scale:.3f})"


def _check_landmarks(landmarks5: ArrayLike) -> np.ndarray:
    lm = np.asarray(landmarks5, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks5 must have shape [5,2] (left eye, right eye, nose, left/right mouth corner), "
                         f"got {list(lm.shape)}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks5 has non-finite values")
    if np.hypot(*(lm[1] - lm[0])) < 1e-3:
        raise ValueError(f"landmarks5: the two eyes coincide at {lm[0].tolist()}; not a face")
    return lm


def ffhq_quad(landmarks5: ArrayLike) -> NDArray[np.float64]:
    """The FFHQ square [4,2] (top-left, bottom-left, bottom-right, top-right) in source pixels."""
    lm = _check_landmarks(landmarks5)
    eye_mid = (lm[0] + lm[1]) / 2
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = (lm[3] + lm[4]) / 2 - eye_mid
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # e - rot90(m): rot90 maps down to right
    x /= np.hypot(*x)
    x *= max(_WIDTH_FACTOR * np.hypot(*eye_to_eye), _HEIGHT_FACTOR * np.hypot(*eye_to_mouth))
    y = np.array([-x[1], x[0]])                                       # x turned 90 degrees toward +y (down)
    c = eye_mid + _CENTRE_SHIFT * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _quad_transform(quad: np.ndarray, size: int) -> np.ndarray:
    """[2,3] similarity mapping quad (top-left, bottom-left, ..., top-right) onto [0,size]²."""
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=-1)  # columns: the square's x and y sides
    a = size * np.linalg.inv(axes)
    return np.concatenate([a, (-a @ quad[0])[:, None]], axis=-1)


def _pad_reflect(img: np.ndarray, pad: tuple[int, int, int, int], side: float) -> np.ndarray:
    """Mirror-pad (left, top, right, bottom) and fade the padding into blur and then the median colour."""
    left, top, right, bottom = pad
    h, w = img.shape[:2]
    # np.pad's reflect needs pad < size; repeat in steps for huge pads (tiny image, big quad)
    out = img.astype(np.float32)
    while any(p > 0 for p in (left, top, right, bottom)):
        step = [min(p, s - 1) for p, s in ((left, out.shape[1]), (top, out.shape[0]), (right, out.shape[1]),
                                            (bottom, out.shape[0]))]
        if max(step) <= 0:        # a 1-pixel image: reflect impossible, repeat the edge
            step = [left, top, right, bottom]
            out = np.pad(out, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="edge")
        else:
            out = np.pad(out, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="reflect")
        left, top, right, bottom = left - step[0], top - step[1], right - step[2], bottom - step[3]
    left, top, right, bottom = pad
    hh, ww = out.shape[:2]
    ys, xs = np.arange(hh, dtype=np.float32)[:, None], np.arange(ww, dtype=np.float32)[None, :]

    def ramp(dist: np.ndarray, width: int) -> np.ndarray:
        # 1 at the outer edge, 0 on the image boundary, negative inside; -inf where that side has no padding
        return 1.0 - dist / width if width > 0 else np.full_like(dist, -np.inf)

    dx = np.maximum(ramp(xs, left), ramp(ww - 1 - xs, right))
    dy = np.maximum(ramp(ys, top), ramp(hh - 1 - ys, bottom))
    mask = np.maximum(dx, dy)[..., None]                              # [H', W', 1]
    sigma = max(side * _BLUR, 0.5)
    blurred = np.asarray(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(sigma)), dtype=np.float32)
    # fully blurred in the padding, fading to sharp a third of the pad width inside the image
    out += (blurred - out) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    out += (np.median(out.reshape(-1, 3), axis=0) - out) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_portrait(image: NDArray[np.uint8], landmarks5: ArrayLike, *, size: int = 512,
                   padding: str = "reflect") -> AlignedPortrait:
    """Crop and resample `image` (uint8 [H,W,3]) to the FFHQ square of `landmarks5` ([5,2] pixels:
    left eye, right eye, nose, left and right mouth corner), at size x size.

    Returns the crop, the landmarks in it, and the [2,3] source -> crop transform.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"image must be uint8 RGB [H,W,3], got {img.dtype} {list(img.shape)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    lm = _check_landmarks(landmarks5)
    quad = ffhq_quad(lm)
    transform = _quad_transform(quad, size)                           # [2,3] source -> crop
    side = float(np.hypot(*(quad[3] - quad[0])))

    # 1. integer pre-shrink when the square is > 2x the output: a box filter keeps the final bicubic
    #    interpolation from aliasing (bicubic only looks at 4x4 source pixels)
    work, q = Image.fromarray(img), quad.copy()
    shrink = int(math.floor(side / size / _SUPERSAMPLE))
    if shrink > 1:
        work = work.reduce(shrink)
        q = q / shrink                       # continuous coords: pixel k of the reduced image spans [k, k+1)
        side /= shrink
    # 2. crop to the square's bounding box plus a border, clipped to the image
    border = max(int(round(side * _BORDER)), 3)
    lo = np.floor(q.min(axis=0)).astype(int) - border
    hi = np.ceil(q.max(axis=0)).astype(int) + border
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], work.width), min(hi[1], work.height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the face square {quad.round(1).tolist()} lies outside the "
                         f"{img.shape[1]}x{img.shape[0]} image")
    arr = np.asarray(work)[y0:y1, x0:x1]
    q = q - [x0, y0]
    # 3. pad where the square leaves the image
    pad = (max(-lo[0], 0), max(-lo[1], 0), max(hi[0] - work.width, 0), max(hi[1] - work.height, 0))
    fill = None
    if any(pad):
        if padding == "reflect":
            arr = _pad_reflect(arr, pad, side)
            q = q + [pad[0], pad[1]]
        else:
            fill = (255, 255, 255)           # PIL fills outside the source with this colour
    # 4. render the square at 2x (bicubic), then box-reduce to size
    render = size * _SUPERSAMPLE
    data = q.reshape(-1).tolist()            # QUAD: source corners for output TL, BL, BR, TR
    kwargs = {"fillcolor": fill} if fill is not None else {}
    out = Image.fromarray(np.ascontiguousarray(arr)).transform((render, render), Image.QUAD, data,
                                                                Image.BICUBIC, **kwargs)
    out = out.reduce(_SUPERSAMPLE)
    crop_lm = (transform[:, :2] @ lm.T).T + transform[:, 2]
    return AlignedPortrait(image=np.asarray(out, dtype=np.uint8).copy(), landmarks5=crop_lm.astype(np.float32),
                           transform=transform)
