"""FaceProbe: a small CNN that reads a face image and regresses SynthHeads' 68 landmarks and 8 semantic
expression controls. It is the measuring instrument of the reenactment metrics (AKD-like landmark distance,
AED-like expression error; otavatar.training.evaluate): trained on the TRAIN split of a SynthHeads dataset,
its error on held-out TEST identities (`ProbeReport`) is the resolution of those metrics.

    probe = load_probe()                          # the shipped default (sdk/weights/default/probe.safetensors)
    out = probe.predict(frames_uint8)             # landmarks [N,68,2] px of the input size, controls [N,8]

    # the shipped probe (docs/training.md): squared error on the controls, which are 0 in most talking frames
    probe, report = train_probe("data/synth-probe", steps=4000, control_loss="l2", control_weight=10,
                                out="probe.safetensors")
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from otavatar.synthetic.params import N_CONTROLS

__all__ = [
    "ProbeConfig", "FaceProbe", "ProbeOutput", "ProbeReport", "SynthFrames", "load_synth_frames", "train_probe",
    "evaluate_probe", "load_probe", "save_probe", "DEFAULT_PROBE", "N_LANDMARKS", "images_to_tensor",
    "save_network", "read_network",
]

N_LANDMARKS = 68
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "default"
DEFAULT_PROBE = WEIGHTS_DIR / "probe.safetensors"
_KIND = "otavatar.face_probe"
_FORMAT = 1


# ---------------------------------------------------------------- small-network files (safetensors + JSON)
def save_network(path: str | os.PathLike, module: nn.Module, *, kind: str, config: Any,
                 report: dict | None = None, half: bool = True) -> Path:
    """Write module.state_dict() as safetensors with metadata {kind, format, config (JSON), report (JSON)},
    atomically. half=True stores floating tensors as float16 (loaded back as float32): it halves the shipped
    files (probe 4.1 -> 2.0 MB) and changed the default probe's test landmark error by < 0.01 px."""
    from safetensors.torch import save_file

    from otavatar.fileio import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fdtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to("cpu", fdtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in module.state_dict().items()}
    meta = {"kind": kind, "format": str(_FORMAT), "config": json.dumps(asdict(config)),
            "report": json.dumps(report or {})}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return path


