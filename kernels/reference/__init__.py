"""Plain-PyTorch references: the specification of every op in `otavatar.kernels`.

They are what ONNX export traces and what every fast kernel is tested against.
"""
from .compositing import CompositeResult, composite_rays
from .importance import sample_importance
from .triplane import PLANE_AXES_INDICES, project_points, triplane_sample

__all__ = [
    "CompositeResult", "PLANE_AXES_INDICES", "composite_rays", "project_points",
    "sample_importance", "triplane_sample",
]
