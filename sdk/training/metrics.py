"""Reenactment metrics (numpy only, no torch): PSNR, SSIM, landmark distance (AKD-like), its split into the best
per-frame similarity and the shape left after it (similarity_registration), and expression error (AED-like, in
SynthHeads' 8 semantic controls, `otavatar.synthetic.params.CONTROLS`).

Images are uint8 [H,W,3] / [N,H,W,3] (0..255) or float in [0,1]; both are compared on a [0,1] scale, so
PSNR = 10 log10(1 / MSE) and SSIM uses the data range 1.

SSIM is Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, 'valid' filtering
(no padding: the mean is over positions where the whole window fits), computed per colour channel and averaged
over channels (and over images for a batch). This matches
`skimage.metrics.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)` (the same crop of (11-1)/2 = 5 px per border).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["psnr", "ssim", "landmark_distance", "expression_error", "expression_error_per_control", "to_unit",
           "similarity_registration", "Registration", "SSIM_WINDOW", "SSIM_SIGMA"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def to_unit(name: str, image: ArrayLike) -> NDArray[np.float64]:
    """uint8 (0..255) or float ([0,1]) image(s) -> float64 in [0,1], same shape."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be uint8 (0..255) or float ([0,1]); got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values")
    if a.size and (a.min() < -1e-6 or a.max() > 1 + 1e-6):
        raise ValueError(f"float {name} must lie in [0,1]; got range [{a.min():.4g}, {a.max():.4g}]")
    return a


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_unit("a", a), to_unit("b", b)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape; got {list(x.shape)} and {list(y.shape)}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"images must be [H,W], [H,W,C] or [N,H,W,C]; got shape {list(x.shape)}")
    return x, y


