"""Training losses of OTAvatar's decoupling-by-inverting (spec 3.5), written from the spec.

Images are [B,3,H,W] in [-1,1]; targets may be larger than predictions and are area-resized to the prediction
(the spec computes the low-res terms at the 64^2 render against 512^2 targets; our tiny model renders 32^2 and
super-resolves to 128^2). Every loss returns a scalar tensor; weights live in `LossWeights`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from otavatar.training.vgg import LAYER_NAMES, VGG19, vgg19

# ImageNet statistics torchvision's VGG19 was trained with, applied after mapping [-1,1] -> [0,1].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the spec 3.5 table (OTAvatar config/otavatar.yaml trainer.loss_weight)."""

    perceptual: float = 1.0
    style: float = 250.0    # Gram term, inside the perceptual loss, first scale only
    local: float = 10.0     # mouth + eyes L1
    pixel: float = 1.0      # smooth-L1
    identity: float = 1.0   # 1 - cos(ArcFace)
    monotonic: float = 1.0  # density must not fall going into the head
    tv: float = 1.0         # density smoothness (already includes EG3D's 0.25)


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a [B,C,H,W] tensor; got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point; got {x.dtype}")


def _check_pair(pred: Tensor, target: Tensor, channels: int | None = 3) -> None:
    _check_images("pred", pred)
    _check_images("target", target)
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"pred and target must share [B,C]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if channels is not None and pred.shape[1] != channels:
        raise ValueError(f"expected {channels}-channel images; got pred {tuple(pred.shape)}")
    if pred.shape[2] != pred.shape[3]:
        raise ValueError(f"pred must be square [B,C,S,S]; got {tuple(pred.shape)}")


def area_resize(x: Tensor, size: int) -> Tensor:
    """[B,C,H,W] -> [B,C,size,size]: area (adaptive average pool) when shrinking, bilinear when growing."""
    _check_images("x", x)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h >= size and w >= size:
        # Area = mean over each output pixel's footprint: the spec's "area-downsampled" target (512 -> 64 is an
        # exact 8x8 box mean; non-integer ratios average the overlapping input pixels).
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def pixel_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 (beta 1) between pred [B,3,S,S] and target area-resized to S; images in [-1,1]."""
    _check_pair(pred, target, channels=None)
    return F.smooth_l1_loss(pred, area_resize(target, pred.shape[-1]), beta=1.0)


def _imagenet(x: Tensor) -> Tensor:
    """[-1,1] -> ImageNet-normalised, as torchvision's VGG expects."""
    mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1.0) * 0.5 - mean) / std


def gram_matrix(features: Tensor) -> Tensor:
    """features [B,C,H,W] -> Gram [B,C,C] normalised by C*H*W (spec 3.5)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Multi-scale VGG19 L1 feature loss + Gram style term (spec 3.5).

    Sum over scales (each further scale halves both images bilinearly) and layers of the mean L1 between features,
    plus style_weight x L1 between Gram matrices at the first scale only. The spec uses 2 scales for the 64^2
    render and 4 for the 512^2 super-resolved image; our tiny model renders 32^2 and super-resolves to 128^2.
    With vgg=None a fixed-seed random VGG19 is used (a random-feature perceptual loss; see `vgg19`).
    """

    def __init__(self, vgg: VGG19 | None = None, *,
                 layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 num_scales: int = 2, style_weight: float = 250.0) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        if style_weight < 0:
            raise ValueError(f"style_weight must be >= 0, got {style_weight}")
        if isinstance(layers, str) or not layers or any(name not in LAYER_NAMES for name in layers):
            raise ValueError(f"layers must be VGG19 ReLU names from {list(LAYER_NAMES)}; got {layers!r}")
        self.vgg = vgg if vgg is not None else vgg19(None)
        self.vgg.requires_grad_(False)
        self.layers = tuple(layers)
        self.num_scales = int(num_scales)
        self.style_weight = float(style_weight)
        # relu{b}_k sits after b-1 max-pools, so the smallest scale must be at least 2^(b-1) px (16 for relu5_1).
        self._min_last_scale = 2 ** (max(int(name[4]) for name in self.layers) - 1)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # the feature network stays in eval mode (spec: "VGG19 ... eval")
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        size = pred.shape[-1]
        smallest = size // 2 ** (self.num_scales - 1)
        if smallest < self._min_last_scale:
            raise ValueError(f"num_scales={self.num_scales} halves a {size}px prediction to {smallest}px, below the "
                             f"{self._min_last_scale}px that layer {max(self.layers, key=lambda n: n[4])} needs")
        x = _imagenet(pred)
        with torch.no_grad():
            y = _imagenet(area_resize(target, size))
        total = pred.new_zeros(())
        for scale in range(self.num_scales):
            if scale > 0:
                x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=True)
                y = F.interpolate(y, scale_factor=0.5, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=True)
            fx = self.vgg(x, self.layers)
            with torch.no_grad():
                fy = self.vgg(y, self.layers)
            for name in self.layers:
                total = total + F.l1_loss(fx[name], fy[name])
                if scale == 0 and self.style_weight > 0:
                    total = total + self.style_weight * F.l1_loss(gram_matrix(fx[name]), gram_matrix(fy[name]))
        return total


