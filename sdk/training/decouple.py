"""Decoupling-by-inverting: train the motion controller (and fine-tune the generator) on talking-head videos.

One iteration per batch of B videos x 2 frames (spec 3.4):

(a) invert an identity code per video from w_avg (or from `init_codes`, below), on both frames at once (each
    frame = w + C(its window)), jointly with an 18-number intrinsics correction; `schedule="successive"`
    (published) steps w for the first N_id = inversion_steps - controller_steps steps and only the controller
    for the last N_mo steps; `schedule="joint"` (the paper's ablation) steps both at every step. The SR branch
    joins in the last sr_steps.
(b) refine: for each frame, render the detached code + C(window) with both low-res and SR losses plus the
    monotonic and TV density terms, and step the controller (AdamW) and the whole generator (Adam).
(c) EMA (0.95) of both networks' parameters.
Every rendered ws is clamped to w_avg +- 5 (`clamp`, spec 2.5).

`init_codes` (name -> [w_dim]) starts a video's inversion at its own code instead of w_avg. The published 90 code
steps reach an identity from w_avg; the ~8 a CPU run affords do not (the inverted codes kept w_avg's colours and
hair), so the controller learnt from frames whose identity was wrong. On SynthHeads the auto-decoded prior already
holds that inversion: every training frame's code (`prior.prior_identity_codes` averages them per video).

`persistent_codes=True` keeps a bank of every video's last inverted code: when a video comes back, its inversion
continues from there (a video with no banked code starts at `init_codes`, else w_avg). The published 90 code steps per
iteration converge from w_avg; on a CPU (~7 steps per iteration) a video drawn k times has had ~7k steps, so after a
few epochs the controller trains on residuals of converged codes -- the premise of decoupling -- instead of on
identity errors that it would otherwise learn to explain. In practice a banked code goes partly stale while the
networks move (round 3 of docs/training-rounds.md: a revisit started at twice the pixel error its last visit ended at).
The bank is saved with the run (`code_bank.<video>`); under torchrun every process keeps its own, and a resumed run
restores rank 0's.

`pin_neutral=True` re-centres the controller after every step (`MotionController.pin_neutral_`: the motion of the
all-zero window, neutral expression and frontal pose, is exactly 0; the EMA copy too). A constant offset is
redundant with the identity code (ws = w_id + motion), so nothing in the published losses holds it: in a CPU run
with persistent codes it grew to norm 3.7 in 100 successive iterations (2.4 joint), larger than the codes' spread
(1.8). Pinned, the code owns the identity and the controller only the motion's deviation from neutral; differences
of motions are unaffected. (Pinning removed the constant, not the rise of the successive loss: round 3.)

`warmup_code_steps=N` (with persistent codes) first inverts every training video's code for N steps with the
controller frozen (low-res losses, 2 frames per video, `2 x batch` videos at a time) and banks it: the published
inversion's premise -- the code explains the identity before the controller trains on the residual -- then holds
from the first iteration. Without it the successive schedule's controller steps (code frozen, not converged)
absorbed identity error: in a CPU run its motion varied across frames and videos (std 1.55 per layer after 50
iterations; joint 1.04) about as much as the codes differed from w_avg (1.66), and its training loss rose. With the
warm-up it still rose (docs/training-rounds.md, round 3): warm codes are necessary for the premise, not sufficient here.
The warm-up starts from w_avg, so `warmup_lr_code` can give it a coarser code lr than the iterations' `lr_code`,
which start from banked codes (round 4: 0.02 then 0.005 did not stop the rise either).

`pin_mean_windows=N` pins instead the MEAN motion over N training windows (a fixed sample) at 0
(`MotionController.pin_mean_`): talking frames are rarely neutral, so a neutral-pinned controller still carries a
shared offset on every real window. It diverged in both schedules within ~10 iterations (round 6): the gradient's
demand for a shared offset is never met, so the weights keep growing along it while the bias cancels only its mean,
and the spread around the mean grows with them. Alone it is not recommended; with `differential_grad` (below) the
gradient no longer asks for a shared offset, and the pair trained stably (round 7).

`finetune_generator=False` (`--freeze-generator`) trains only the controller in the refine step, so the banked codes
can go stale only through the controller. Round 6: the successive loss still rose with the generator frozen, so the
generator's drift is not what drives it.

`refresh_codes_every=N` (with the warm-up) repeats the warm-up every N iterations, from the bank and at `lr_code`:
every video's code is re-inverted against the current controller, so the staleness a video's code accumulates
between its visits is reset once per N iterations instead of growing until the video is drawn again.

`differential_grad=True` (`--differential-grad`) lets the controller learn only from what differs between a video's two
frames. The forward pass is unchanged (ws = code + C(window)); in the backward pass, the controller's gradient for
each ws row is the frame's gradient minus the mean of both frames' gradients, so the part of the residual that
both frames share -- an identity error that the code would absorb if it had converged -- never reaches the
controller. That is the published premise made explicit: 90 code steps converge the code, so the controller bursts
see only the frame-to-frame residual; ~7 code steps on a CPU leave a shared residual that the bursts fitted instead
(round 6: the successive loss rose, and the controller learnt motion that follows each training video). At test
time only differences of motions matter to first order (the portrait's code is inverted with its own motion
added), so nothing the projection removes is needed there. The refine step then renders both frames together in
one step (it needs both frames' gradients), instead of one step per frame. Nothing in the loss then holds the
shared motion, so pair it with `pin_mean_windows` (round 7 of docs/training-rounds.md: with the neutral pin the motion
exploded in both schedules, rms 458 after 290 successive iterations; with the mean pin both ran level for 42 min).

`controller_fresh_frames=True` (`--controller-fresh-frames`; successive schedule) renders each of the N_mo controller
steps on a new pair of frames of the batch's videos, with each video's code and intrinsics correction as the code
steps left them (frozen). The code is the video's identity, so any of its frames fits the decoupling premise; drawn
again, the controller's steps see 2 x N_mo frames per video instead of the same 2 N_mo times (round 8 of
docs/training-rounds.md: 3 steps in a row on one pair let the controller fit that pair, rms 0.18). The joint
schedule has no code-frozen steps, so the option does not change it (its matched ablation is the same command with
`--schedule joint`). The redraws come from their own random stream, so the iterations' batches stay those of a run
without the option. The refine step keeps the batch's own frames. Measured (round 16): with 3 or 5 controller
steps per iteration it made the motion 3x larger and less explained by expression than one step on the batch's
frames, and the jaw AED worse; one controller step per iteration stays the better CPU recipe.

`basis_init_scale=s` (`--basis-init-scale`; a fresh controller only) draws the direction matrix N(0, s^2) instead of
the published N(0, 1). The controller's motion is a mix of the K orthonormal directions of its QR, which do not
depend on the matrix's scale, so the start is the same function. What changes is how fast AdamW turns them: its
steps are about lr per element whatever the scale, so the angle per step is about lr / scale, and the weight decay
(1 x lr per step) shrinks the scale towards the equilibrium where the two balance, about 0.013 at the published lr
and betas, which the published run reaches after 4-5 thousand of its 22,000+ controller steps. A CPU run never gets
there: the shipped controller's directions after 916 steps still span 98% of its random start's subspace (scale
0.42), the matched joint run's, after 4,600 steps, 82% (scale 0.07), so every controller's motion lived in an almost
random 20-dimensional slice of W. Measured (round 17), s = 0.05: the successive model became the
best on landmarks so far, but the joint ablation still matched or beat it on expression error on all three held-out
sets (z 2.0 on the third); the joint controller's directions wandered into an unrelated subspace over its 4,600
steps and its jaw error rose. Doubling the controller lr on top (round 18) shrank the successive motion instead.

`spike_guard=3.0` (the default; None turns it off) rolls back an iteration whose loss is non-finite or above 3x the
median of the last 25 accepted ones (networks and optimisers restored, its codes and EMA update discarded) and halves
the controller lr for the rest of the run (`otavatar.training.spike_guard`: at the published lr, runs of either
schedule diverged in one iteration and never recovered, docs/training-rounds.md, rounds 10-11).

Multi-GPU/CPU: run under `torchrun`; gradients of the shared networks are all-reduced explicitly after every
backward (the published trainer called sub-modules of its DDP wrapper directly, so its gradients were never
synchronised: spec 3.6). Codes and intrinsics are per sample and stay local.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from otavatar.training.losses import LossWeights, density_regularizers
from otavatar.training.objective import IntrinsicsCorrection, ReconstructionLoss, apply_intrinsics
from otavatar.training.run import RunDir, image_grid, resolve_device, step_streams, to_uint8
from otavatar.training.spike_guard import Snapshot, SpikeGuard

__all__ = ["DecoupleConfig", "DecoupleResult", "PairSampler", "train_controller", "SCHEDULES", "banked_codes",
           "fresh_controller_for"]

SCHEDULES = ("successive", "joint")
_BANK = "code_bank."          # extra.safetensors prefix of the persistent codes


@dataclass(frozen=True)
class DecoupleConfig:
    iterations: int = 2000
    batch: int = 4                     # videos per iteration (x 2 frames)
    inversion_steps: int = 100         # per iteration (spec: 100)
    controller_steps: int = 10         # N_mo: the last steps of the inversion train the controller (spec: 10)
    sr_steps: int = 10                 # last inversion steps that also super-resolve (spec sr_iters: 10)
    schedule: str = "successive"       # or "joint" (ablation: code and controller stepped together)
    refine: bool = True                # step (b)
    persistent_codes: bool = False     # a video's inversion starts where its previous one ended (module docstring)
    pin_neutral: bool = False          # keep motion(neutral window) = 0 after every controller step (docstring)
    pin_mean_windows: int = 0          # or keep the MEAN motion over this many training windows at 0 (docstring)
    warmup_code_steps: int = 0         # with persistent_codes: invert every video this long first (docstring)
    warmup_lr_code: float | None = None   # the warm-up's code lr (None: lr_code); it starts from w_avg
    refresh_codes_every: int = 0       # with the warm-up: re-invert every banked code each N iterations (docstring)
    clamp: float | None = 5.0          # spec 2.5: every rendered ws is clamped to w_avg +- clamp (None: off)
    finetune_generator: bool = True    # step (b) also updates the generator
    controller_pose: bool = True       # a fresh controller's use_pose (ControllerConfig; published if_use_pose)
    differential_grad: bool = False    # the controller learns only the frames' differences (module docstring)
    controller_fresh_frames: bool = False   # successive: each controller step on a new pair of frames (docstring)
    basis_init_scale: float = 1.0      # a fresh controller's direction matrix ~ N(0, s^2) (docstring; published 1)
    spike_guard: float | None = 3.0    # roll back an iteration whose loss > this x the recent median (docstring)
    spike_lr_factor: float = 0.5       # ... and multiply the controller lr by this for the rest of the run
    lr_code: float = 0.01
    lr_intrinsics: float = 0.01
    lr_controller: float = 1e-3
    controller_betas: tuple[float, float] = (0.5, 0.999)
    controller_weight_decay: float = 1.0
    lr_generator: float = 1e-4
    generator_betas: tuple[float, float] = (0.9, 0.9999)
    ema: float = 0.95
    grad_clip: float = 1.0
    density_points: int = 2000
    sr_perceptual_size: int | None = None   # None = full size (published); CPU runs: 64 (see ReconstructionLoss)
    weights: LossWeights = field(default_factory=LossWeights)
    controller_local_weight: float | None = None   # the local (mouth + eyes) weight whenever the controller steps
    preview_every: int = 50
    checkpoint_every: int = 50
    log_every: int = 1
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("iterations", "batch", "inversion_steps", "preview_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.controller_steps <= self.inversion_steps:
            raise ValueError(f"controller_steps must be in [0, inversion_steps={self.inversion_steps}], "
                             f"got {self.controller_steps}")
        if not 0 <= self.sr_steps <= self.inversion_steps:
            raise ValueError(f"sr_steps must be in [0, {self.inversion_steps}], got {self.sr_steps}")
        if self.clamp is not None and not self.clamp > 0:
            raise ValueError(f"clamp must be > 0 or None, got {self.clamp}")
        if self.pin_mean_windows < 0:
            raise ValueError(f"pin_mean_windows must be >= 0, got {self.pin_mean_windows}")
        if self.pin_mean_windows and self.pin_neutral:
            raise ValueError("pin_neutral and pin_mean_windows pin the motion at two different references: "
                             "choose one")
        if self.controller_local_weight is not None and not self.controller_local_weight >= 0:
            raise ValueError(f"controller_local_weight must be >= 0 or None, got {self.controller_local_weight}")
        if self.warmup_code_steps < 0:
            raise ValueError(f"warmup_code_steps must be >= 0, got {self.warmup_code_steps}")
        if self.warmup_lr_code is not None and not self.warmup_lr_code > 0:
            raise ValueError(f"warmup_lr_code must be > 0 or None, got {self.warmup_lr_code}")
        if self.refresh_codes_every < 0:
            raise ValueError(f"refresh_codes_every must be >= 0, got {self.refresh_codes_every}")
        if self.refresh_codes_every and not self.warmup_code_steps:
            raise ValueError("refresh_codes_every repeats the code warm-up: it needs warmup_code_steps > 0")
        if self.warmup_code_steps and not self.persistent_codes:
            raise ValueError("warmup_code_steps banks a code per video: it needs persistent_codes=True")
        if self.spike_guard is not None:
            SpikeGuard(self.spike_guard, self.spike_lr_factor)          # validates both
        if not self.basis_init_scale > 0:
            raise ValueError(f"basis_init_scale must be > 0, got {self.basis_init_scale}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", LossWeights(**self.weights))

    @property
    def identity_steps(self) -> int:
        """N_id (spec 3.4: 90 of 100)."""
        return self.inversion_steps - self.controller_steps

    @property
    def controller_weights(self) -> LossWeights:
        """The loss weights of every step that updates the controller (successive: its N_mo steps; joint: every
        inversion step; both: the refine). controller_local_weight raises the mouth + eyes term there only, where
        the jaw reading of rounds 8-11 trailed (docs/training-rounds.md, round 13); None = `weights`."""
        if self.controller_local_weight is None:
            return self.weights
        return replace(self.weights, local=self.controller_local_weight)


@dataclass
class DecoupleResult:
    generator: torch.nn.Module         # the EMA generator (what gets shipped)
    controller: torch.nn.Module        # the EMA controller
    iterations: int
    seconds: float
    final_loss: float
    run_dir: Path


@dataclass
class Batch:
    images: Tensor        # [B,2,3,R,R] in [-1,1]
    windows: Tensor       # [B,2,70,27]
    cameras: Tensor       # [B,2,25]
    landmarks: Tensor     # [B,2,68,2] px of the R-px images
    videos: list[str] = field(default_factory=list)   # [B] video names

    def frames(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(images [2B,3,R,R], windows [2B,70,27], cameras [2B,25], landmarks [2B,68,2]): every frame, the two frames
        of each video adjacent."""
        return tuple(t.flatten(0, 1) for t in (self.images, self.windows, self.cameras, self.landmarks))

    def to(self, device: torch.device) -> "Batch":
        return Batch(images=self.images.to(device), windows=self.windows.to(device), cameras=self.cameras.to(device),
                     landmarks=self.landmarks.to(device), videos=self.videos)


