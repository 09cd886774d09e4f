"""SynthHeads rendering: vectorised sphere tracing of an analytic head SDF (torch, CPU or GPU).

A frame is the canonical head (fixed in world space, deformed by the expression) seen from the frame's EG3D
camera, so `Clip.cameras[i]` is exactly the label that renders `Clip.images[i]`. Image coordinates: pixel
(row i, column j) is the ray through ((j + 0.5) / W, (i + 0.5) / H) in normalised image space; landmarks are
continuous pixel coordinates (x right, y down) in the same convention (pixel j spans [j, j + 1)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from otavatar.camera import split_label, validate_camera
from otavatar.synthetic.params import CONTROLS, Identity, Motion

__all__ = ["Clip", "render", "PARTS", "landmarks_canonical", "landmarks_world"]

PARTS = ("background", "skin", "hair", "eye_right", "eye_left", "brow", "lips", "mouth_inner")
_C = {name: i for i, name in enumerate(CONTROLS)}
_BOUND_CENTRE = (0.0, -0.05, 0.0)
_BOUND_RADIUS = 0.45            # holds every sampled head; the neck is cut where it leaves this sphere
_STEPS = 48
_EPS = 5e-4
_RELAX = 0.9                    # the ellipsoid distance is approximate and smin/warps are not 1-Lipschitz
_LIGHT = (0.35, 0.45, 1.0)
_BACKGROUND = 1.0               # white, as the published data is matted


@dataclass
class Clip:
    """A rendered clip. images uint8 [T,H,W,3]; coeffs float32 [T,70] (exp 64 + angle 3 + trans 3);
    cameras float32 [T,25] (EG3D labels); landmarks float32 [T,68,2] (iBUG, pixels); masks bool [T,H,W];
    depths float32 [T,H,W] (camera-space z, 0 on the background); parts uint8 [T,H,W] (indices into PARTS);
    controls float32 [T,8] (semantic truth, CONTROLS order)."""

    images: NDArray[np.uint8]
    coeffs: NDArray[np.float32]
    cameras: NDArray[np.float32]
    landmarks: NDArray[np.float32]
    masks: NDArray[np.bool_]
    depths: NDArray[np.float32]
    parts: NDArray[np.uint8]
    controls: NDArray[np.float32]
    identity: Identity
    motion: Motion

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------- expression-dependent feature geometry
# Shared by the texture (implicit tests) and the landmarks (explicit points), so they agree exactly.
def _eye(who: Identity, blink):
    ew, eh = who.eye_size
    return ew, eh * (1.0 - 0.97 * blink)                                 # half-width, half-height


def _brow_y(who: Identity, a, raise_, furrow):
    return who.eye_y + who.brow_gap + 0.02 * raise_ + who.brow_arch * _sin(np.pi * a) - 0.015 * furrow * (1 - a)


def _sin(a):
    return a.sin() if hasattr(a, "sin") else np.sin(a)      # torch tensors or numpy arrays


def _brow_x(who: Identity):
    ew = who.eye_size[0]
    return who.eye_spacing - 0.6 * ew, who.eye_spacing + 1.3 * ew      # inner, outer (|x|)


def _mouth(who: Identity, jaw, smile, pucker):
    """(half-width, half-gap, lip thickness, corner lift)."""
    mw = who.mouth_width * (1 + 0.25 * smile - 0.3 * pucker)
    gap = 0.001 + 0.018 * jaw
    lt = who.lip_thickness * (1 + 0.6 * pucker - 0.2 * smile)
    return mw, gap, lt, 0.012 * smile - 0.004 * pucker


def _chin(who: Identity):
    """(warp top y, warp bottom y): below the mouth the head is pulled down by 0.03 * jaw_open."""
    top = who.mouth_y - 0.045
    return top, top - 0.06


def _jaw_ellipse(who: Identity):
    yc = who.eye_y - 0.02
    chin_y = who.head_y - 0.93 * who.head_radii[1]
    return 0.92 * who.head_radii[0], yc, yc - chin_y


def landmarks_canonical(who: Identity, controls: ArrayLike) -> NDArray[np.float64]:
    """[T,68,2] world (x, y) of the 68 iBUG landmarks for the expression controls [T,8], before the surface
    depth is found (the chin points include the jaw-open warp)."""
    c = np.asarray(controls, dtype=np.float64).reshape(-1, len(CONTROLS))
    t = len(c)
    jaw, smile, pucker = c[:, _C["jaw_open"]], c[:, _C["smile"]], c[:, _C["pucker"]]
    out = np.zeros((t, 68, 2))
    # jaw 0-16: image-left (world -x) ear, chin, image-right
    hx, yc, hy = _jaw_ellipse(who)
    phi = np.linspace(-0.95, 0.95, 17) * np.pi / 2
    out[:, :17, 0] = hx * np.sin(phi)
    y = np.broadcast_to(yc - hy * np.cos(phi), (t, 17)).copy()
    top, bottom = _chin(who)
    canon = y.copy()
    for _ in range(6):                                                    # y + drop * w(y) = canonical y
        y = canon - 0.03 * jaw[:, None] * _smoothstep_np(top, bottom, y)
    out[:, :17, 1] = y
    # brows 17-21 (world -x, outer -> inner) and 22-26 (inner -> outer)
    b_in, b_out = _brow_x(who)
    a = np.linspace(0, 1, 5)
    for s, sl, aa in ((-1, slice(17, 22), a[::-1]), (1, slice(22, 27), a)):
        out[:, sl, 0] = s * (b_in + aa * (b_out - b_in))
        out[:, sl, 1] = _brow_y(who, aa[None], c[:, _C["brow_raise"], None], c[:, _C["brow_furrow"], None])
    # nose bridge 27-30, nostrils 31-35
    out[:, 27:31, 1] = who.eye_y - np.linspace(0.0, 0.85, 4) * who.nose_length
    out[:, 31:36, 0] = np.linspace(-1, 1, 5) * who.nose_width
    out[:, 31:36, 1] = who.eye_y - who.nose_length + np.array([0.008, 0.003, 0.0, 0.003, 0.008])
    # eyes 36-41 (world -x: outer, upper, upper, inner, lower, lower), 42-47 (inner, ..., outer, ...)
    u = np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
    side = np.array([0, 1, 1, 0, -1, -1])
    for s, sl, blink in ((-1, slice(36, 42), "blink_right"), (1, slice(42, 48), "blink_left")):
        ew, eh = _eye(who, c[:, _C[blink], None])
        out[:, sl, 0] = s * who.eye_spacing + u * ew
        out[:, sl, 1] = who.eye_y + side * eh * np.sqrt(1 - u * u)
    # mouth: outer 48-59, inner 60-67
    mw, gap, lt, lift = (v[:, None] for v in _mouth(who, jaw, smile, pucker))
    uo = np.array([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])
    so = np.array([0, 1, 1, 1, 1, 1, 0, -1, -1, -1, -1, -1])
    ui = np.array([-1, -0.5, 0, 0.5, 1, 0.5, 0, -0.5])
    si = np.array([0, 1, 1, 1, 0, -1, -1, -1])
    for sl, uu, ss, inner in ((slice(48, 60), uo, so, False), (slice(60, 68), ui, si, True)):
        prof = np.sqrt(1 - uu * uu)
        half = gap if inner else np.where(ss > 0, gap + lt, gap + 1.2 * lt)
        out[:, sl, 0] = uu * mw
        out[:, sl, 1] = who.mouth_y + lift * uu * uu + ss * half * prof
    return out


def _smoothstep_np(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------- torch: SDF, tracing, shading
def _torch():
    import torch
    return torch


def _smoothstep(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _ellipsoid(p, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (centre c, radii r; broadcastable)."""
    q = (p - c) / r
    k0 = q.norm(dim=-1)
    k1 = (q / r).norm(dim=-1)
    return k0 * (k0 - 1) / k1.clamp_min(1e-9)


