"""Camera rays from 25-d EG3D labels (spec 1.7, parity README 5.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rays_from_cameras(c: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """c [B,25] -> (origins [B,R,3], unit directions [B,R,3]), R = resolution^2, ray k = row*res + col.

    Pixel centres u = (col+0.5)/res, v = (row+0.5)/res are lifted through the normalised intrinsics
    (with skew) to unit camera depth and mapped to world space by the camera-to-world matrix. Depth along
    a ray is Euclidean distance from the camera centre.
    """
    batch = c.shape[0]
    cam2world = c[:, :16].reshape(batch, 4, 4)
    K = c[:, 16:25].reshape(batch, 3, 3)
    fx, fy, cx, cy, sk = (K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None])
    centres = torch.arange(resolution, dtype=c.dtype, device=c.device) * (1.0 / resolution) + (0.5 / resolution)
    v, u = torch.meshgrid(centres, centres, indexing="ij")                      # row-major pixel order
    u = u.reshape(1, -1).expand(batch, -1)                                      # [B, R]
    v = v.reshape(1, -1).expand(batch, -1)
    x_cam = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y_cam = (v - cy) / fy
    ones = torch.ones_like(x_cam)
    points = torch.stack([x_cam, y_cam, ones, ones], dim=-1)                    # [B, R, 4] homogeneous
    world = torch.bmm(cam2world, points.transpose(1, 2)).transpose(1, 2)[..., :3]
    centre = cam2world[:, :3, 3]                                                # [B, 3]
    directions = F.normalize(world - centre[:, None, :], dim=2)
    origins = centre[:, None, :].expand(-1, directions.shape[1], -1).contiguous()
    return origins, directions