def read_network(path: str | os.PathLike, kind: str) -> tuple[dict[str, Tensor], dict, dict]:
    """-> (state_dict, config dict, report dict); refuses a file of another kind or format."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("kind") != kind or meta.get("format") != str(_FORMAT):
        raise ValueError(f"{path} is not a {kind} file of format {_FORMAT}: its metadata says kind="
                         f"{meta.get('kind')!r}, format={meta.get('format')!r}")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{path}: tensor {k} has non-finite values")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, json.loads(meta["config"]), json.loads(meta.get("report", "{}"))


# ---------------------------------------------------------------- the network
@dataclass(frozen=True)
class ProbeConfig:
    size: int = 128                                    # input side; predict() resizes to it
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)    # one stride-2 block each: 128 -> 4 px
    plain_blocks: int = 2                              # the first blocks have no second conv (cost: 64^2, 32^2 px)
    hidden: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.size % (2 ** len(self.widths)):
            raise ValueError(f"size {self.size} must be divisible by 2**len(widths) = {2 ** len(self.widths)}")


@dataclass
class ProbeOutput:
    landmarks: NDArray[np.float32]     # [N,68,2] (x, y) pixels of the input image
    controls: NDArray[np.float32]      # [N,8] SynthHeads semantic controls (CONTROLS order)


def _block(cin: int, cout: int, second: bool) -> nn.Sequential:
    # a stride-2 conv, then (deeper blocks) a 3x3 conv at the reduced size for receptive field; the first two
    # blocks skip it: at 64^2 and 32^2 px it would be ~70% of the forward cost (measured 0.45 -> 0.25 s per
    # 32-image training step on one CPU thread)
    layers = [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if second:
        layers += [nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def images_to_tensor(images: Any, size: int) -> Tensor:
    """uint8 [N,H,W,3] (or [H,W,3]) -> float [N,3,size,size] in [-1,1] (area/bilinear resize)."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N,H,W,3]; got {a.dtype} {list(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class FaceProbe(nn.Module):
    """[B,3,S,S] in [-1,1] -> (landmarks [B,68,2] in [0,1] of the image side (x, y), controls [B,8])."""

    def __init__(self, config: ProbeConfig = ProbeConfig()) -> None:
        super().__init__()
        self.config = config
        chans = (3, *config.widths)
        self.features = nn.Sequential(*[_block(a, b, i >= config.plain_blocks)
                                        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))])
        side = config.size // 2 ** len(config.widths)
        # flatten (not pool): landmark positions are spatial, a global pool would throw them away
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * side * side, config.hidden),
                                   nn.ReLU(inplace=True))
        self.landmark_head = nn.Linear(config.hidden, N_LANDMARKS * 2)
        self.control_head = nn.Linear(config.hidden, N_CONTROLS)
        with torch.no_grad():                     # start at the image centre, neutral expression
            self.landmark_head.bias.fill_(0.5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.config.size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"FaceProbe expects [B,3,{s},{s}]; got {list(x.shape)}")
        h = self.trunk(self.features(x))                               # [B,hidden]
        return self.landmark_head(h).view(-1, N_LANDMARKS, 2), self.control_head(h)

    @torch.no_grad()
    def predict(self, images: Any, batch_size: int = 64) -> ProbeOutput:
        """uint8 [N,H,W,3] (any square-ish size; resized to config.size) -> ProbeOutput in input pixels."""
        a = np.asarray(images)
        a = a[None] if a.ndim == 3 else a
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W,3]; got {a.dtype} {list(a.shape)}")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        lms, ctrls = [], []
        for i in range(0, len(a), batch_size):
            lm, c = self(images_to_tensor(a[i:i + batch_size], self.config.size).to(dev))
            lms.append(lm.cpu())
            ctrls.append(c.cpu())
        self.train(was)
        scale = torch.tensor([a.shape[2], a.shape[1]], dtype=torch.float32)   # (W, H) for (x, y)
        lm = torch.cat(lms) * scale if lms else torch.zeros(0, N_LANDMARKS, 2)
        c = torch.cat(ctrls) if ctrls else torch.zeros(0, N_CONTROLS)
        return ProbeOutput(landmarks=lm.numpy().astype(np.float32), controls=c.numpy().astype(np.float32))


def save_probe(probe: FaceProbe, path: str | os.PathLike, report: "ProbeReport | None" = None) -> Path:
    return save_network(path, probe, kind=_KIND, config=probe.config,
                        report=None if report is None else report.to_dict())


def load_probe(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FaceProbe:
    """The probe in `path` (None = the shipped default), in eval mode with frozen parameters."""
    state, cfg, _ = read_network(DEFAULT_PROBE if path is None else path, _KIND)
    probe = FaceProbe(ProbeConfig(**cfg))
    probe.load_state_dict(state)
    probe.requires_grad_(False)
    return probe.eval().to(device)


# ---------------------------------------------------------------- SynthHeads frames
@dataclass
class SynthFrames:
    """Every frame of one split, in memory."""

    images: NDArray[np.uint8]          # [N,R,R,3]
    landmarks: NDArray[np.float32]     # [N,68,2] pixels of the R-px frame
    controls: NDArray[np.float32]      # [N,8]
    subject: NDArray[np.int64]         # [N] subject index (truth.npz numbering)
    video: NDArray[np.int64]           # [N] video index into truth.npz `videos`
    frame: NDArray[np.int64]           # [N] frame index in its video

    def __len__(self) -> int:
        return len(self.images)


def _truth_path(root: Path, truth_npz: str | os.PathLike | None) -> Path:
    if truth_npz is not None:
        return Path(truth_npz)
    for cand in (root / "truth.npz", root.parent / "truth.npz"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no truth.npz next to {root}; pass truth_npz")


def load_synth_frames(lmdb_dir: str | os.PathLike, truth_npz: str | os.PathLike | None = None, *,
                      split: str = "train", frame_step: int = 1) -> SynthFrames:
    """Decode every `frame_step`-th frame of the `split` videos of a SynthHeads dataset (LMDB images and
    keypoints, truth.npz controls)."""
    from otavatar.training.lmdb_dataset import LmdbDataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(lmdb_dir)
    truth = np.load(_truth_path(root, truth_npz))
    names = [str(v) for v in truth["videos"]]
    index = {v: i for i, v in enumerate(names)}
    imgs, lms, ctrls, subj, vids, frs = [], [], [], [], [], []
    with LmdbDataset(root) as ds:
        videos = ds.train if split == "train" else ds.test
        for v in videos:
            if v not in index:
                raise ValueError(f"video {v!r} of the LMDB is not in truth.npz")
            i = index[v]
            idx = np.arange(0, ds.length(v), frame_step)
            frames = ds.frames(v, idx)
            imgs.append(frames)
            lms.append(ds.keypoints(v, resolution=frames.shape[1])[idx])
            ctrls.append(truth["controls"][i][idx])
            subj.append(np.full(len(idx), int(truth["subject"][i])))
            vids.append(np.full(len(idx), i))
            frs.append(idx)
    if not imgs:
        raise ValueError(f"the {split} split of {root} has no videos")
    return SynthFrames(images=np.concatenate(imgs), landmarks=np.concatenate(lms).astype(np.float32),
                       controls=np.concatenate(ctrls).astype(np.float32), subject=np.concatenate(subj),
                       video=np.concatenate(vids), frame=np.concatenate(frs))


def random_similarity(n: int, generator: torch.Generator, *, shift: float = 0.08, scale: float = 0.1,
                      rotate: float = 0.0) -> Tensor:
    """[n,2,3] affine_grid thetas (output -> input normalised coords) of random small shifts (fraction of the
    half-side), scales and rotations (radians)."""
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    s = 1.0 + scale * u[:, 0]
    a = rotate * u[:, 1]
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, shift * u[:, 2]], -1),
                         torch.stack([sin, cos, shift * u[:, 3]], -1)], 1)
    return theta