# ---------------------------------------------------------------------------------------------------------------
# Identity (ArcFace) loss

# The standard 5-point ArcFace template on a 112x112 crop (insightface): image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner, in pixel coordinates (pixel centres at integers).
ARCFACE_TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                        (41.5493, 92.3655), (70.7299, 92.2041))
_GREY = (0.2989, 0.587, 0.114)


def five_points(landmarks: Tensor) -> Tensor:
    """[B,68,2] iBUG landmarks -> [B,5,2]: eye centres (36/39, 42/45), nose tip 30, mouth corners 48, 54."""
    if landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"landmarks must be [B,68,2]; got {tuple(landmarks.shape)}")
    return torch.stack([(landmarks[:, 36] + landmarks[:, 39]) * 0.5,
                        (landmarks[:, 42] + landmarks[:, 45]) * 0.5,
                        landmarks[:, 30], landmarks[:, 48], landmarks[:, 54]], dim=1)


def similarity_transform(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity (Umeyama 1991, reflection excluded) src [B,N,2] -> dst [B,N,2]: [B,2,3]."""
    src64, dst64 = src.to(torch.float64), dst.to(torch.float64)
    mu_s, mu_d = src64.mean(dim=1, keepdim=True), dst64.mean(dim=1, keepdim=True)
    cs, cd = src64 - mu_s, dst64 - mu_d
    cov = cd.transpose(1, 2) @ cs / src.shape[1]                         # [B,2,2]
    u, sigma, vh = torch.linalg.svd(cov)
    # d = -1 when the best orthogonal map is a reflection: flip the weakest axis so R stays a rotation.
    d = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.stack([torch.ones_like(d), d], dim=-1)                  # [B,2]
    rot = u @ torch.diag_embed(diag) @ vh
    var_s = cs.pow(2).sum(dim=(1, 2)) / src.shape[1]
    if bool((var_s <= 1e-12).any()):
        raise ValueError("the 5 alignment points coincide; cannot estimate a similarity transform")
    scale = (sigma * diag).sum(-1) / var_s                               # [B]
    a = scale[:, None, None] * rot
    t = mu_d.transpose(1, 2) - a @ mu_s.transpose(1, 2)                  # [B,2,1]
    return torch.cat([a, t], dim=2).to(src.dtype)


def _pixel_to_norm(width: int, height: int, like: Tensor) -> Tensor:
    """3x3 map from pixel coordinates (centres at integers) to grid_sample's align_corners=False [-1,1]."""
    m = torch.zeros(3, 3, dtype=like.dtype, device=like.device)
    m[0, 0], m[0, 2] = 2.0 / width, 1.0 / width - 1.0
    m[1, 1], m[1, 2] = 2.0 / height, 1.0 / height - 1.0
    m[2, 2] = 1.0
    return m


def warp_affine(images: Tensor, matrix: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Differentiable cv2.warpAffine: images [B,C,H,W], matrix [B,2,3] (source pixel -> output pixel) -> output
    [B,C,h,w]; bilinear, zeros outside (0 is mid-grey for [-1,1] images)."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    b, c, h, w = images.shape
    with torch.no_grad():
        m = matrix.to(torch.float64)
        full = torch.zeros(b, 3, 3, dtype=torch.float64, device=images.device)
        full[:, :2] = m
        full[:, 2, 2] = 1.0
        n_in = _pixel_to_norm(w, h, full)
        n_out = _pixel_to_norm(out_w, out_h, full)
        # normalised output -> output pixel -> source pixel -> normalised source
        theta = (n_in @ torch.linalg.inv(full) @ torch.linalg.inv(n_out))[:, :2].to(images.dtype)
        grid = F.affine_grid(theta, [b, c, out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _to_grey(x: Tensor) -> Tensor:
    weights = x.new_tensor(_GREY).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def arcface_crop(images: Tensor, landmarks: Tensor, *, size: int = 128) -> Tensor:
    """images [B,3,H,W] in [-1,1], landmarks [B,68,2] (pixel coords of `images`) -> grey faces [B,1,size,size].

    A similarity transform from the 5 derived points to the 112-px ArcFace template scaled to `size` (least
    squares, no reflection), computed from the landmarks only (no gradient through it); the warp itself is
    differentiable w.r.t. the images. Grey = 0.2989 R + 0.587 G + 0.114 B on the [-1,1] values (spec 3.5).
    """
    _check_images("images", images)
    if images.shape[1] != 3:
        raise ValueError(f"images must be RGB [B,3,H,W]; got {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"landmarks batch {landmarks.shape[0]} != images batch {images.shape[0]}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    with torch.no_grad():
        src = five_points(landmarks.detach().to(device=images.device, dtype=torch.float64))
        dst = src.new_tensor(ARCFACE_TEMPLATE_112) * (size / 112.0)
        matrix = similarity_transform(src, dst.expand_as(src))
    return _to_grey(warp_affine(images, matrix, size))


class IdentityLoss(nn.Module):
    """1 - cosine(enc(crop(pred)), enc(crop(target))), batch mean (spec 3.5); the encoder is frozen here.

    As every loss here, the target is area-resized to the prediction's size and `landmarks` [B,68,2] are the
    TARGET's landmarks in pixel coordinates of the prediction (spec: LR terms at the render size, landmarks
    scaled by render/512). Both crops use the target's landmarks, as published: the prediction is meant to sit
    exactly where the target's face is.
    """

    def __init__(self, encoder: nn.Module, *, size: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder.eval()
        self.encoder.requires_grad_(False)
        self.size = int(size)

    def train(self, mode: bool = True) -> IdentityLoss:
        super().train(mode)
        self.encoder.eval()  # frozen BatchNorm statistics and no dropout, whatever the trainer's mode
        return self

    def forward(self, pred: Tensor, target: Tensor, landmarks: Tensor) -> Tensor:
        _check_pair(pred, target)
        emb_pred = self.encoder(arcface_crop(pred, landmarks, size=self.size))                        # [B,D]
        with torch.no_grad():
            target_crop = arcface_crop(area_resize(target, pred.shape[-1]), landmarks, size=self.size)
            emb_target = self.encoder(target_crop)                                                     # [B,D]
        return (1.0 - F.cosine_similarity(emb_pred, emb_target, dim=1, eps=1e-8)).mean()


# ---------------------------------------------------------------------------------------------------------------
# Local (mouth + eyes) loss

_MOUTH = slice(48, 68)
_LEFT_EYE = slice(36, 42)   # iBUG 36-41: the subject's right eye, on the image's left
_RIGHT_EYE = slice(42, 48)


def _boxes(landmarks: Tensor, part: slice, pad: float) -> Tensor:
    """[B,68,2] -> [B,4] (x0, y0, x1, y1) pixel box around landmarks[:, part], padded by `pad` px each side."""
    pts = landmarks[:, part]
    lo, hi = pts.amin(dim=1) - pad, pts.amax(dim=1) + pad
    return torch.cat([lo, hi], dim=1)


def crop_boxes(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """images [B,C,H,W], boxes [B,4] (x0,y0,x1,y1 in pixel coords, centres at integers) -> [B,C,size,size].

    Bilinear resampling of each box to a size x size grid (cells centred as in roi_align, zeros outside the
    image), with affine_grid/grid_sample (align_corners=False) so the crop is differentiable w.r.t. the images.
    The box stays axis-aligned and may be non-square: it is stretched to the square, as roi_align does.
    """
    b, c, h, w = images.shape
    with torch.no_grad():
        box = boxes.to(images.dtype)
        cx, cy = (box[:, 0] + box[:, 2]) * 0.5, (box[:, 1] + box[:, 3]) * 0.5
        bw, bh = (box[:, 2] - box[:, 0]).clamp_min(1e-3), (box[:, 3] - box[:, 1]).clamp_min(1e-3)
        theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
        # output u in (-1,1) -> pixel x = cx + u*bw/2 -> normalised input (2x+1)/W - 1
        theta[:, 0, 0], theta[:, 0, 2] = bw / w, (2 * cx + 1) / w - 1
        theta[:, 1, 1], theta[:, 1, 2] = bh / h, (2 * cy + 1) / h - 1
        grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def local_loss(pred: Tensor, target: Tensor, landmarks: Tensor, *, mouth_size: int = 120,
               eye_size: int = 80) -> Tensor:
    """Mouth + eyes L1 (spec 3.5): pred [B,3,S,S], target (area-resized to S), landmarks [B,68,2] px of pred.

    Boxes: mouth = points 48-67 padded by 10/512*S px, eyes = 36-41 and 42-47 padded by 20/512*S px; both
    images are cropped to mouth_size / eye_size squares scaled by S/512 (but at least 8 px); the result is
    mean L1 of the mouth crops + mean L1 of the two eye crops (one region, as one roi_align call over both).
    The published code takes BOTH eye crops from the target (target vs target), so its eye term was always 0
    and the loss was mouth-only; here the eye term compares the prediction with the target (DESIGN 3).
    """
    _check_pair(pred, target)
    size = pred.shape[-1]
    if landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (68, 2) or landmarks.shape[0] != pred.shape[0]:
        raise ValueError(f"landmarks must be [B,68,2] with B={pred.shape[0]}; got {tuple(landmarks.shape)}")
    target = area_resize(target, size)
    scale = size / 512.0
    lm = landmarks.detach().to(device=pred.device, dtype=pred.dtype)
    total = pred.new_zeros(())
    regions = (((_MOUTH,), 10.0, mouth_size), ((_LEFT_EYE, _RIGHT_EYE), 20.0, eye_size))
    for parts, pad, out in regions:
        side = max(8, round(out * scale))   # 120 -> 8 px at a 32^2 render (7.5 rounds to 8), 120 at 512^2
        boxes = torch.cat([_boxes(lm, part, pad * scale) for part in parts], dim=0)        # [P*B,4]
        pred_crop = crop_boxes(pred.repeat(len(parts), 1, 1, 1), boxes, side)
        with torch.no_grad():
            target_crop = crop_boxes(target.repeat(len(parts), 1, 1, 1), boxes, side)
        total = total + F.l1_loss(pred_crop, target_crop)
    return total


# ---------------------------------------------------------------------------------------------------------------
# Density regularisers on the tri-planes (EG3D's, as OTAvatar uses them)

TV_WEIGHT = 0.25        # EG3D density_reg (spec 1.2 table)
TV_DISTANCE = 0.004     # EG3D density_reg_p_dist: std of the perturbation


@dataclass(frozen=True)
class DensityLosses:
    monotonic: Tensor   # scalar: mean ReLU(sigma(p) - sigma(p - dz)): density must not fall going into the head
    tv: Tensor          # scalar: 0.25 * mean |sigma(p) - sigma(p + N(0, 0.004^2))|


def density_regularizers(generator, planes: Tensor, *, points: int = 2000,
                         rng: torch.Generator | None = None) -> DensityLosses:
    """Monotonic-density and TV regularisers on raw sigma at random points (spec 3.5).

    planes [B,3,C,P,P] from `generator.planes(ws)`; raw sigma = generator.decoder(triplane_sample(planes, p))[1]
    (before the softplus(sigma - 1) activation). `rng` (a CPU torch.Generator) makes the points reproducible.
    """
    from otavatar.kernels import triplane_sample

    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B,3,C,P,P]; got {tuple(planes.shape)}")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    render = generator.config.render
    b = planes.shape[0]
    # Uniform in [-1,1]^3, inherited from EG3D: the tri-plane cube is only [-box_warp/2, box_warp/2]^3 = +-0.5, so
    # 1/8 of the points lie inside it and each plane sees a given point with probability 1/4 (zero padding
    # elsewhere): most samples decode the features of empty space.
    p = torch.rand(b, points, 3, generator=rng) * 2 - 1                          # [B,N,3]
    # Monotonic: the head faces +z (frontal camera on +z), so p - dz is one step deeper into the head, "behind"
    # p as the camera sees it. EG3D pairs sigma(p) ("front") with sigma(p - dz) ("behind") and penalises
    # relu(front - behind): density must not DEcrease going into the head. dz = box_warp/256: one texel of a
    # 256-wide plane.
    behind = p + torch.tensor([0.0, 0.0, -render.box_warp / 256.0])
    # TV: the same points jittered by N(0, 0.004^2) per coordinate.
    jitter = p + torch.randn(b, points, 3, generator=rng) * TV_DISTANCE
    pts = torch.cat([p, behind, jitter], dim=1).to(device=planes.device, dtype=planes.dtype)   # [B,3N,3]
    features = triplane_sample(planes, pts, box_warp=render.box_warp, plane_axes=render.plane_axes)
    _, sigma = generator.decoder(features)                                       # [B,3N,1] raw density
    front, back, moved = sigma.split(points, dim=1)
    return DensityLosses(monotonic=F.relu(front - back).mean(), tv=TV_WEIGHT * F.l1_loss(front, moved))
