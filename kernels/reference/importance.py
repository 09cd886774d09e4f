"""Importance sampling of fine depths from coarse compositing weights (parity README 5.6)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PDF_FLOOR = 0.01   # added to the smoothed weights so empty rays still sample everywhere
PDF_EPS = 1e-5     # added before normalising, and the smallest CDF step treated as non-empty


@torch.no_grad()
def sample_importance(depths: Tensor, weights: Tensor, n_importance: int, *, deterministic: bool = True,
                      generator: torch.Generator | None = None) -> Tensor:
    """depths [B,R,S,1] (coarse, ascending), weights [B,R,S-1,1] -> fine depths [B,R,n_importance,1].

    Reproduces the published sampler, including its off-by-one: the CDF over the S-3 interior smoothed
    weights is paired with the first S-2 interval mid-points, so the last mid-point is never reached.
    `deterministic` uses u = linspace(0, 1, n) (the parity mode); otherwise u ~ U[0,1) per ray.
    """
    batch, rays, samples, _ = depths.shape
    z = depths.reshape(batch * rays, samples)
    w = weights.reshape(batch * rays, 1, samples - 1).float()
    w = F.max_pool1d(w, 2, 1, padding=1)                                 # [BR, 1, S]
    w = F.avg_pool1d(w, 2, 1).reshape(batch * rays, samples - 1) + PDF_FLOOR
    bins = 0.5 * (z[:, :-1] + z[:, 1:])                                  # [BR, S-1] interval mid-points
    fine = _invert_cdf(bins, w[:, 1:-1], n_importance, deterministic, generator)
    return fine.reshape(batch, rays, n_importance, 1)


def _invert_cdf(bins: Tensor, weights: Tensor, n: int, deterministic: bool,
                generator: torch.Generator | None) -> Tensor:
    rays, n_bins = weights.shape
    weights = weights + PDF_EPS
    pdf = weights / torch.sum(weights, dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [R, n_bins+1]
    if deterministic:
        u = torch.linspace(0, 1, n, device=bins.device, dtype=cdf.dtype).expand(rays, n)
    else:
        u = torch.rand(rays, n, device=bins.device, dtype=cdf.dtype, generator=generator)
    # Right-side binary search as a comparison count: identical for a sorted CDF, and exportable
    # (torch.searchsorted does not export; DESIGN.md section 6).
    above = (cdf.unsqueeze(1) <= u.unsqueeze(2)).sum(dim=-1)            # [R, n]
    below = torch.clamp_min(above - 1, 0)
    above = torch.clamp_max(above, n_bins)
    cdf_lo, cdf_hi = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bin_lo, bin_hi = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < PDF_EPS, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)