def psnr(a: ArrayLike, b: ArrayLike) -> float:
    """Peak signal-to-noise ratio in dB over all pixels (data range 1); inf for identical images.
    For a batch [N,H,W,C] this is the PSNR of the pooled MSE; average per-frame values yourself if wanted."""
    x, y = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of [..., H, W] with the 1-D kernel g along H then W."""
    k = len(g)
    h, w = x.shape[-2:]
    rows = sum(g[i] * x[..., i:h - k + 1 + i, :] for i in range(k))
    return sum(g[i] * rows[..., :, i:w - k + 1 + i] for i in range(k))


def ssim(a: ArrayLike, b: ArrayLike) -> float:
    """Mean structural similarity (module docstring): per channel, then averaged over channels and images.
    Images must be at least 11x11. 1.0 for identical images."""
    x, y = _pair(a, b)
    if x.ndim == 2:
        x, y = x[None, ..., None], y[None, ..., None]
    elif x.ndim == 3:
        x, y = x[None], y[None]
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got {list(x.shape[1:3])}")
    x, y = np.moveaxis(x, -1, 1), np.moveaxis(y, -1, 1)            # [N,C,H,W]
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    c1, c2 = _K1 ** 2, _K2 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def landmark_distance(pred: ArrayLike, truth: ArrayLike) -> float:
    """AKD-like: mean Euclidean distance (in the inputs' units, e.g. pixels) between matching landmarks.
    pred, truth: [N,68,2] (or [68,2])."""
    return float(landmark_distance_per_point(pred, truth).mean())


# The 68-point (iBUG) layout's regions. Expression moves the jaw line and the mouth; the rest of the face moves
# with identity and pose, so AKD over all 68 points mostly measures those.
LANDMARK_REGIONS: dict[str, range] = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
                                      "eyes": range(36, 48), "mouth": range(48, 68)}


def landmark_distance_per_point(pred: ArrayLike, truth: ArrayLike) -> NDArray[np.float64]:
    """Mean Euclidean distance of each landmark over frames -> [K]. pred, truth: [N,K,2] (or [K,2])."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim not in (2, 3) or p.shape[-1] != 2:
        raise ValueError(f"pred and truth must both be [N,K,2] (or [K,2]); got {list(p.shape)} and {list(t.shape)}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("landmarks have non-finite values")
    d = np.linalg.norm(p - t, axis=-1)
    return d.reshape(-1, d.shape[-1]).mean(0)


@dataclass(frozen=True)
class Registration:
    """The least-squares similarity that best maps each frame's predicted landmarks onto its target's (for a
    single [K,2] frame, the shapes below without N)."""

    shift: NDArray[np.float64]           # [N,2] target centroid - predicted centroid, in the inputs' units
    scale: NDArray[np.float64]           # [N] > 1: the prediction is smaller than the target
    rotation_deg: NDArray[np.float64]    # [N] counter-clockwise in (x, y) axes
    aligned: NDArray[np.float64]         # [N,K,2] the prediction mapped by that similarity


def similarity_registration(pred: ArrayLike, truth: ArrayLike) -> Registration:
    """Fit, per frame, the similarity (scale, rotation, translation) minimising the squared landmark distance
    from the mapped prediction to the truth (2-D Procrustes, in closed form with complex numbers).

    Why: the distance between two landmark sets mixes where the face sits in the frame (a head rendered a few
    pixels off or a little small moves every landmark alike) with its shape (a mouth that opens moves a few).
    landmark_distance_per_point(registration.aligned, truth) keeps only the shape; shift / scale hold the rest.
    pred, truth: [N,K,2] (or [K,2]), K >= 2, the predicted points of a frame not all equal."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    landmark_distance_per_point(p, t)                                  # the same shape and finiteness checks
    squeeze = p.ndim == 2
    p, t = (p[None], t[None]) if squeeze else (p, t)
    if p.shape[1] < 2:
        raise ValueError(f"a similarity needs at least 2 landmarks per frame, got {p.shape[1]}")
    zp, zt = p[..., 0] + 1j * p[..., 1], t[..., 0] + 1j * t[..., 1]     # [N,K]
    cp, ct = zp.mean(-1, keepdims=True), zt.mean(-1, keepdims=True)
    dp, dt = zp - cp, zt - ct
    energy = (np.abs(dp) ** 2).sum(-1)                                 # [N]
    if np.any(energy == 0):
        raise ValueError("a frame's predicted landmarks all coincide: no similarity maps them onto the truth")
    k = (np.conj(dp) * dt).sum(-1) / energy                             # [N] scale x e^{i rotation}
    mapped = k[:, None] * dp + ct
    aligned = np.stack([mapped.real, mapped.imag], -1)
    shift = np.stack([(ct - cp)[:, 0].real, (ct - cp)[:, 0].imag], -1)
    parts = (shift, np.abs(k), np.degrees(np.angle(k)), aligned)
    return Registration(*(v[0] for v in parts) if squeeze else parts)


def region_means(per_point: ArrayLike) -> dict[str, float]:
    """Mean of a per-landmark value [68] (e.g. landmark_distance_per_point) over each of LANDMARK_REGIONS."""
    v = np.asarray(per_point, dtype=np.float64)
    if v.shape != (68,):
        raise ValueError(f"per_point must be [68], got {list(v.shape)}")
    return {region: float(v[list(points)].mean()) for region, points in LANDMARK_REGIONS.items()}


def expression_error(pred: ArrayLike, truth: ArrayLike) -> float:
    """AED-like: mean absolute difference of SynthHeads' 8 semantic controls. pred, truth: [N,8] (or [8])."""
    return float(expression_error_per_control(pred, truth).mean())


def expression_error_per_control(pred: ArrayLike, truth: ArrayLike) -> NDArray[np.float64]:
    """Mean absolute difference of each of SynthHeads' 8 semantic controls -> [8]. pred, truth: [N,8] (or [8])."""
    from otavatar.synthetic.params import N_CONTROLS

    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim not in (1, 2) or p.shape[-1] != N_CONTROLS:
        raise ValueError(f"pred and truth must both be [N,{N_CONTROLS}] (or [{N_CONTROLS}]); got "
                         f"{list(p.shape)} and {list(t.shape)}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("controls have non-finite values")
    return np.abs(p - t).reshape(-1, N_CONTROLS).mean(0)
