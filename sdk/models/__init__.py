"""The networks: EG3D's tri-plane generator and OTAvatar's motion controller (torch)."""
from .controller import ControllerOutput, MotionController
from .generator import RenderedPlanes, SynthesisOutput, TriplaneGenerator

__all__ = ["ControllerOutput", "MotionController", "RenderedPlanes", "SynthesisOutput", "TriplaneGenerator"]