class PairSampler:
    """Spec 3.3: pick a training person, a random video of theirs, and 2 frames drawn with probability
    proportional to |expression|_1 + 1e-3 (expressive frames favoured). Batches and windows come on `device`."""

    def __init__(self, data_dir: str | os.PathLike, *, resolution: int | None = None, window: int = 27,
                 split: str = "train", device: str | torch.device = "cpu") -> None:
        from otavatar.coeffs import windows
        from otavatar.training.lmdb_dataset import LmdbDataset, person_id

        self.device = torch.device(device)
        self.data = LmdbDataset(data_dir, resolution)
        videos = {"train": self.data.train, "test": self.data.test}[split]
        if not videos:
            raise ValueError(f"{data_dir}: the {split} split has no videos")
        self.by_person: dict[str, list[str]] = {}
        for v in videos:
            self.by_person.setdefault(person_id(v), []).append(v)
        self.persons = sorted(self.by_person)
        self._cache = {}
        for v in videos:
            coeffs = self.data.coeffs(v)
            exp = np.abs(coeffs[:, 80:144]).sum(1) + 1e-3
            self._cache[v] = (windows(coeffs, window=window), self.data.cameras(v), exp / exp.sum())

    def close(self) -> None:
        self.data.close()

    @property
    def videos(self) -> list[str]:
        """Every video of the split, in a fixed order."""
        return [v for p in self.persons for v in self.by_person[p]]

    def reference_windows(self, count: int, rng: np.random.Generator) -> Tensor:
        """`count` windows [count,70,27] drawn uniformly over every frame of the split (the pin_mean reference)."""
        frames = [(v, f) for v in self.videos for f in range(len(self._cache[v][0]))]
        picked = rng.choice(len(frames), count, replace=count > len(frames))
        chosen = np.stack([self._cache[frames[i][0]][0][frames[i][1]] for i in picked])        # [count,70,27]
        return torch.from_numpy(chosen).float().to(self.device)

    def sample(self, batch: int, rng: np.random.Generator) -> Batch:
        persons = rng.choice(len(self.persons), batch, replace=batch > len(self.persons))
        items = []
        for p in persons:
            options = self.by_person[self.persons[p]]
            items.append(self._item(options[rng.integers(len(options))], rng))
        return self._collate(items).to(self.device)

    def sample_videos(self, videos: list[str], rng: np.random.Generator) -> Batch:
        """2 frames (drawn as in `sample`) of each of the given videos."""
        unknown = [v for v in videos if v not in self._cache]
        if unknown:
            raise ValueError(f"videos not in this split: {unknown[:3]}")
        return self._collate([self._item(v, rng) for v in videos]).to(self.device)

    def _item(self, video: str, rng: np.random.Generator) -> dict:
        win, cams, prob = self._cache[video]
        frames = rng.choice(len(prob), 2, replace=False, p=prob)
        imgs = np.stack([self.data.frame(video, int(f)) for f in frames])
        return {"video": video, "images": imgs, "windows": win[frames], "cameras": cams[frames],
                "landmarks": self.data.keypoints(video, resolution=imgs.shape[1])[frames]}

    @staticmethod
    def _collate(items: list[dict]) -> Batch:
        def stack(key):
            return torch.from_numpy(np.stack([item[key] for item in items]))

        return Batch(images=stack("images").permute(0, 1, 4, 2, 3).float() / 127.5 - 1, windows=stack("windows"),
                     cameras=stack("cameras").float(), landmarks=stack("landmarks").float(),
                     videos=[item["video"] for item in items])


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sync(params) -> None:
    """Average gradients over processes (explicit, so it cannot be skipped as in the published trainer)."""
    import torch.distributed as dist

    rank, world = _world()
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world