def _smin(a, b, k):
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


class _Head:
    """The identity's SDF; per-ray expression values jaw [N], puff [N] deform it."""

    def __init__(self, who: Identity, device):
        torch = _torch()
        f = lambda *v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
        rx, ry, rz = who.head_radii
        self.who = who
        self.head_c, self.head_r = f(0.0, who.head_y, 0.0), f(rx, ry, rz)
        self.hair_r = self.head_r + who.hair_thickness
        slope = (who.hairline_front - who.hairline_back) / (2 * rz)
        self.hair_plane = (slope, who.hairline_back + slope * rz, math.sqrt(1 + slope * slope))
        nose_y = who.eye_y - who.nose_length / 2
        zf = rz * math.sqrt(max(1 - ((nose_y - who.head_y) / ry) ** 2, 0.0))
        self.nose_c = f(0.0, nose_y, zf + 0.65 * who.nose_depth - who.nose_depth)
        self.nose_r = f(who.nose_width, who.nose_length / 2, who.nose_depth)
        self.ear_c = f(0.97 * rx, who.eye_y - 0.02, -0.01)
        self.ear_r = f(0.012, who.ear_size, 0.55 * who.ear_size)
        cx, cy = 0.46 * rx, who.mouth_y + 0.03
        zs = rz * math.sqrt(max(1 - (cx / rx) ** 2 - ((cy - who.head_y) / ry) ** 2, 0.0))
        self.cheek_c = f(cx, cy, zs - 0.05)
        self.neck_a, self.neck_b = f(0.0, who.head_y - 0.1, -0.04), f(0.0, who.head_y - 0.7, -0.06)
        self.neck_r = 0.5 * rx
        self.chin = _chin(who)

    def parts_sdf(self, p, jaw, puff):
        """(total distance, skull distance, hair distance) at points p [N,3]."""
        torch = _torch()
        drop = 0.03 * jaw * _smoothstep(self.chin[0], self.chin[1], p[:, 1])
        q = torch.stack([p[:, 0], p[:, 1] + drop, p[:, 2]], dim=-1)
        skull = _ellipsoid(q, self.head_c, self.head_r)
        slope, offset, norm = self.hair_plane
        hair = torch.maximum(_ellipsoid(q, self.head_c, self.hair_r), (offset + slope * q[:, 2] - q[:, 1]) / norm)
        d = torch.minimum(skull, hair)
        d = _smin(d, _ellipsoid(q, self.nose_c, self.nose_r), 0.02)
        qa = torch.stack([q[:, 0].abs(), q[:, 1], q[:, 2]], dim=-1)      # left/right symmetric parts
        d = _smin(d, _ellipsoid(qa, self.ear_c, self.ear_r), 0.01)
        cheek = (qa - self.cheek_c).norm(dim=-1) - (0.04 + 0.025 * puff)
        d = _smin(d, cheek, 0.03)
        ab = self.neck_b - self.neck_a
        h = ((p - self.neck_a) @ ab / (ab @ ab)).clamp(0, 1)
        neck = (p - self.neck_a - h[:, None] * ab).norm(dim=-1) - self.neck_r
        return _smin(d, neck, 0.05), skull, hair

    def sdf(self, p, jaw, puff):
        return self.parts_sdf(p, jaw, puff)[0]


