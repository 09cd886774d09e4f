"""Adam for embedding tables whose rows are visited rarely: each row keeps its own step count.

An auto-decoder's codes are a table [N, w_dim] of which one step touches a few rows. `torch.optim.Adam` keeps one
step count for the whole table and decays every row's second moment at every step, so a row first drawn at step t
gets v = (1 - beta2) g^2 with a bias correction of ~1, and moves by lr * g / sqrt(0.01 g^2) = 10 lr per element, in
the sign of its gradient, at beta2 0.99 (and at every later visit, 210 steps apart on the 840-frame set, about
9 lr: 0.99^210 = 0.12 of its second moment is left by then).
The prior's frame codes were trained that way until round 24 (docs/training-rounds.md). Here a row's moments and
bias corrections advance only when its gradient is non-zero, so its first step is lr and later ones Adam's usual size,
whatever happens to the other rows in between (`torch.optim.SparseAdam` updates lazily too, but corrects the bias with
the table's step count, so a late row's first steps are inflated the same way).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RowAdam"]


class RowAdam(torch.optim.Optimizer):
    """Adam over the rows (dim 0) of 2-d parameters; rows whose gradient is all zero are left as they are."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"RowAdam needs lr > 0, eps > 0 and betas in [0, 1); got {lr}, {eps}, {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"RowAdam updates the rows of 2-d tables; got a {p.dim()}-d parameter")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)                             # [N,D]
                    state["v"] = torch.zeros_like(p)                             # [N,D]
                    # [N] float, as torch's load_state_dict casts optimiser state to the parameter's dtype
                    state["steps"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
                rows = (p.grad != 0).any(dim=1).nonzero().squeeze(1)             # [R] the rows this step touched
                if rows.numel() == 0:
                    continue
                g: Tensor = p.grad[rows]
                state["steps"][rows] += 1
                t = state["steps"][rows][:, None]                                # [R,1]
                m = state["m"][rows].mul_(beta1).add_(g, alpha=1 - beta1)
                v = state["v"][rows].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["m"][rows] = m
                state["v"][rows] = v
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                p[rows] -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])
        return loss
