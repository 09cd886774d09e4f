"""Plain-PyTorch references: the specification of every op in `otavatar.kernels`.

They are what ONNX export traces and what every fast kernel is tested against.
"""
from .compositing import CompositeResult, composite_rays
from .decoder import DecoderWeights, decode_points
from .importance import sample_importance
from .render import RaySettings, RenderResult, coarse_depths, render_rays
from .triplane import PLANE_AXES_INDICES, project_points, triplane_sample

__all__ = [
    "CompositeResult", "DecoderWeights", "PLANE_AXES_INDICES", "RaySettings", "RenderResult", "coarse_depths",
    "composite_rays", "decode_points", "project_points", "render_rays", "sample_importance", "triplane_sample",
]