def _trace(head: _Head, o, d, t0, t1, jaw, puff):
    """Sphere-trace rays o + t d for t in [t0, t1]; returns (t [N], hit [N] bool)."""
    torch = _torch()
    t = t0.clone()
    hit = torch.zeros(len(o), dtype=torch.bool, device=o.device)
    idx = torch.nonzero(t0 < t1).squeeze(1)
    ao, ad, at, at1, aj, ap = o[idx], d[idx], t0[idx], t1[idx], jaw[idx], puff[idx]
    for step in range(_STEPS):
        if idx.numel() == 0:
            break
        dist = head.sdf(ao + ad * at[:, None], aj, ap)
        done = dist < _EPS if step < _STEPS - 1 else dist < 20 * _EPS   # grazing rays: accept near misses
        t[idx[done]] = at[done]
        hit[idx[done]] = True
        at = at + _RELAX * dist
        keep = ~done & (at < at1)
        idx, ao, ad, at, at1, aj, ap = idx[keep], ao[keep], ad[keep], at[keep], at1[keep], aj[keep], ap[keep]
    return t, hit


def _sphere_interval(o, d):
    torch = _torch()
    c = torch.tensor(_BOUND_CENTRE, dtype=o.dtype, device=o.device)
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - _BOUND_RADIUS ** 2)
    root = disc.clamp_min(0).sqrt()
    t0, t1 = (-b - root).clamp_min(0), -b + root
    t1 = torch.where(disc > 0, t1, torch.zeros_like(t1))                  # miss: empty interval
    return t0, t1


