"""Frozen configuration dataclasses and the two presets (`official`, `tiny`).

Every model holds one of these; it is serialised as JSON beside the weights (safetensors header) so an
artifact always says which architecture it belongs to. `official` reproduces EG3D ffhqrebalanced512-64 and
the OTAvatar controller exactly (shapes and state-dict names of the published checkpoints); `tiny` is the
same code scaled down for CPUs and tests.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

PLANE_AXES = ("eg3d", "xy_xz_yz")


@dataclass(frozen=True)
class RenderConfig:
    """Ray marching through the tri-planes (spec 1.7-1.8, parity README section 5)."""

    resolution: int = 64            # neural rendering resolution (rays per side)
    depth_samples: int = 48         # coarse samples per ray
    importance_samples: int = 48    # fine samples per ray (0 disables the second pass)
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0           # tri-plane cube is [-box_warp/2, box_warp/2]^3
    plane_axes: str = "eg3d"        # "eg3d" = XY, XZ, ZX (what the weights need); "xy_xz_yz" = the intended one
    density_shift: float = -1.0     # softplus(sigma - 1): part of the published model
    white_back: bool = False

    def __post_init__(self) -> None:
        _check(self.resolution >= 1, f"render resolution must be >= 1, got {self.resolution}")
        _check(self.depth_samples >= 2, f"depth_samples must be >= 2, got {self.depth_samples}")
        _check(self.importance_samples >= 0, f"importance_samples must be >= 0, got {self.importance_samples}")
        _check(self.importance_samples == 0 or self.depth_samples >= 4,
               "importance sampling needs depth_samples >= 4 (the pdf drops the two outer intervals)")
        _check(0 < self.ray_start < self.ray_end, f"need 0 < ray_start < ray_end, got {self.ray_start}, {self.ray_end}")
        _check(self.box_warp > 0, f"box_warp must be > 0, got {self.box_warp}")
        _check(self.plane_axes in PLANE_AXES, f"plane_axes must be one of {PLANE_AXES}, got {self.plane_axes!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """EG3D TriPlaneGenerator (spec section 1)."""

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    backbone_resolution: int = 256        # tri-plane resolution
    channel_base: int = 32768
    channel_max: int = 512
    num_planes: int = 3
    plane_channels: int = 32
    conv_clamp: float | None = None       # backbone clamp (none in the official model)
    decoder_hidden: int = 64
    decoder_lr_mul: float = 1.0
    img_resolution: int = 512             # super-resolved output
    sr_channels: tuple[int, int] = (256, 128)
    sr_conv_clamp: float | None = 256.0
    sr_antialias: bool = True
    render: RenderConfig = field(default_factory=RenderConfig)

    def __post_init__(self) -> None:
        res = self.backbone_resolution
        _check(res >= 4 and res & (res - 1) == 0, f"backbone_resolution must be a power of two >= 4, got {res}")
        _check(self.img_resolution % 4 == 0 and self.img_resolution >= 8,
               f"img_resolution must be a multiple of 4 (the SR up-samples 4x), got {self.img_resolution}")
        _check(len(self.sr_channels) == 2, f"sr_channels needs two entries, got {self.sr_channels}")
        _check(self.num_planes == 3, "the tri-plane renderer needs num_planes == 3")
        if isinstance(self.render, dict):  # from JSON
            object.__setattr__(self, "render", RenderConfig(**self.render))
        object.__setattr__(self, "sr_channels", tuple(self.sr_channels))

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.backbone_resolution.bit_length())]

    def channels_at(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        # b4 has one conv; every other block two; plus the last block's ToRGB (14 for the 256^2 backbone).
        return 1 + 2 * (len(self.block_resolutions) - 1) + 1

    @property
    def sr_input_resolution(self) -> int:
        return self.img_resolution // 4

    @classmethod
    def official(cls) -> "GeneratorConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "GeneratorConfig":
        return cls(
            z_dim=128, w_dim=128, backbone_resolution=64, channel_base=4096, channel_max=128,
            plane_channels=16, decoder_hidden=32, img_resolution=128, sr_channels=(64, 32),
            render=RenderConfig(resolution=32, depth_samples=24, importance_samples=24),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ControllerConfig:
    """OTAvatar motion controller (spec section 2)."""

    coeff_dim: int = 70           # 64 expression + 3 angles + 3 translation
    window: int = 27              # frames per temporal window (semantic radius 13)
    descriptor_channels: int = 256
    encoder_layers: int = 3       # dilated residual Conv1d layers after the first Conv1d
    mlp_layers: int = 5           # applications of the ONE shared Linear
    directions: int = 20
    num_ws: int = 14
    w_dim: int = 512
    negative_slope: float = 0.1
    # The published `if_use_pose`: False zeroes the 6 pose inputs (angles + translation, channels 64:70), so the
    # motion follows the expression alone while the camera carries the pose. Shapes and keys are unchanged.
    use_pose: bool = True

    def __post_init__(self) -> None:
        needed = 7 + 6 * self.encoder_layers - 6  # first conv shrinks by 6, each dilated conv by 6
        _check(self.window >= needed, f"window {self.window} is too short for {self.encoder_layers} encoder layers")
        _check(self.directions <= self.w_dim, "directions must be <= w_dim (reduced QR)")

    @classmethod
    def official(cls) -> "ControllerConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "ControllerConfig":
        g = GeneratorConfig.tiny()
        return cls(descriptor_channels=128, num_ws=g.num_ws, w_dim=g.w_dim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ControllerConfig":
        return _from_dict(cls, data)


PRESETS = ("official", "tiny")


def preset(name: str) -> tuple[GeneratorConfig, ControllerConfig]:
    """(generator, controller) configs of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return getattr(GeneratorConfig, name)(), getattr(ControllerConfig, name)()


def config_json(cfg: GeneratorConfig | ControllerConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(names)}")
    return cls(**data)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
