"""Tri-plane feature sampling (spec 1.5, parity README 5.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Which two point coordinates address (column, row) of each plane. EG3D's released code and every
# published checkpoint use XY, XZ, ZX (EG3D issue #67): y reaches plane 0 only. Keep "eg3d" to load them.
PLANE_AXES_INDICES: dict[str, tuple[tuple[int, int], ...]] = {
    "eg3d": ((0, 1), (0, 2), (2, 0)),
    "xy_xz_yz": ((0, 1), (0, 2), (1, 2)),
}


def project_points(points: Tensor, plane_axes: str = "eg3d") -> Tensor:
    """points [B,N,3] (already scaled to the [-1,1] cube) -> grid coordinates [B,3,N,2].

    A gather, not the published matmul with inverted permutation matrices: the result is identical
    (multiplying by exact 0/1 and summing) and it costs nothing.
    """
    axes = PLANE_AXES_INDICES[plane_axes]
    return torch.stack([points[..., list(pair)] for pair in axes], dim=1)


def triplane_sample(planes: Tensor, points: Tensor, *, box_warp: float = 1.0, plane_axes: str = "eg3d") -> Tensor:
    """Bilinear tri-plane lookup, mean over the three planes.

    planes: [B, 3, C, H, W]; points: [B, N, 3] in world units -> features [B, N, C].
    grid_sample semantics: bilinear, zero padding, align_corners=False; the first grid coordinate
    selects the column, the second the row.
    """
    batch, n_planes, channels, height, width = planes.shape
    n_points = points.shape[1]
    scaled = (2.0 / box_warp) * points                                   # cube [-b/2, b/2]^3 -> [-1, 1]^3
    grid = project_points(scaled, plane_axes).reshape(batch * n_planes, 1, n_points, 2)
    sampled = F.grid_sample(
        planes.reshape(batch * n_planes, channels, height, width), grid.to(planes.dtype),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )                                                                    # [B*3, C, 1, N]
    sampled = sampled.reshape(batch, n_planes, channels, n_points).permute(0, 1, 3, 2)  # [B, 3, N, C]
    return sampled.mean(dim=1)