def _normal(head: _Head, p, jaw, puff):
    torch = _torch()
    e = 5e-4
    ks = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=p.dtype, device=p.device)
    n = sum(k * head.sdf(p + e * k, jaw, puff)[:, None] for k in ks)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _albedo(head: _Head, p, ctrl, skull_d, hair_d):
    """(albedo [N,3], part index [N]) at surface points p [N,3] with controls ctrl [N,8]."""
    torch = _torch()
    who = head.who
    dev, dt = p.device, p.dtype
    x, y, z = p.unbind(-1)
    col = lambda rgb: torch.tensor(rgb, dtype=dt, device=dev).expand(len(p), 3)  # noqa: E731
    tex = torch.tensor(who.texture, dtype=dt, device=dev)
    freqs, phases, amp = tex[:12].view(4, 3), tex[12:16], tex[16]
    wobble = torch.sin(p @ freqs.T + phases).mean(-1)                     # low-frequency skin texture
    albedo = col(who.skin) * (1 + amp * wobble)[:, None]
    part = torch.ones(len(p), dtype=torch.uint8, device=dev)

    def paint(mask, rgb, index):
        nonlocal albedo, part
        albedo = torch.where(mask[:, None], col(rgb) if not torch.is_tensor(rgb) else rgb, albedo)
        part = torch.where(mask, torch.full_like(part, index), part)

    front = z > 0.05
    g = lambda name: ctrl[:, _C[name]]  # noqa: E731
    # brows
    b_in, b_out = _brow_x(who)
    a = (x.abs() - b_in) / (b_out - b_in)
    by = _brow_y(who, a, g("brow_raise"), g("brow_furrow"))
    paint(front & (a >= 0) & (a <= 1) & ((y - by).abs() < who.brow_thickness * (1 - 0.4 * a)), who.brows, 5)
    # eyes: white, iris, pupil, inside the blink-dependent ellipse
    for s, blink, index in ((-1, "blink_right", 3), (1, "blink_left", 4)):
        ew, eh = _eye(who, g(blink))
        ex = x - s * who.eye_spacing
        ey = y - who.eye_y
        inside = front & ((ex / ew) ** 2 + (ey / eh.clamp_min(1e-5)) ** 2 < 1)
        r2 = ex * ex + ey * ey
        eye_rgb = torch.where((r2 < who.iris_radius ** 2)[:, None], col(who.iris), col((0.95, 0.95, 0.93)))
        eye_rgb = torch.where((r2 < (0.45 * who.iris_radius) ** 2)[:, None], col((0.03, 0.03, 0.03)), eye_rgb)
        paint(inside, eye_rgb, index)
    # mouth: lips between the outer and inner curves, a dark opening inside
    mw, gap, lt, lift = _mouth(who, g("jaw_open"), g("smile"), g("pucker"))
    u = x / mw
    prof = (1 - u * u).clamp_min(0).sqrt()
    centre = who.mouth_y + lift * u * u
    dy = y - centre
    in_u = front & (u.abs() < 1)
    inner = in_u & (dy.abs() < gap * prof)
    lips = in_u & ~inner & (dy < (gap + lt) * prof) & (dy > -(gap + 1.2 * lt) * prof)
    paint(lips, who.lips, 6)
    paint(inner, (0.25, 0.06, 0.07), 7)
    # hair: the hair shell, where it lies outside the skull
    paint(hair_d < skull_d - 1e-4, who.hair, 2)
    return albedo.clamp(0, 1), part


def _rays(cameras, resolution, device):
    """World-space ray origins and unit directions [F*H*W, 3] for labels cameras [F,25]."""
    torch = _torch()
    pose, K = split_label(cameras)
    pose = torch.as_tensor(pose, dtype=torch.float32, device=device)
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    h = w = resolution
    v, u = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h, (torch.arange(w, device=device) + 0.5) / w,
                          indexing="ij")
    xc = (u[None] - K[:, 0, 2, None, None] - K[:, 0, 1, None, None] * 0) / K[:, 0, 0, None, None]
    yc = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    dirs = torch.stack([xc, yc, torch.ones_like(xc)], dim=-1)             # [F,H,W,3] camera space
    dirs = torch.einsum("fij,fhwj->fhwi", pose[:, :3, :3], dirs)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = pose[:, None, None, :3, 3].expand_as(dirs)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3)


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not 8 <= resolution <= 2048:
        raise ValueError(f"resolution must be an int in [8, 2048], got {resolution!r}")
    return int(resolution)