def _any_rank(flag: bool) -> bool:
    """True on every process when it is on any (so all stop, or roll back, at the same iteration)."""
    import torch.distributed as dist

    if _world()[1] == 1:
        return flag
    # NCCL reduces only CUDA tensors: the box lives on this process's GPU then
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    box = torch.tensor([float(flag)], device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def _broadcast(module: torch.nn.Module) -> None:
    import torch.distributed as dist

    if _world()[1] > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def _ema_update(ema: torch.nn.Module, current: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * current, parameters only (buffers not averaged: spec 3.6)."""
    with torch.no_grad():
        for e, c in zip(ema.parameters(), current.parameters()):
            e.lerp_(c, 1 - decay)


def train_controller(data_dir: str | os.PathLike, prior: str | os.PathLike, out_dir: str | os.PathLike,
                     config: DecoupleConfig = DecoupleConfig(), *, resume: bool = False, progress: bool = True,
                     vgg_weights: str | os.PathLike | None = None, identity_encoder: str | None = "synthheads",
                     init_codes: Mapping[str, Tensor] | None = None, fresh_controller: bool = False,
                     on_iteration: Callable[[int, dict], None] | None = None,
                     device: str | torch.device | None = "auto") -> DecoupleResult:
    """Train a controller (and fine-tune the generator) from the generator in `prior` (an otavatar weights file;
    a controller in it is used as the start unless `fresh_controller`, else a fresh one of the matching preset).
    init_codes: video name -> [w_dim] start of that video's code inversion (module docstring); videos without one
    start at w_avg. device: `otavatar.training.run.resolve_device` ("auto": this process's GPU if any); the run
    folder is the same on every device, so a run may be resumed on another."""
    from otavatar.weights import load_models

    rank, world = _world()
    device = resolve_device(device)
    loaded = load_models(prior)
    if loaded.generator is None:
        raise ValueError(f"{prior}: holds no generator")
    generator = loaded.generator.train()
    gcfg = generator.config
    if loaded.controller is not None and not fresh_controller:
        if config.basis_init_scale != 1:
            raise ValueError(f"basis_init_scale draws a fresh controller, but {prior} holds a controller to start "
                             "from: pass fresh_controller (--fresh-controller) or leave the scale at 1")
        controller = loaded.controller.train()
    else:
        torch.manual_seed(config.seed)
        controller = fresh_controller_for(gcfg, use_pose=config.controller_pose,
                                          basis_scale=config.basis_init_scale).train()
    if controller.config.use_pose != config.controller_pose:
        raise ValueError(f"{prior}: its controller has use_pose={controller.config.use_pose}, the config asks for "
                         f"controller_pose={config.controller_pose}; start a fresh controller (fresh_controller) or "
                         "match it")
    generator, controller = generator.to(device), controller.to(device)     # before the optimisers see them
    codes = _check_init_codes(init_codes, gcfg.w_dim, device)
    bank: dict[str, Tensor] = {}          # video -> its last inverted code (persistent_codes)
    if rank == 0:
        run = RunDir(out_dir, {"decouple": config, "prior": str(prior), "world": world,
                               "init_codes": len(codes) if codes else None,
                               "fresh_controller": fresh_controller}, resume=resume)
    opt_c, opt_g = _optimizers(controller, generator, config)
    ema_g, ema_c = copy.deepcopy(generator).eval(), copy.deepcopy(controller).eval()
    start, seconds = 0, 0.0
    guard = SpikeGuard(config.spike_guard, config.spike_lr_factor) if config.spike_guard is not None else None
    if resume and rank == 0 and run.has_checkpoint():
        models, extra, state = run.load({"generator": opt_g, "controller": opt_c})
        generator.load_state_dict(models.generator.state_dict())
        controller.load_state_dict(models.controller.state_dict())
        for prefix, module in (("ema_generator.", ema_g), ("ema_controller.", ema_c)):
            module.load_state_dict({k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)})
        bank = banked_codes(extra, device)
        if guard is not None:
            guard.load_state_tensors(extra)
        start, seconds = state["step"], state["seconds"]
    if world > 1:
        import torch.distributed as dist

        for m in (generator, controller, ema_g, ema_c):
            _broadcast(m)
        box = [start, seconds, guard.lr_scale if guard is not None else 1.0]
        dist.broadcast_object_list(box, src=0)
        start, seconds, lr_scale = box
        if guard is not None:
            guard.lr_scale = lr_scale
    losses = ReconstructionLoss.from_files(generator, vgg_weights=vgg_weights, identity_encoder=identity_encoder,
                                           weights=config.weights, sr_perceptual_size=config.sr_perceptual_size
                                           ).to(device)
    rng, dens_rng = step_streams(config.seed * 1000 + rank, start)     # each process draws its own videos
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=config.iterations, initial=start, unit="it", desc=f"controller ({config.schedule})",
                   dynamic_ncols=True)
    t0 = time.perf_counter() - seconds
    last = math.nan
    done = saved_at = start
    sampler = PairSampler(data_dir, window=controller.config.window, device=device)   # last: closed in `finally`
    try:
        pin = _pinning(config, sampler)
        if pin is not None and start == 0:
            pin(controller)
            pin(ema_c)
        if config.warmup_code_steps and start == 0 and not bank:
            warm_rng = np.random.default_rng([config.seed, rank, 1])     # leaves the iterations' draws as they were
            bank, warm_loss = _warm_up_codes(generator, controller, losses, sampler, config, opt_c, opt_g, dens_rng,
                                             codes, warm_rng, progress=progress and rank == 0)
            if rank == 0:
                run.log(0, {"warmup": warm_loss})
        redraw_rng = np.random.default_rng([config.seed, rank, 4, start])    # its own stream: batches unchanged
        # what one iteration changes, for the guard to put back: the generator only when it is fine-tuned
        changed = ([controller, generator], [opt_c, opt_g]) if config.finetune_generator else ([controller], [opt_c])
        for it in range(start, config.iterations):
            batch = sampler.sample(config.batch, rng)
            snapshot = None if guard is None else Snapshot(*changed)
            it_config = config if guard is None or guard.lr_scale == 1 else replace(
                config, lr_controller=config.lr_controller * guard.lr_scale)
            # new frames of this batch's videos for the successive controller steps (called within this iteration)
            redraw = ((lambda: sampler.sample_videos(batch.videos, redraw_rng))
                      if config.controller_fresh_frames else None)
            values, preview, final = _iteration(generator, controller, losses, batch, it_config, opt_c, opt_g,
                                                dens_rng, {**codes, **bank}, pin=pin, redraw=redraw)
            last = values["refine"] if config.refine else values["inversion"]
            if guard is None and not math.isfinite(last):
                raise FloatingPointError(f"iteration {it}: the loss became {last}")
            if guard is not None and _any_rank(guard.is_spike(last)):
                snapshot.restore()            # the iteration never happened, except for its draws from the streams
                # round 20's r33-successive: an iteration accepted at 2.3x the median left the controller where
                # every next batch spiked; its checkpoint 6 iterations back resumed cleanly on new batches
                checkpoint = (f"the last checkpoint was written at iteration {saved_at}: --resume continues from it "
                              "on new batches" if saved_at else "no checkpoint was written yet")
                guard.reject(last, it + 1, recovery=f"lower the learning rates; {checkpoint} ({out_dir})")
                values = {"rolled_back": last, "lr_scale": guard.lr_scale}
                last = guard.history[-1] if guard.history else math.nan
            else:
                if guard is not None:
                    guard.accept(last)
                if config.persistent_codes:
                    bank.update(zip(batch.videos, final))
                _ema_update(ema_g, generator, config.ema)
                _ema_update(ema_c, controller, config.ema)
                if pin is not None:         # an average of pinned controllers is pinned only to first order
                    pin(ema_c)
            done = it + 1
            out_of_time = _any_rank(config.max_minutes is not None         # every rank stops at the same iteration
                                    and time.perf_counter() - t0 > 60 * config.max_minutes)
            if config.refresh_codes_every and done % config.refresh_codes_every == 0 and done < config.iterations \
                    and not out_of_time:
                bank, values["code_refresh"] = _warm_up_codes(
                    generator, controller, losses, sampler, config, opt_c, opt_g, dens_rng, {**codes, **bank},
                    np.random.default_rng([config.seed, rank, 3, done]), progress=progress and rank == 0,
                    refresh=True)
            checkpoint_due = done % config.checkpoint_every == 0 or done == config.iterations or out_of_time
            if checkpoint_due:                    # every rank keeps it: each names it if the guard stops the run
                saved_at = done
            if rank == 0:
                if done % config.log_every == 0:
                    run.log(done, values)
                if on_iteration is not None:
                    on_iteration(done, values)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last:.4f}")
                if done % config.preview_every == 0:
                    run.preview(done, image_grid([to_uint8(batch.images[:, 0]), to_uint8(preview)]))
                if checkpoint_due:
                    _save(run, done, time.perf_counter() - t0, generator, controller, ema_g, ema_c, opt_g, opt_c,
                          bank, guard)
            if out_of_time:
                break
    finally:
        sampler.close()
    if bar is not None:
        bar.close()
    return DecoupleResult(generator=ema_g, controller=ema_c, iterations=done, seconds=time.perf_counter() - t0,
                          final_loss=last, run_dir=Path(out_dir))


def fresh_controller_for(generator_config, *, use_pose: bool = True, basis_scale: float = 1.0):
    """A freshly initialised MotionController sized for a generator's config (num_ws, w_dim; a descriptor of
    2 x w_dim channels, at most 256): the trainer's start under `fresh_controller`. basis_scale multiplies the
    direction matrix (published N(0,1)); its orthonormal basis, and so the controller's output, is unchanged
    (`DecoupleConfig.basis_init_scale`)."""
    from otavatar.config import ControllerConfig
    from otavatar.models import MotionController

    controller = MotionController(ControllerConfig(num_ws=generator_config.num_ws, w_dim=generator_config.w_dim,
                                                   descriptor_channels=min(256, 2 * generator_config.w_dim),
                                                   use_pose=use_pose))
    with torch.no_grad():
        controller.direction.weight.mul_(basis_scale)
    return controller


def banked_codes(extra: Mapping[str, Tensor], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """video -> its banked code [w_dim], from a run's extra tensors (`extra.safetensors`; persistent_codes)."""
    return {k[len(_BANK):]: v.to(device) for k, v in extra.items() if k.startswith(_BANK)}


def _save(run, step, seconds, generator, controller, ema_g, ema_c, opt_g, opt_c, bank: Mapping[str, Tensor],
          guard: SpikeGuard | None) -> None:
    extra = {f"ema_generator.{k}": v for k, v in ema_g.state_dict().items()}
    if guard is not None:
        extra.update(guard.state_tensors())
    extra.update({f"ema_controller.{k}": v for k, v in ema_c.state_dict().items()})
    extra.update({f"{_BANK}{video}": code for video, code in bank.items()})
    run.save(step=step, seconds=seconds, models={"generator": generator, "controller": controller}, extra=extra,
             optimizers={"generator": opt_g, "controller": opt_c}, info={"kind": "decouple"})
    from otavatar.weights import save_models

    save_models(run.path / "ema.safetensors", generator=ema_g, controller=ema_c,
                metadata={"step": step, "kind": "decouple-ema"})


def _optimizers(controller, generator, config: DecoupleConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The published optimisers (spec 3.6): AdamW for the controller, Adam for the whole generator."""
    opt_c = torch.optim.AdamW(controller.parameters(), lr=config.lr_controller, betas=config.controller_betas,
                              weight_decay=config.controller_weight_decay)
    return opt_c, torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.generator_betas)


def _pinning(config: DecoupleConfig, sampler: PairSampler | None = None
             ) -> Callable[[torch.nn.Module], object] | None:
    """The re-centring applied after every controller step (module docstring), or None. The mean's reference
    windows are drawn from `sampler` with config.seed alone, so every process pins at the same windows."""
    if config.pin_mean_windows:
        if sampler is None:
            raise ValueError("pin_mean_windows pins at training windows: pass the trainer's pin")
        reference = sampler.reference_windows(config.pin_mean_windows, np.random.default_rng([config.seed, 2]))
        return lambda controller: controller.pin_mean_(reference)
    if config.pin_neutral:
        return lambda controller: controller.pin_neutral_()
    return None


def _step_controller(controller, opt_c, config: DecoupleConfig, pin: Callable | None) -> None:
    """All-reduce, clip and apply the controller's gradients; then re-centre it (`pin`, from _pinning)."""
    _sync(controller.parameters())
    torch.nn.utils.clip_grad_norm_(controller.parameters(), config.grad_clip)
    opt_c.step()
    if pin is not None:
        pin(controller)


def _motion(controller, windows: Tensor, config: DecoupleConfig) -> Tensor:
    """The controller's motion [2B,num_ws,w_dim] for windows [2B,70,27] (the two frames of each video adjacent).
    differential_grad: the same values, but the gradient that reaches the controller is each frame's minus the
    mean over its video's two frames (module docstring)."""
    motion = controller(windows)
    if not config.differential_grad or not motion.requires_grad:
        return motion
    pairs = motion.unflatten(0, (-1, 2))                          # [B,2,num_ws,w_dim]
    shared = pairs.mean(1, keepdim=True)
    return (pairs - shared + shared.detach()).flatten(0, 1)


def _frame_inputs(code: Tensor, motion: Tensor, cameras: Tensor, correction, frames_per_video: int, w_avg: Tensor,
                  config: DecoupleConfig) -> tuple[Tensor, Tensor]:
    """(ws [B*F,num_ws,w_dim], cameras [B*F,25]) for F = frames_per_video rendered frames of each video: the video's
    code [B,1,w_dim] plus each frame's motion, clamped around w_avg, and each frame's camera [B*F,25] with the
    video's intrinsics correction."""
    ws = code.repeat_interleave(frames_per_video, dim=0).expand(-1, motion.shape[1], -1) + motion
    cam = apply_intrinsics(cameras, correction.value.repeat_interleave(frames_per_video, dim=0))
    return _clamp(ws, w_avg, config.clamp), cam


def _clamp(ws: Tensor, w_avg: Tensor, clamp: float | None) -> Tensor:
    """ws [N,num_ws,w_dim] limited to w_avg +- clamp element-wise, as the published trainer does (spec 2.5).

    Rounds 1-3 of docs/training-rounds.md predate it. In one of their runs, a burst of controller steps took the largest
    rendered ws row's norm from 10 to 382 within one iteration. Replayed with the clamp, the render was bounded but
    the explosion went on (a clamped element passes no gradient), so this limits damage; it does not prevent it."""
    if clamp is None:
        return ws
    return torch.maximum(torch.minimum(ws, w_avg + clamp), w_avg - clamp)

def _warm_up_codes(generator, controller, losses, sampler: PairSampler, config: DecoupleConfig, opt_c, opt_g,
                   dens_rng, init_codes: Mapping[str, Tensor], rng: np.random.Generator, *, progress: bool,
                   refresh: bool = False) -> tuple[dict[str, Tensor], float]:
    """Invert every video's code for config.warmup_code_steps steps, controller and generator frozen (an
    `_iteration` with only code steps and no refine) -> (video -> code, mean final loss). refresh=True: a
    refresh of banked codes (init_codes), at the iterations' lr_code rather than the warm-up's."""

    lr = config.lr_code if refresh else config.warmup_lr_code or config.lr_code
    code_only = replace(config, inversion_steps=config.warmup_code_steps, controller_steps=0, sr_steps=0,
                        schedule="successive", refine=False, lr_code=lr)
    videos = sampler.videos
    size = 2 * config.batch
    bank: dict[str, Tensor] = {}
    finals = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(videos), unit="video", desc="code refresh" if refresh else "code warm-up",
                   dynamic_ncols=True, leave=not refresh)
    for i in range(0, len(videos), size):
        batch = sampler.sample_videos(videos[i:i + size], rng)
        values, _, final = _iteration(generator, controller, losses, batch, code_only, opt_c, opt_g, dens_rng,
                                      init_codes)
        bank.update(zip(batch.videos, final))
        finals.append(values["inversion"])
        if bar is not None:
            bar.update(len(batch.videos))
            bar.set_postfix(loss=f"{finals[-1]:.4f}")
    if bar is not None:
        bar.close()
    return bank, float(np.mean(finals))


def _check_init_codes(init_codes: Mapping[str, Tensor] | None, w_dim: int,
                      device: str | torch.device = "cpu") -> dict[str, Tensor]:
    codes = {}
    for name, code in (init_codes or {}).items():
        code = torch.as_tensor(code, dtype=torch.float32, device=device).detach()
        if code.shape != (w_dim,) or not torch.isfinite(code).all():
            raise ValueError(f"init_codes[{name!r}] must be a finite [{w_dim}] vector, got {list(code.shape)}")
        codes[str(name)] = code
    return codes


def _iteration(generator, controller, losses: ReconstructionLoss, batch: Batch, config: DecoupleConfig,
               opt_c, opt_g, dens_rng, init_codes: Mapping[str, Tensor] | None = None, *, pin: Callable | None = None,
               redraw: Callable[[], Batch] | None = None) -> tuple[dict[str, float], Tensor, Tensor]:
    """One iteration -> (logged values, preview images [B,3,R,R], the inverted codes [B,w_dim]).
    pin: the re-centring after every controller step, `_pinning(config, sampler)` (None: none).
    redraw: new frames of the batch's videos, in its order, for every controller-only step (controller_fresh_frames;
    None: every step renders the batch's frames)."""
    b = batch.images.shape[0]
    images, windows, cameras, landmarks = batch.frames()   # [2B,...]: the two frames of each video adjacent
    w_avg = generator.w_avg.detach()
    starts = [init_codes.get(v, w_avg) for v in batch.videos] if init_codes and batch.videos else [w_avg] * b
    code = torch.stack(starts)[:, None].clone().requires_grad_(True)        # [B,1,w_dim] (W space)
    correction = IntrinsicsCorrection(b).to(code.device)
    opt_w = torch.optim.Adam([code], lr=config.lr_code, betas=(0.9, 0.999))
    opt_k = torch.optim.AdamW(correction.parameters(), lr=config.lr_intrinsics, betas=(0.9, 0.9999),
                              weight_decay=0.0)
    for g in opt_c.param_groups:          # spec 3.6: the controller's lr is reset every iteration
        g["lr"] = config.lr_controller
    generator.requires_grad_(False)
    w = config.weights
    inv_loss = math.nan
    for i in range(config.inversion_steps):
        train_controller_now = config.schedule == "joint" or i >= config.identity_steps
        train_code_now = config.schedule == "joint" or i < config.identity_steps
        sr = i >= config.inversion_steps - config.sr_steps
        redrawn = redraw is not None and not train_code_now
        step_images, step_windows, step_cameras, step_landmarks = (redraw().frames() if redrawn else
                                                                   (images, windows, cameras, landmarks))
        with torch.set_grad_enabled(train_controller_now):
            motion = _motion(controller, step_windows, config)                  # [2B,num_ws,w_dim]
        ws, cam = _frame_inputs(code, motion, step_cameras, correction, 2, w_avg, config)
        rec = losses(generator, ws, cam, step_images, step_landmarks, super_resolve=sr,
                     weights=config.controller_weights if train_controller_now else w)
        dens = density_regularizers(generator, rec.planes, points=config.density_points, rng=dens_rng)
        loss = rec.loss + w.monotonic * dens.monotonic + w.tv * dens.tv
        opt_w.zero_grad(set_to_none=True)
        opt_k.zero_grad(set_to_none=True)
        opt_c.zero_grad(set_to_none=True)
        loss.backward()
        if train_code_now:
            torch.nn.utils.clip_grad_norm_([code], config.grad_clip)
            opt_w.step()
            opt_k.step()
        if train_controller_now:
            _step_controller(controller, opt_c, config, pin)
        inv_loss = float(loss.detach())
    values = {"inversion": inv_loss}
    preview = (rec.image if rec.image is not None else rec.image_raw)[0::2]     # frame 0 of each video
    code = code.detach()
    if config.refine:
        generator.requires_grad_(config.finetune_generator)
        # one step per frame (spec 3.4 b); differential_grad needs both frames' gradients, so one step of both
        frames_per_video = 2 if config.differential_grad else 1
        frames = torch.arange(2 * b, device=images.device)
        steps = [frames] if config.differential_grad else [frames[f::2] for f in range(2)]
        total = 0.0
        for f, sel in enumerate(steps):
            motion = _motion(controller, windows[sel], config)
            ws, cam = _frame_inputs(code, motion, cameras[sel], correction, frames_per_video, w_avg, config)
            cam = cam.detach()
            rec = losses(generator, ws, cam, images[sel], landmarks[sel], super_resolve=True,
                         weights=config.controller_weights)
            dens = density_regularizers(generator, rec.planes, points=config.density_points, rng=dens_rng)
            loss = rec.loss + w.monotonic * dens.monotonic + w.tv * dens.tv
            opt_c.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            _step_controller(controller, opt_c, config, pin)
            if config.finetune_generator:
                _sync(generator.parameters())
                torch.nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
                opt_g.step()
            total += float(loss.detach())
            if f == 0:
                preview = rec.image[::frames_per_video]
            suffix = "f01" if frames_per_video == 2 else f"f{f}"
            values.update({f"{k}_{suffix}": v for k, v in rec.terms.items()})
        values["refine"] = total / len(steps)
    generator.requires_grad_(True)
    return values, preview.detach(), code[:, 0].clone()