def warp(x: Tensor, points01: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Apply affine_grid `theta` [B,2,3] to images x [B,C,S,S] in [-1,1] (outside = white, the SynthHeads
    background) and move points [B,K,2] in [0,1] the same way."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    # theta maps output coords to input coords: p_in = A p_out + t  =>  p_out = A^-1 (p_in - t)
    p = points01 * 2 - 1
    a_inv = torch.linalg.inv(theta[:, :, :2])
    p_out = torch.einsum("bij,bkj->bki", a_inv, p - theta[:, None, :, 2])
    return y, (p_out + 1) / 2


def _degrade(x: Tensor, generator: torch.Generator, p_blur: float = 0.4) -> Tensor:
    """Random blur, brightness/contrast and noise: the generated frames the probe measures are softer than
    SynthHeads' renders (the tiny model super-resolves 32^2 -> 128^2)."""
    b = len(x)
    blur = torch.rand(b, generator=generator) < p_blur
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
        y = x[blur]
        for _ in range(2):
            y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
        x = x.clone()
        x[blur] = y
    gain = 1 + 0.15 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
    noise = 0.03 * torch.rand(b, 1, 1, 1, generator=generator) * torch.randn(x.shape, generator=generator)
    return (x * gain + bias + noise).clamp(-1, 1)


# ---------------------------------------------------------------- training and evaluation
@dataclass
class ProbeReport:
    steps: int
    batch: int
    seed: int
    train_frames: int
    seconds: float
    final_loss: float
    first_loss: float
    test_landmark_px: float            # mean L2 at `size` px on the TEST split (held-out identities)
    test_control_l1: float             # mean |controls - truth| on the TEST split
    view_landmark_px: float | None = None   # same on re-rendered test frames from yaw +-0.4 look-at cameras
    view_control_l1: float | None = None
    size: int = 128
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_probe(probe: FaceProbe, images: NDArray[np.uint8], landmarks: NDArray[np.float32],
                   controls: NDArray[np.float32]) -> tuple[float, float]:
    """(mean landmark L2 in pixels of `images`, mean control L1) of probe.predict on labelled frames."""
    from otavatar.training.metrics import expression_error, landmark_distance

    out = probe.predict(images)
    return landmark_distance(out.landmarks, landmarks), expression_error(out.controls, controls)


def render_other_views(truth_npz: str | os.PathLike, *, yaws: tuple[float, ...] = (-0.4, 0.4), frames: int = 4,
                       resolution: int = 128, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-render the first `frames` frames of each `split` subject's first video from look-at cameras at each
    yaw -> (images uint8 [M,R,R,3], landmarks [M,68,2] px, controls [M,8])."""
    from otavatar.camera import look_at_camera
    from otavatar.synthetic import Identity, Motion, render

    t = np.load(truth_npz)
    imgs, lms, ctrls = [], [], []
    seen = set()
    for i, s in enumerate(t["subject"]):
        if str(t["split"][i]) != split or int(s) in seen:
            continue
        seen.add(int(s))
        motion = Motion(t["controls"][i][:frames], t["angles"][i][:frames], t["translation"][i][:frames])
        who = Identity.sample(int(t["identity_seed"][int(s)]))
        for yaw in yaws:
            clip = render(who, motion, resolution=resolution, cameras=look_at_camera(yaw, 0.0))
            imgs.append(clip.images)
            lms.append(clip.landmarks)
            ctrls.append(clip.controls)
    return np.concatenate(imgs), np.concatenate(lms), np.concatenate(ctrls)


def train_probe(lmdb_dir: str | os.PathLike, truth_npz: str | os.PathLike | None = None, *, steps: int = 3000,
                batch: int = 32, seed: int = 0, out: str | os.PathLike | None = None, lr: float = 2e-3,
                config: ProbeConfig = ProbeConfig(), other_views: bool = True, frame_step: int = 1,
                progress: bool = False, log_every: int = 0, control_weight: float = 1.0,
                control_loss: str = "l1") -> tuple[FaceProbe, ProbeReport]:
    """Train a FaceProbe on the TRAIN split of a SynthHeads dataset (Adam, cosine lr, L1 on landmarks in
    [0,1] x 10 + control_weight x L1 or L2 (control_loss) on controls; random shift/scale/rotation applied to
    image and landmarks together, random blur/gain/noise), evaluate on the TEST split (and, with other_views, on
    test subjects re-rendered from yaw +-0.4), save to `out` if given. -> (probe in eval mode, ProbeReport)."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    if control_loss not in ("l1", "l2"):
        raise ValueError(f"control_loss must be 'l1' or 'l2', got {control_loss!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    root = Path(lmdb_dir)
    tr = load_synth_frames(root, truth_npz, split="train", frame_step=frame_step)
    res = tr.images.shape[1]
    probe = FaceProbe(config).train()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    x_all = images_to_tensor(tr.images, config.size)                       # [N,3,S,S]
    lm_all = torch.from_numpy(tr.landmarks / np.float32(res))              # [N,68,2] in [0,1]
    c_all = torch.from_numpy(tr.controls)
    start = time.perf_counter()
    first = last = float("nan")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="probe", dynamic_ncols=True)
    for step in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=gen)
        theta = random_similarity(batch, gen, shift=0.08, scale=0.1, rotate=0.1)
        x, lm = warp(x_all[idx], lm_all[idx], theta)
        x = _degrade(x, gen)
        pred_lm, pred_c = probe(x)
        err = pred_c - c_all[idx]
        # l2 regresses to the conditional mean; l1 to the median, which is 0 for a blink (0 in about half the
        # talking frames), so an l1 probe that cannot yet see an eye has no reason to look
        control_term = (err.abs() if control_loss == "l1" else err.square()).mean()
        loss = 10.0 * (pred_lm - lm).abs().mean() + control_weight * control_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = float(loss.detach())
        if step == 0:
            first = last
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last:.4f}")
        if log_every and (step + 1) % log_every == 0:
            print(f"probe step {step + 1}/{steps} loss {last:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    probe.eval()
    te = load_synth_frames(root, truth_npz, split="test")
    scale = config.size / te.images.shape[1]
    lm_px, c_l1 = evaluate_probe(probe, te.images, te.landmarks, te.controls)
    report = ProbeReport(steps=steps, batch=batch, seed=seed, train_frames=len(tr), seconds=seconds,
                         final_loss=last, first_loss=first, test_landmark_px=lm_px * scale, test_control_l1=c_l1,
                         size=config.size)
    if other_views:
        imgs, lms, ctrls = render_other_views(_truth_path(root, truth_npz), resolution=te.images.shape[1])
        v_px, v_l1 = evaluate_probe(probe, imgs, lms, ctrls)
        report.view_landmark_px, report.view_control_l1 = v_px * scale, v_l1
        report.notes.append(f"other views: {len(imgs)} frames of test subjects from look-at yaw -0.4 / +0.4")
    if out is not None:
        save_probe(probe, out, report)
    return probe, report