def render(identity: Identity, motion: Motion, resolution: int = 128, *, cameras: ArrayLike | None = None,
           device: str = "cpu", max_rays: int = 1 << 18) -> Clip:
    """Render `identity` performing `motion` -> Clip.

    cameras: None renders each frame from its pose camera (motion.cameras()); a label [25] or labels [T,25]
    render the same expressions from other views (multi-view ground truth); coeffs still describe the motion.
    max_rays bounds the rays traced at once (memory).
    """
    torch = _torch()
    if not isinstance(identity, Identity):
        raise TypeError(f"identity must be a synthetic.Identity, got {type(identity).__name__}")
    if not isinstance(motion, Motion):
        raise TypeError(f"motion must be a synthetic.Motion, got {type(motion).__name__}")
    res = _check_resolution(resolution)
    t = motion.frames
    cams = motion.cameras() if cameras is None else validate_camera(cameras, batch=t)
    head = _Head(identity, device)
    ctrl_all = torch.as_tensor(motion.controls, dtype=torch.float32, device=device)
    light = torch.tensor(_LIGHT, dtype=torch.float32, device=device)
    light = light / light.norm()
    images = np.empty((t, res, res, 3), np.uint8)
    masks = np.empty((t, res, res), bool)
    depths = np.empty((t, res, res), np.float32)
    parts = np.empty((t, res, res), np.uint8)
    per = max(1, max_rays // (res * res))
    with torch.no_grad():
        for f0 in range(0, t, per):
            f1 = min(t, f0 + per)
            o, d = _rays(cams[f0:f1], res, device)
            frame = torch.arange(f1 - f0, device=device).repeat_interleave(res * res)
            ctrl = ctrl_all[f0:f1][frame]
            jaw, puff = ctrl[:, _C["jaw_open"]], ctrl[:, _C["cheek_puff"]]
            t0, t1 = _sphere_interval(o, d)
            tt, hit = _trace(head, o, d, t0, t1, jaw, puff)
            hi = torch.nonzero(hit).squeeze(1)
            p = o[hi] + d[hi] * tt[hi, None]
            _, skull_d, hair_d = head.parts_sdf(p, jaw[hi], puff[hi])
            albedo, part = _albedo(head, p, ctrl[hi], skull_d, hair_d)
            n = _normal(head, p, jaw[hi], puff[hi])
            shade = 0.5 + 0.6 * (n @ light).clamp_min(0)
            rgb = torch.full((len(o), 3), _BACKGROUND, device=device)
            rgb[hi] = (albedo * shade[:, None]).clamp(0, 1)
            pose_r = torch.as_tensor(split_label(cams[f0:f1])[0][:, :3, 2], dtype=torch.float32, device=device)
            depth = torch.zeros(len(o), device=device)
            depth[hi] = tt[hi] * (d[hi] * pose_r[frame[hi]]).sum(-1)      # camera-space z = t * (d . forward)
            labels = torch.zeros(len(o), dtype=torch.uint8, device=device)
            labels[hi] = part
            shape = (f1 - f0, res, res)
            images[f0:f1] = (rgb * 255 + 0.5).clamp(0, 255).to(torch.uint8).view(*shape, 3).cpu().numpy()
            masks[f0:f1] = hit.view(shape).cpu().numpy()
            depths[f0:f1] = depth.view(shape).cpu().numpy()
            parts[f0:f1] = labels.view(shape).cpu().numpy()
        landmarks = _landmarks(head, motion, cams, res, device)
    return Clip(images=images, coeffs=motion.coeffs(), cameras=cams, landmarks=landmarks, masks=masks,
                depths=depths, parts=parts, controls=motion.controls.copy(), identity=identity, motion=motion)


def landmarks_world(identity: Identity, motion: Motion, device: str = "cpu") -> NDArray[np.float32]:
    """[T,68,3] world positions of the landmarks: canonical (x, y) moved onto the face surface along -z."""
    with _torch().no_grad():
        return _landmarks_world(_Head(identity, device), motion, device)


def _landmarks_world(head: _Head, motion: Motion, device) -> NDArray[np.float32]:
    torch = _torch()
    xy = torch.as_tensor(landmarks_canonical(head.who, motion.controls), dtype=torch.float32, device=device)
    t = len(xy)
    o = torch.cat([xy.reshape(-1, 2), torch.full((t * 68, 1), 0.6, device=device)], dim=-1)
    d = torch.tensor([0.0, 0.0, -1.0], device=device).expand_as(o).contiguous()
    ctrl = torch.as_tensor(motion.controls, dtype=torch.float32, device=device).repeat_interleave(68, dim=0)
    tt, _ = _trace(head, o, d, torch.zeros(len(o), device=device), torch.full((len(o),), 0.8, device=device),
                   ctrl[:, _C["jaw_open"]], ctrl[:, _C["cheek_puff"]])
    return (o + d * tt[:, None]).view(t, 68, 3).cpu().numpy()


def _landmarks(head: _Head, motion: Motion, cams: np.ndarray, res: int, device) -> NDArray[np.float32]:
    pts = _landmarks_world(head, motion, device).astype(np.float64)      # [T,68,3]
    pose, K = split_label(cams.astype(np.float64))
    cam = np.einsum("tji,tnj->tni", pose[:, :3, :3], pts - pose[:, None, :3, 3])  # R^T (p - c)
    uv = np.einsum("tij,tnj->tni", K, cam / cam[..., 2:3])[..., :2]
    return (uv * res).astype(np.float32)
