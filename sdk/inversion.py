"""One-shot inversion of a portrait: W stage, then W+ stage, with the intrinsics correction (spec section 4).

    result = invert(G, C, image, coeffs=x_r, camera=c_r, landmarks=lm, config=InversionConfig())
    frames = render_motion(G, C, result, driving_coeffs, driving_cameras)      # uint8 [T,R,R,3]

Stage W: w starts at w_avg [w_dim] and is broadcast to every layer; Adam (lr 0.01) on w and AdamW (lr 0.01,
wd 0, betas 0.9/0.9999) on the 18-number intrinsics correction; each step renders w + C(x_r) (the controller's
motion for the portrait's own coefficients, so that w is the identity code without the portrait's expression)
from the corrected camera. Losses: perceptual + 10 x local + pixel + identity; the super-resolution branch and
its losses join in the last `sr_steps` steps of each stage. After every step w is clamped to w_avg +- 5.
Stage W+: the W result expanded to [num_ws, w_dim] and optimised the same way, continuing the correction.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from otavatar.training.losses import LossWeights
from otavatar.training.objective import IntrinsicsCorrection, ReconstructionLoss, apply_intrinsics

__all__ = ["InversionConfig", "InversionResult", "InversionStep", "invert", "render_motion", "portrait_tensor"]


@dataclass(frozen=True)
class InversionConfig:
    w_steps: int = 100              # spec 4.2 stage 1
    wplus_steps: int = 100          # spec 4.2 stage 2 (--ws_plus); 0 keeps the W result
    lr: float = 0.01
    intrinsics_lr: float = 0.01
    sr_steps: int = 10              # last steps of each stage that also super-resolve (sr_iters: 10)
    clamp: float = 5.0              # |w - w_avg| <= clamp after each step
    optimize_intrinsics: bool = True
    early_stop: float | None = None  # stop a stage once the loss improved by < this fraction over `patience` steps
    patience: int = 20
    weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.w_steps < 1 or self.wplus_steps < 0 or self.sr_steps < 0:
            raise ValueError(f"need w_steps >= 1, wplus_steps >= 0 and sr_steps >= 0; got {self.w_steps}, "
                             f"{self.wplus_steps}, {self.sr_steps}")
        if not (self.lr > 0 and self.intrinsics_lr >= 0 and self.clamp > 0 and self.patience >= 1):
            raise ValueError("lr and clamp must be > 0, intrinsics_lr >= 0 and patience >= 1")
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", LossWeights(**self.weights))


@dataclass(frozen=True)
class InversionStep:
    """What the callback receives after every step."""

    stage: str                       # "w" or "w+"
    step: int                        # 0-based, counted over both stages
    total: int
    loss: float
    terms: dict[str, float]
    preview: Tensor | None           # [3,r,r] or [3,R,R] in [-1,1] (detached)


@dataclass
class InversionResult:
    ws: Tensor                       # [num_ws, w_dim] the identity code (the portrait's motion NOT included)
    w: Tensor                        # [w_dim] result of the W stage
    intrinsics: Tensor               # [18] correction to apply to every camera rendered for this avatar
    camera: NDArray[np.float32]      # [25] the portrait's camera
    coeffs: NDArray[np.float32]      # [70] the portrait's coefficients
    losses: list[float]              # per step
    steps: int
    seconds: float
    stopped_early: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def portrait_tensor(image: Any, resolution: int) -> Tensor:
    """uint8 [R,R,3] (or a [3,R,R] / [1,3,R,R] float tensor in [-1,1]) -> float [1,3,R,R] in [-1,1]."""
    if isinstance(image, Tensor):
        t = image.detach().float()
        t = t[None] if t.dim() == 3 else t
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ValueError(f"a portrait tensor must be [3,R,R] or [1,3,R,R], got {tuple(image.shape)}")
    else:
        a = np.asarray(image)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"a portrait array must be uint8 [H,W,3], got {a.dtype} {list(a.shape)}")
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"the portrait must be square, got {t.shape[-2]}x{t.shape[-1]}")
    if not torch.isfinite(t).all():
        raise ValueError("the portrait has non-finite values")
    if t.shape[-1] != resolution:
        t = torch.nn.functional.interpolate(t, size=(resolution, resolution), mode="area" if t.shape[-1] > resolution
                                            else "bilinear", **({} if t.shape[-1] > resolution else {"align_corners": False}))
    return t


def _vector(name: str, value: ArrayLike, width: int) -> NDArray[np.float32]:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (width,):
        raise ValueError(f"{name} must have shape [{width}], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values at {np.flatnonzero(~np.isfinite(a)).tolist()[:5]}")
    return a.astype(np.float32)


def invert(generator, controller, image: Any, *, coeffs: ArrayLike | None = None, camera: ArrayLike,
           landmarks: ArrayLike | None = None, config: InversionConfig = InversionConfig(),
           losses: ReconstructionLoss | None = None, progress: bool = False,
           callback: Callable[[InversionStep], Any] | None = None, preview_every: int = 0) -> InversionResult:
    """Invert one portrait (module docstring). controller=None inverts without motion (a static identity).

    image: uint8 [R,R,3] aligned portrait (resized to the generator's resolution) or a [-1,1] tensor;
    coeffs: the portrait's 70 coefficients (None = neutral: zeros); camera: its 25-d label;
    landmarks: [68,2] iBUG points in pixels of `image` (None skips the local and identity terms).
    A callback returning False stops the inversion after the current step.
    """
    from otavatar.coeffs import windows

    cfg = generator.config
    device = generator.w_avg.device
    target = portrait_tensor(image, cfg.img_resolution).to(device)
    in_size = image.shape[-1] if isinstance(image, Tensor) else np.asarray(image).shape[1]
    cam = torch.from_numpy(_vector("camera", camera, 25))[None].to(device)
    x = _vector("coeffs", np.zeros(70) if coeffs is None else coeffs, 70)
    lm = None
    if landmarks is not None:
        lm_np = np.asarray(landmarks, dtype=np.float32)
        if lm_np.shape != (68, 2) or not np.isfinite(lm_np).all():
            raise ValueError(f"landmarks must be finite [68,2] pixel coordinates, got {list(lm_np.shape)}")
        lm = torch.from_numpy(lm_np * (cfg.img_resolution / in_size))[None].to(device)
    losses = losses if losses is not None else ReconstructionLoss(generator, weights=config.weights)

    requires = [p.requires_grad for p in generator.parameters()]
    generator.requires_grad_(False)
    if controller is not None:
        c_requires = [p.requires_grad for p in controller.parameters()]
        controller.requires_grad_(False)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            if controller is not None:
                window = torch.from_numpy(windows(x[None], window=controller.config.window)).to(device)
                motion = controller(window)                                      # [1,num_ws,w_dim]
            else:
                motion = torch.zeros(1, cfg.num_ws, cfg.w_dim, device=device)
        w_avg = generator.w_avg.detach()
        correction = IntrinsicsCorrection(1).to(device)
        opt_k = torch.optim.AdamW(correction.parameters(), lr=config.intrinsics_lr, betas=(0.9, 0.9999),
                                  weight_decay=0.0)
        total = config.w_steps + config.wplus_steps
        history: list[float] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="step", desc="invert", dynamic_ncols=True)
        stopped = False
        code = w_avg[None, None].clone()                                          # [1,1,w_dim]
        step = 0
        w_result = code
        for stage, steps in (("w", config.w_steps), ("w+", config.wplus_steps)):
            if steps == 0 or stopped:
                continue
            if stage == "w+":
                code = w_result.expand(1, cfg.num_ws, cfg.w_dim).clone()
            code.requires_grad_(True)
            opt_w = torch.optim.Adam([code], lr=config.lr, betas=(0.9, 0.999))
            best, since = math.inf, 0
            i = 0
            while i < steps:
                sr = i >= steps - config.sr_steps
                ws = code.expand(1, cfg.num_ws, cfg.w_dim) + motion
                rec = losses(generator, ws, correction(cam), target, lm, super_resolve=sr)
                opt_w.zero_grad(set_to_none=True)
                opt_k.zero_grad(set_to_none=True)
                rec.loss.backward()
                torch.nn.utils.clip_grad_norm_([code], 1.0)
                opt_w.step()
                if config.optimize_intrinsics:
                    opt_k.step()
                with torch.no_grad():
                    code.copy_(w_avg + (code - w_avg).clamp(-config.clamp, config.clamp))
                value = float(rec.loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"inversion {stage} step {i}: the loss became {value}")
                history.append(value)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stage=stage, loss=f"{value:.4f}")
                keep_going = True
                if callback is not None:
                    shown = rec.image if rec.image is not None else rec.image_raw
                    want = preview_every and (step % preview_every == 0 or step == total - 1)
                    keep_going = callback(InversionStep(stage=stage, step=step, total=total, loss=value,
                                                        terms=rec.terms,
                                                        preview=shown[0].detach() if want else None)) is not False
                step += 1
                i += 1
                if not keep_going:
                    stopped = True
                    break
                if config.early_stop is not None and not sr:
                    if value < best * (1 - config.early_stop):
                        best, since = value, 0
                    else:
                        since += 1
                        if since >= config.patience:   # converged: skip to this stage's SR steps
                            total -= max(0, steps - config.sr_steps - i)
                            i = max(i, steps - config.sr_steps)
                            if bar is not None:
                                bar.total = total
            w_result = code.detach()
            if stage == "w":
                w_stage1 = w_result[0, 0].clone()
        if bar is not None:
            bar.close()
    finally:
        for p, r in zip(generator.parameters(), requires):
            p.requires_grad_(r)
        if controller is not None:
            for p, r in zip(controller.parameters(), c_requires):
                p.requires_grad_(r)
    ws_final = w_result.expand(1, cfg.num_ws, cfg.w_dim)[0].clone()
    return InversionResult(ws=ws_final, w=w_stage1,
                           intrinsics=correction.value.detach()[0].clone(), camera=np.asarray(camera, np.float32),
                           coeffs=x, losses=history, steps=step, seconds=time.perf_counter() - start,
                           stopped_early=stopped)


def render_motion(generator, controller, result: InversionResult, coeffs: ArrayLike, cameras: ArrayLike, *,
                  batch_size: int = 8, window: str = "centered") -> NDArray[np.uint8]:
    """Drive an inverted identity: coeffs [T,70] (or official rows), cameras [T,25] -> uint8 [T,R,R,3].
    controller=None renders the static identity (no motion offset) from the given cameras."""
    from otavatar.coeffs import windows
    from otavatar.training.run import to_uint8

    device = result.ws.device
    cams = np.asarray(cameras, dtype=np.float32)
    x = windows(coeffs, window=controller.config.window if controller is not None else 27, mode=window)
    if cams.shape != (len(x), 25):
        raise ValueError(f"cameras must be [{len(x)},25] (one per coefficient frame), got {list(cams.shape)}")
    frames = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size]).to(device)
            ws = result.ws[None].expand(len(xb), -1, -1)
            if controller is not None:
                ws = ws + controller(xb)
            c = apply_intrinsics(torch.from_numpy(cams[i:i + batch_size]).to(device), result.intrinsics[None])
            frames.append(to_uint8(generator.synthesis(ws, c).image))
    return np.concatenate(frames) if frames else np.zeros((0, generator.config.img_resolution,
                                                           generator.config.img_resolution, 3), np.uint8)
