"""StyleGAN2 'skip' synthesis backbone ws -> tri-planes (spec 1.4), and its blocks (also used by the SR)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import SynthesisLayer, ToRGBLayer, fir_filter, upsample2d


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (x2 up)] -> conv1 -> ToRGB added to the up-sampled skip image.

    Consumes `num_conv + 1` ws: conv ws, then the ToRGB w (which is also the next block's conv0 w).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, *,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))  # [C, res, res]
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, *, noise_mode: str = "const",
                fused: bool = False) -> tuple[Tensor, Tensor]:
        """ws [B, num_conv+1, w_dim] -> (features [B,C,res,res], skip image [B,img_ch,res,res])."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode, fused=fused)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode, fused=fused)
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode, fused=fused)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, self.num_conv], fused=fused).float()
        return x, (y if img is None else img + y)


class SynthesisNetwork(nn.Module):
    """Blocks 4^2 ... res^2; channels min(channel_base/res, channel_max); output = the summed skip image."""

    def __init__(self, w_dim: int, resolution: int, out_channels: int, *, channel_base: int, channel_max: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.block_resolutions = [2 ** i for i in range(2, resolution.bit_length())]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_ch, channels[res], w_dim, res, out_channels, conv_clamp=conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's ToRGB

    def forward(self, ws: Tensor, *, noise_mode: str = "const", fused: bool = False) -> Tensor:
        """ws [B, num_ws, w_dim] -> image [B, out_channels, res, res]."""
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx: w_idx + block.num_conv + 1], noise_mode=noise_mode, fused=fused)
            w_idx += block.num_conv
        return img


class Backbone(nn.Module):
    """Holds `mapping` and `synthesis` under the official names (`backbone.mapping.*`, `backbone.synthesis.*`)."""

    def __init__(self, mapping: nn.Module, synthesis: SynthesisNetwork):
        super().__init__()
        self.mapping = mapping
        self.synthesis = synthesis
