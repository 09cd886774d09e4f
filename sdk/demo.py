"""`otavatar demo`: the whole torch pipeline end to end, written as PNGs.

Identity code from a seeded z, a neutral 27-frame coefficient window through the motion controller, then
tri-plane synthesis, volume rendering and super-resolution from a yaw sweep of cameras. With `weights=None`
the models are seeded random initialisations (the trained embedded default arrives with its own issue), so
the pictures show that every stage runs, not a face; pass a converted official file to see one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_YAW_SPAN = 0.4  # radians either side of frontal: the range FFHQ-trained EG3D renders without artefacts


@dataclass(frozen=True)
class DemoResult:
    frame: Path          # the frontal view, [R, R, 3] uint8 PNG
    sheet: Path          # all views side by side
    preset: str
    weights: str         # the file the models came from, or "seeded random init"
    views: int
    seconds: float       # wall time of the rendering (models built and loaded excluded)


def render_demo(out_dir: str | Path, preset: str = "tiny", *, weights: str | Path | None = None,
                views: int = 5, seed: int = 0, progress: bool = True) -> DemoResult:
    """Render `views` cameras (yaw sweep, frontal in the middle) and write `frame.png` and `sheet.png`."""
    import torch
    from PIL import Image

    from otavatar.camera import look_at_camera
    from otavatar.coeffs import neutral_coeffs, windows

    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    generator, controller, source = _models(preset, weights, seed)
    if controller is not None and controller.config.num_ws != generator.num_ws:
        raise ValueError(f"the controller drives {controller.config.num_ws} w layers but the generator has "
                         f"{generator.num_ws}: the two networks are from different presets")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    yaws = np.linspace(-DEFAULT_YAW_SPAN, DEFAULT_YAW_SPAN, views) if views > 1 else np.zeros(1)
    cameras = torch.from_numpy(np.stack([look_at_camera(yaw=float(y)) for y in yaws]))  # [V, 25]
    start = time.perf_counter()
    with torch.no_grad():
        z = torch.randn(1, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
        ws = generator.mapping(z, cameras[views // 2:views // 2 + 1])           # [1, num_ws, w_dim]
        if controller is not None:
            x = torch.from_numpy(windows(neutral_coeffs(1)))                     # [1, 70, 27]
            ws = ws + controller(x)
        frames = []
        for c in _progress(cameras, progress, "rendering views"):
            image = generator.synthesis(ws, c[None]).image[0]                    # [3, R, R] in about [-1, 1]
            frames.append(_to_uint8(image))
    seconds = time.perf_counter() - start

    frame_path, sheet_path = out / "frame.png", out / "sheet.png"
    Image.fromarray(frames[views // 2]).save(frame_path)
    Image.fromarray(np.concatenate(frames, axis=1)).save(sheet_path)
    return DemoResult(frame=frame_path, sheet=sheet_path, preset=preset, weights=source, views=views,
                      seconds=seconds)


def _models(preset: str, weights: str | Path | None, seed: int):
    import torch

    from otavatar.models import MotionController, TriplaneGenerator

    if weights is not None:
        from otavatar.weights import WeightsError, load_models

        loaded = load_models(weights)
        if loaded.generator is None:
            raise WeightsError(f"{weights}: holds no generator, which the demo needs")
        return loaded.generator.eval(), loaded.controller, str(weights)
    if preset not in ("official", "tiny"):
        raise ValueError(f"unknown preset {preset!r}; valid: official, tiny")
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    generator = getattr(TriplaneGenerator, preset)().eval()
    controller = getattr(MotionController, preset)().eval()
    return generator, controller, "seeded random init"


def _to_uint8(image) -> np.ndarray:  # [3, R, R] float tensor in about [-1, 1] -> [R, R, 3] uint8
    scaled = ((image.clamp(-1, 1) + 1) * 127.5).round().byte()
    return scaled.permute(1, 2, 0).cpu().numpy()


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, unit="view")
