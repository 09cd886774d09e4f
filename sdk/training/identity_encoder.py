"""SynthIdentityEncoder: the documented stand-in for the frozen ArcFace ResNet-18 of the identity loss (spec 3.5)
when the user names no ArcFace weights. It reads exactly what `otavatar.training.losses.arcface_crop` produces
(grey [B,1,128,128] in [-1,1], aligned from 5 landmark-derived points) and returns an L2-normalised [B,128]
embedding, trained with a cosine-margin softmax (CosFace: s * (cos - m) on the true class) over the identity
labels of SynthHeads' TRAIN subjects, on frames with many expressions and head poses per identity, so that
the embedding keeps who the head is and drops what it does.

    enc = load_identity_encoder()                 # shipped default, frozen, eval
    e = enc(arcface_crop(images, landmarks))      # [B,128], unit norm; identity loss = 1 - (e1 * e2).sum(-1)
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otavatar.training.probe import (
    WEIGHTS_DIR, images_to_tensor, load_synth_frames, random_similarity, read_network, save_network,
)

__all__ = ["IdentityEncoderConfig", "SynthIdentityEncoder", "IdentityReport", "train_identity_encoder",
           "load_identity_encoder", "save_identity_encoder", "verification", "DEFAULT_IDENTITY_ENCODER",
           "synth_crops"]

DEFAULT_IDENTITY_ENCODER = WEIGHTS_DIR / "identity_encoder.safetensors"
_KIND = "otavatar.synth_identity_encoder"


@dataclass(frozen=True)
class IdentityEncoderConfig:
    size: int = 128                                  # arcface_crop's output side
    pool: int = 2                                    # average-pool the input first (SynthHeads identity is
                                                     # low-frequency: shape and tone; 4x less compute)
    widths: tuple[int, ...] = (32, 64, 96, 128)      # one stride-2 block each: 64 -> 4 px
    embedding: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.pool < 1 or self.size % (self.pool * 2 ** len(self.widths)):
            raise ValueError(f"size {self.size} must be divisible by pool * 2**len(widths) = "
                             f"{self.pool * 2 ** len(self.widths)}")


class _Residual(nn.Module):
    """stride-2 conv block with a 1x1 strided shortcut (ResNet 'basic block', BN, PReLU as in ArcFace)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.PReLU(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class SynthIdentityEncoder(nn.Module):
    """[B,1,S,S] grey in [-1,1] (arcface_crop output) -> [B,embedding] L2-normalised."""

    def __init__(self, config: IdentityEncoderConfig = IdentityEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        chans = (1, *config.widths)
        # the first block is a plain strided conv: a residual block at the largest size would double the cost
        self.stem = nn.Sequential(nn.AvgPool2d(config.pool) if config.pool > 1 else nn.Identity(),
                                  nn.Conv2d(1, chans[1], 3, 2, 1, bias=False), nn.BatchNorm2d(chans[1]),
                                  nn.PReLU(chans[1]))
        self.blocks = nn.Sequential(*[_Residual(a, b) for a, b in zip(chans[1:-1], chans[2:])])
        side = config.size // (config.pool * 2 ** len(config.widths))
        # ArcFace's output layer: BN, dropout-free flatten, FC, BN1d (spatial layout matters for faces)
        self.head = nn.Sequential(nn.BatchNorm2d(chans[-1]), nn.Flatten(),
                                  nn.Linear(chans[-1] * side * side, config.embedding),
                                  nn.BatchNorm1d(config.embedding))

    def forward(self, x: Tensor) -> Tensor:
        s = self.config.size
        if x.dim() != 4 or x.shape[1:] != (1, s, s):
            raise ValueError(f"SynthIdentityEncoder expects [B,1,{s},{s}] grey in [-1,1] (arcface_crop output); "
                             f"got {list(x.shape)}")
        return F.normalize(self.head(self.blocks(self.stem(x))), dim=-1)          # [B,E]


def save_identity_encoder(encoder: SynthIdentityEncoder, path: str | os.PathLike,
                          report: "IdentityReport | None" = None) -> Path:
    return save_network(path, encoder, kind=_KIND, config=encoder.config,
                        report=None if report is None else report.to_dict())


def load_identity_encoder(path: str | os.PathLike | None = None,
                          device: str | torch.device = "cpu") -> SynthIdentityEncoder:
    """The encoder in `path` (None = the shipped default), frozen (no grad) and in eval mode."""
    state, cfg, _ = read_network(DEFAULT_IDENTITY_ENCODER if path is None else path, _KIND)
    enc = SynthIdentityEncoder(IdentityEncoderConfig(**cfg))
    enc.load_state_dict(state)
    enc.requires_grad_(False)
    return enc.eval().to(device)


# ---------------------------------------------------------------- data
def _default_crop() -> Callable[[Tensor, Tensor], Tensor]:
    from otavatar.training.losses import arcface_crop

    return arcface_crop


def synth_crops(images: np.ndarray, landmarks: np.ndarray, crop: Callable[[Tensor, Tensor], Tensor] | None = None,
                batch: int = 256) -> Tensor:
    """uint8 [N,R,R,3] frames + [N,68,2] px landmarks -> arcface_crop output [N,1,128,128] (float16 to halve
    the memory of a whole split; cast back before use)."""
    crop = crop or _default_crop()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images_to_tensor(images[i:i + batch], images.shape[1])
            out.append(crop(x, torch.from_numpy(np.ascontiguousarray(landmarks[i:i + batch]))).half())
    return torch.cat(out)


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Alignment jitter (3% shifts, 5% scale, 0.05 rad) + gain/bias + blur: the encoder must accept the
    crops of generated frames, whose landmarks and sharpness are imperfect."""
    b = len(x)
    theta = random_similarity(b, gen, shift=0.03, scale=0.05, rotate=0.05)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
        x = x.clone()
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k)
    gain = 1 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    return (x * gain + bias).clamp(-1, 1)


# ---------------------------------------------------------------- training and verification
@dataclass
class IdentityReport:
    steps: int
    batch: int
    seed: int
    train_identities: int
    train_frames: int
    seconds: float
    first_loss: float
    final_loss: float
    test_identities: int
    test_frames: int
    same_cosine: float           # mean cosine of pairs of different frames of one held-out identity
    different_cosine: float      # mean cosine of pairs of frames of two different held-out identities
    auc: float                   # P(cos(same pair) > cos(different pair)) over all held-out pairs
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def verification(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(mean same-identity cosine, mean different-identity cosine, ROC AUC of same vs different) over all
    unordered pairs of distinct frames. embeddings [N,E] unit norm, labels [N]."""
    e = np.asarray(embeddings, np.float64)
    lab = np.asarray(labels)
    cos = e @ e.T
    iu = np.triu_indices(len(e), k=1)
    c = cos[iu]
    same = (lab[:, None] == lab[None, :])[iu]
    if not same.any() or same.all():
        raise ValueError("verification needs at least two identities and two frames of one identity")
    # AUC by ranks (Mann-Whitney U), ties counted half
    order = np.argsort(c, kind="mergesort")
    ranks = np.empty(len(c))
    sorted_c = c[order]
    _, first, counts = np.unique(sorted_c, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_s, n_d = int(same.sum()), int((~same).sum())
    auc = (ranks[same].sum() - n_s * (n_s + 1) / 2) / (n_s * n_d)
    return float(c[same].mean()), float(c[~same].mean()), float(auc)


@torch.no_grad()
def embed(encoder: SynthIdentityEncoder, crops: Tensor, batch: int = 256) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(crops[i:i + batch].float()) for i in range(0, len(crops), batch)]).numpy()


def train_identity_encoder(lmdb_dir: str | os.PathLike, truth_npz: str | os.PathLike | None = None, *,
                           steps: int = 1500, batch: int = 64, seed: int = 0, out: str | os.PathLike | None = None,
                           lr: float = 2e-3, scale: float = 16.0, margin: float = 0.2,
                           config: IdentityEncoderConfig = IdentityEncoderConfig(),
                           crop: Callable[[Tensor, Tensor], Tensor] | None = None, frame_step: int = 1,
                           log_every: int = 0) -> tuple[SynthIdentityEncoder, IdentityReport]:
    """Train on the TRAIN subjects' frames (cosine-margin softmax, s=`scale`, m=`margin`; Adam, cosine lr),
    report verification on the held-out TEST subjects, save to `out` if given. `crop` defaults to
    otavatar.training.losses.arcface_crop (images [B,3,H,W] in [-1,1], landmarks [B,68,2] px)."""
    if steps < 1 or batch < 2:
        raise ValueError(f"need steps >= 1 and batch >= 2, got steps={steps}, batch={batch}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tr = load_synth_frames(lmdb_dir, truth_npz, split="train", frame_step=frame_step)
    te = load_synth_frames(lmdb_dir, truth_npz, split="test", frame_step=frame_step)
    x_tr = synth_crops(tr.images, tr.landmarks, crop)                       # [N,1,128,128] float16
    x_te = synth_crops(te.images, te.landmarks, crop)
    if x_tr.shape[1:] != (1, config.size, config.size):
        raise ValueError(f"crop must give [N,1,{config.size},{config.size}]; got {list(x_tr.shape)}")
    classes, y_tr = np.unique(tr.subject, return_inverse=True)
    y_tr = torch.from_numpy(y_tr.astype(np.int64))
    enc = SynthIdentityEncoder(config).train()
    weight = nn.Parameter(torch.randn(len(classes), config.embedding, generator=gen) * 0.01)   # class centres
    opt = torch.optim.Adam([*enc.parameters(), weight], lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    start = time.perf_counter()
    first = last = float("nan")
    for step in range(steps):
        idx = torch.randint(len(x_tr), (batch,), generator=gen)
        x = _augment(x_tr[idx].float(), gen)
        y = y_tr[idx]
        cos = enc(x) @ F.normalize(weight, dim=-1).T                          # [B,K]
        logits = scale * (cos - margin * F.one_hot(y, len(classes)))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = float(loss.detach())
        if step == 0:
            first = last
        if log_every and (step + 1) % log_every == 0:
            print(f"identity step {step + 1}/{steps} loss {last:.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    seconds = time.perf_counter() - start
    enc.eval()
    same, diff, auc = verification(embed(enc, x_te), te.subject)
    report = IdentityReport(steps=steps, batch=batch, seed=seed, train_identities=len(classes),
                            train_frames=len(tr), seconds=seconds, first_loss=first, final_loss=last,
                            test_identities=len(np.unique(te.subject)), test_frames=len(te), same_cosine=same,
                            different_cosine=diff, auc=auc)
    enc.requires_grad_(False)
    if out is not None:
        save_identity_encoder(enc, out, report)
    return enc, report
