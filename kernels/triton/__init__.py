"""Triton implementations of the `otavatar.kernels` ops (same signatures as `otavatar.kernels.reference`).

Imported lazily by `otavatar.kernels._dispatch` only; importing this package imports `triton` and raises
ImportError where it is missing, which the dispatcher treats as "no Triton backend".

- `triplane_sample`: forward + backward (gradients to planes via float32 atomics, and to points).
- `composite_rays`: forward + backward (reverse-order suffix recurrence, no division by 1 - alpha).
- `render_rays`: fused deterministic inference render (2 kernels); with stochastic sampling or when a
  gradient is required it runs the unfused pipeline on the two ops above.
"""
from __future__ import annotations

import triton  # noqa: F401  - ImportError here means "no Triton backend" to the dispatcher

from .compositing import composite_rays
from .render import render_fused, render_rays
from .triplane import triplane_sample

__all__ = ["composite_rays", "render_fused", "render_rays", "triplane_sample"]
