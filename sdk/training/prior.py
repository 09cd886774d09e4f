"""Generator prior: the `tiny` TriplaneGenerator trained as a multi-view auto-decoder on SynthHeads.

The published method fine-tunes an EG3D generator pre-trained (as a GAN) on FFHQ. No such generator exists for
SynthHeads, and a GAN is out of reach on a 2-core CPU, so the prior is learnt by auto-decoding: every training
frame owns a free W code (one 512-d... here w_dim-d vector, broadcast to all num_ws layers, so the prior's codes
live in W as EG3D's inversion starts there; with `code_layout="video+frame"` it is its video's code plus its own
offset); each step draws frames, renders each one's code from several cameras
of the SAME expression (`multiview.py`) and pulls the renders towards the truth with the losses of spec 3.5
(pixel + perceptual + mouth/eye region L1, low-res and super-resolved, plus the density regularisers). Codes
and generator are optimised together. Afterwards `w_avg` is set to the mean code, the start point of every inversion.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from otavatar.training.losses import LossWeights, PerceptualLoss, area_resize, local_loss, pixel_loss
from otavatar.training.multiview import MultiviewSet
from otavatar.training.row_adam import RowAdam
from otavatar.training.run import RunDir, image_grid, resolve_device, step_streams, to_uint8

__all__ = ["CODE_LAYOUTS", "CODE_OPTIMIZERS", "PriorConfig", "PriorResult", "train_prior", "prior_identity_codes"]

CODE_LAYOUTS = ("frame", "video+frame")
CODE_OPTIMIZERS = ("adam", "row-adam")


@dataclass(frozen=True)
class PriorConfig:
    preset: str = "tiny"
    steps: int = 3000
    batch: int = 4                    # frames per step
    views: int = 2                    # cameras rendered per frame per step (drawn from the set's views)
    lr_generator: float = 2e-3        # StyleGAN2's 0.0025, a little lower: no discriminator to balance
    lr_codes: float = 1e-2
    betas: tuple[float, float] = (0.0, 0.99)
    code_init_std: float = 0.1
    # "frame": every frame owns an independent code (drawn N(0, code_init_std^2)), as the shipped prior was trained.
    # "video+frame": a frame's code is its video's code (drawn so) plus a frame offset that starts at 0. With
    # independent draws two frames of one video start from unrelated codes, and an 840-frame set visited 4 frames a
    # step updates each one only about 14 times in 3,000 steps: the generator can learn a lookup in which W holds no
    # direction that one expression shares across videos (docs/training-rounds.md, rounds 14 and 24). A shared video
    # code is updated 12x as often, and the offsets hold only what differs between a video's frames.
    code_layout: str = "frame"
    # "adam": one torch Adam over the code tables (the shipped prior); "row-adam": each row its own step count
    # (`otavatar.training.row_adam`: torch's Adam moves a rarely drawn code ~10x lr per visit at these betas).
    code_optimizer: str = "adam"
    # The generator is frozen (only the codes step) for this many first steps. With a warm-started generator
    # (`train_prior(init_generator=...)`) fresh codes are random draws the generator never saw: its first steps
    # would otherwise fit the head to them and forget what it drew (docs/training-rounds.md, round 25).
    generator_warmup_steps: int = 0
    sr_weight: float = 1.0            # weight of the super-resolved terms relative to the low-res ones
    # The VGG19 pass dominates a CPU step (~8 GFLOP per 128^2 image up to relu4_1, x4 for forward, backward and
    # target): the super-resolved image is area-downsampled to this size for its perceptual term (None = full).
    sr_perceptual_size: int | None = 32
    perceptual_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    losses: LossWeights = field(default_factory=LossWeights)
    grad_clip: float = 1.0
    preview_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10
    seed: int = 0
    max_minutes: float | None = None  # stop early (and checkpoint) after this much wall time

    def __post_init__(self) -> None:
        if self.preset not in ("tiny", "official"):
            raise ValueError(f"preset must be 'tiny' or 'official', got {self.preset!r}")
        if self.code_layout not in CODE_LAYOUTS:
            raise ValueError(f"code_layout must be one of {CODE_LAYOUTS}, got {self.code_layout!r}")
        if self.code_optimizer not in CODE_OPTIMIZERS:
            raise ValueError(f"code_optimizer must be one of {CODE_OPTIMIZERS}, got {self.code_optimizer!r}")
        if self.generator_warmup_steps < 0:
            raise ValueError(f"generator_warmup_steps must be >= 0, got {self.generator_warmup_steps}")
        for name in ("steps", "batch", "views", "preview_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.losses, dict):
            object.__setattr__(self, "losses", LossWeights(**self.losses))


@dataclass
class PriorResult:
    generator: torch.nn.Module
    codes: Tensor                     # [N, w_dim]
    steps: int
    seconds: float
    final_loss: float
    run_dir: Path


def train_prior(data: MultiviewSet, out_dir: str | os.PathLike, config: PriorConfig = PriorConfig(), *,
                resume: bool = False, progress: bool = True, vgg_weights: str | os.PathLike | None = None,
                init_from: str | os.PathLike | None = None, init_generator: str | os.PathLike | None = None,
                on_step: Callable[[int, dict], None] | None = None,
                device: str | torch.device | None = "auto") -> PriorResult:
    """Auto-decode `data` (module docstring) into a run folder. device: `otavatar.training.run.resolve_device`;
    the frames stay in host memory and each step's batch is copied over. init_from: another prior run folder
    (generator and codes); init_generator: a weights file whose generator starts the run (codes start fresh)."""
    from otavatar.models import TriplaneGenerator
    from otavatar.training.vgg import vgg19

    if init_from is not None and init_generator is not None:
        raise ValueError("pass init_from (a prior run: generator and codes) or init_generator (a weights file: "
                         "the generator alone), not both")
    if data.views < config.views:
        raise ValueError(f"config.views={config.views} but the data has only {data.views} views per frame")
    # a warm start (read and checked before the run folder is made): init_from, e.g. a change of losses part-way,
    # gives the generator and codes; init_generator the generator alone
    start_generator, start_codes = None, None
    if init_from is not None or init_generator is not None:
        from safetensors.torch import load_file

        from otavatar.config import GeneratorConfig
        from otavatar.weights import load_models

        source = init_generator if init_from is None else Path(init_from) / "checkpoint.safetensors"
        start_generator = load_models(source).generator
        if start_generator.config != getattr(GeneratorConfig, config.preset)():
            raise ValueError(f"{source}: its generator is not the {config.preset!r} preset this run trains")
        if init_from is not None:
            start_codes = load_file(str(Path(init_from) / "extra.safetensors"))
    run = RunDir(out_dir, {"prior": config, "frames": len(data), "resolution": data.resolution}, resume=resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    generator = getattr(TriplaneGenerator, config.preset)().train()
    if generator.config.img_resolution != data.resolution:
        raise ValueError(f"the {config.preset} generator outputs {generator.config.img_resolution}px images but the "
                         f"data is {data.resolution}px; render the multiview set at that resolution")
    w_dim = generator.config.w_dim
    code_parts = _CodeParts.create(data, w_dim, config, device)
    generator.to(device)                                   # before the optimisers see its parameters
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas)
    code_adam = RowAdam if config.code_optimizer == "row-adam" else torch.optim.Adam
    opt_c = code_adam(code_parts.parameters(), lr=config.lr_codes, betas=config.betas)
    start, seconds = 0, 0.0
    if resume and run.has_checkpoint():
        models, extra, state = run.load({"generator": opt_g, "codes": opt_c})
        generator.load_state_dict(models.generator.state_dict())
        code_parts.load(extra, str(run.path))
        start, seconds = state["step"], state["seconds"]
    else:
        if start_generator is not None:
            generator.load_state_dict(start_generator.state_dict())
        if start_codes is not None:
            code_parts.load(start_codes, str(init_from))
    rng, _ = step_streams(config.seed, start)             # frames and views drawn per step
    vgg = vgg19(vgg_weights).to(device)
    lowres = PerceptualLoss(vgg, layers=config.perceptual_layers, num_scales=2, style_weight=config.losses.style)
    highres = PerceptualLoss(vgg, layers=config.perceptual_layers, num_scales=2, style_weight=config.losses.style)
    r_lo = generator.config.render.resolution

    images = torch.from_numpy(data.images)                 # [N,V,R,R,3] uint8, converted per batch
    cameras = torch.from_numpy(data.cameras)               # [N,V,25]
    landmarks = torch.from_numpy(data.landmarks)           # [N,V,68,2] px of the R-px images
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start, unit="step", desc="prior", dynamic_ncols=True)
    t0 = time.perf_counter() - seconds
    loss_value = math.nan
    step = start
    for step in range(start, config.steps):
        frames = torch.from_numpy(rng.choice(len(data), config.batch, replace=False))
        views = torch.from_numpy(np.stack([rng.choice(data.views, config.views, replace=False)
                                           for _ in range(config.batch)]))           # [B,Vb]
        target = images[frames[:, None], views].flatten(0, 1).to(device)             # [B*Vb,R,R,3]
        target = target.permute(0, 3, 1, 2).float() / 127.5 - 1                      # [B*Vb,3,R,R]
        cam = cameras[frames[:, None], views].flatten(0, 1).to(device)                # [B*Vb,25]
        lm = landmarks[frames[:, None], views].flatten(0, 1).to(device)               # [B*Vb,68,2]

        ws = code_parts.codes(frames.to(device))[:, None].expand(-1, generator.config.num_ws, -1)  # [B,num_ws,w_dim]
        planes = generator.planes(ws)                                                 # [B,3,C,P,P]
        planes_v = planes.repeat_interleave(config.views, dim=0)
        ws_v = ws.repeat_interleave(config.views, dim=0)
        rendered = generator.render_planes(planes_v, cam)
        raw = rendered.image_raw                                                      # [B*Vb,3,r,r]
        image = generator.super_resolve(raw, rendered.features, ws_v)                 # [B*Vb,3,R,R]
        w = config.losses
        terms = {"pixel_lo": w.pixel * pixel_loss(raw, target),
                 "pixel_sr": config.sr_weight * w.pixel * pixel_loss(image, target)}
        if w.local:
            # mouth and eyes are a few pixels of a 128-px head: without the region term the pixel loss averages
            # them away (prior runs before this term rendered no eyes or mouth after 1,900 steps)
            terms["local_lo"] = w.local * local_loss(raw, target, lm * (r_lo / data.resolution))
            terms["local_sr"] = config.sr_weight * w.local * local_loss(image, target, lm)
        if w.perceptual:
            terms["percep_lo"] = w.perceptual * lowres(raw, target)
            terms["percep_sr"] = (config.sr_weight * w.perceptual
                                  * highres(_shrink(image, config.sr_perceptual_size), target))
        if w.monotonic or w.tv:
            from otavatar.training.losses import density_regularizers

            dens = density_regularizers(generator, planes)
            terms["monotonic"] = w.monotonic * dens.monotonic
            terms["tv"] = w.tv * dens.tv
        loss = sum(terms.values())
        opt_g.zero_grad(set_to_none=True)
        opt_c.zero_grad(set_to_none=True)
        loss.backward()
        if step >= config.generator_warmup_steps:
            torch.nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
            opt_g.step()
        opt_c.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"prior step {step}: loss became {loss_value}; lower the learning rates")
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            values = {k: float(v.detach()) for k, v in terms.items()} | {"loss": loss_value}
            run.log(done, values)
            if on_step is not None:
                on_step(done, values)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if done % config.preview_every == 0:
            run.preview(done, image_grid([to_uint8(target[:8]), to_uint8(image[:8]), to_uint8(raw[:8])]))
        out_of_time = config.max_minutes is not None and time.perf_counter() - t0 > 60 * config.max_minutes
        if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
            _set_w_avg(generator, code_parts.codes())
            run.save(step=done, seconds=time.perf_counter() - t0, models={"generator": generator},
                     extra=code_parts.state(), optimizers={"generator": opt_g, "codes": opt_c},
                     info={"kind": "prior", "frames": len(data)})
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    codes = code_parts.codes().detach().clone()
    _set_w_avg(generator, codes)
    return PriorResult(generator=generator.eval(), codes=codes, steps=step + 1,
                       seconds=time.perf_counter() - t0, final_loss=loss_value, run_dir=run.path)


def prior_identity_codes(prior_run: str | os.PathLike, data: MultiviewSet, truth_npz: str | os.PathLike
                         ) -> dict[str, Tensor]:
    """Video name -> the mean of the prior's codes of that video's frames [w_dim]: an identity code under the
    prior's generator (its frames' expressions averaged), the start of that video's inversion in the controller
    trainer (decouple.train_controller's init_codes). data: the multiview set the prior was trained on."""
    from safetensors.torch import load_file

    path = Path(prior_run) / "extra.safetensors"
    if not path.is_file():
        raise ValueError(f"{prior_run}: no extra.safetensors (not a prior run folder)")
    codes = load_file(str(path)).get("codes")
    if codes is None or codes.ndim != 2 or codes.shape[0] != len(data):
        raise ValueError(f"{path}: codes {None if codes is None else list(codes.shape)} do not match the "
                         f"multiview set's {len(data)} frames: pass the set this prior was trained on")
    if not Path(truth_npz).is_file():
        raise ValueError(f"{truth_npz} not found: the prior's codes are named by a SynthHeads dataset's truth.npz")
    with np.load(truth_npz) as truth:
        names = [str(v) for v in truth["videos"]]
    if int(data.video.max()) >= len(names):
        raise ValueError(f"{truth_npz} has {len(names)} videos but the multiview set refers to video "
                         f"{int(data.video.max())}: pass the dataset the set was rendered from")
    return {names[v]: codes[torch.from_numpy(data.video == v)].mean(0) for v in np.unique(data.video).tolist()}


@dataclass
class _CodeParts:
    """The learnt codes of `PriorConfig.code_layout`: `frame` [N,w_dim] alone, or `video` [V,w_dim] + `frame`
    [N,w_dim] offsets indexed through `video_of` [N]. Checkpoints keep the parts and the composed `codes`."""

    frame: torch.nn.Parameter
    video: torch.nn.Parameter | None = None
    video_of: Tensor | None = None

    @classmethod
    def create(cls, data: MultiviewSet, w_dim: int, config: PriorConfig, device: torch.device) -> "_CodeParts":
        if config.code_layout == "frame":
            return cls(torch.nn.Parameter((torch.randn(len(data), w_dim) * config.code_init_std).to(device)))
        videos, video_of = np.unique(data.video, return_inverse=True)
        video = torch.nn.Parameter((torch.randn(len(videos), w_dim) * config.code_init_std).to(device))
        return cls(torch.nn.Parameter(torch.zeros(len(data), w_dim, device=device)), video,
                   torch.from_numpy(video_of.astype(np.int64)).to(device))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.frame] if self.video is None else [self.video, self.frame]

    @property
    def layout(self) -> str:
        return "frame" if self.video is None else "video+frame"

    def codes(self, frames: Tensor | None = None) -> Tensor:                        # [B or N, w_dim]
        index = slice(None) if frames is None else frames
        if self.video is None:
            return self.frame[index]
        return self.video[self.video_of[index]] + self.frame[index]

    def state(self) -> dict[str, Tensor]:
        parts = {"codes": self.codes()}
        if self.video is not None:
            parts |= {"video_codes": self.video, "frame_offsets": self.frame}
        return {k: v.detach() for k, v in parts.items()}

    def load(self, saved: dict[str, Tensor], source: str) -> None:
        """Copy a checkpoint's codes in; a run of the other layout, or on other data, is refused by name."""
        layout = "video+frame" if "video_codes" in saved else "frame"
        if layout != self.layout:
            raise ValueError(f"{source}: its codes have the {layout!r} layout, this run's are {self.layout!r}")
        pairs = [(self.frame, saved["codes" if self.video is None else "frame_offsets"])]
        if self.video is not None:
            pairs.append((self.video, saved["video_codes"]))
        for param, value in pairs:
            if value.shape != param.shape:
                raise ValueError(f"{source}: codes {tuple(value.shape)} do not match this data's "
                                 f"{tuple(param.shape)}")
        with torch.no_grad():
            for param, value in pairs:
                param.copy_(value)


def _shrink(image: Tensor, size: int | None) -> Tensor:
    return image if size is None or size >= image.shape[-1] else area_resize(image, size)


def _set_w_avg(generator, codes: Tensor) -> None:
    """Inversion starts at w_avg (spec 4.2); for an auto-decoded prior that is the mean code."""
    with torch.no_grad():
        generator.backbone.mapping.w_avg.copy_(codes.mean(0))
