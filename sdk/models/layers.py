"""StyleGAN2 building blocks with the semantics the EG3D weights were trained with.

Equalised learning rate: parameters are stored unscaled (as in the official checkpoints) and the gains
(lr_mul / sqrt(fan_in)) are applied at run time, so loading an official file is a rename, never a rescale.
Parameter names match the official state-dict names.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)   # keeps the activation variance of a leaky ReLU at 1
DEMOD_EPS = 1e-8


def fir_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> Tensor:
    """The 2-D FIR resampling filter: outer product of `taps` normalised to sum 1 ([4,4], /64)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def bias_act(x: Tensor, bias: Tensor | None, *, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None, inplace: bool = False) -> Tensor:
    """x + bias (on dim 1), then the activation, times `gain`, then an optional symmetric clamp.

    `inplace=True` (for a fresh intermediate nobody else holds) overwrites `x` when autograd does not need
    it: the same numbers without four full-size temporaries, which made up a third of the 512^2
    super-resolution's CPU time (the elementwise ops there cost as much as the convolutions' copies).
    """
    if inplace and not (torch.is_grad_enabled() and x.requires_grad):
        return _bias_act_(x, bias, act=act, gain=gain, clamp=clamp)
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; valid: linear, lrelu")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _bias_act_(x: Tensor, bias: Tensor | None, *, act: str, gain: float, clamp: float | None) -> Tensor:
    if bias is not None:
        x.add_(bias.reshape([1, -1] + [1] * (x.ndim - 2)))
    if act == "lrelu":
        F.leaky_relu_(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; valid: linear, lrelu")
    if gain != 1:
        x.mul_(gain)
    if clamp is not None:
        x.clamp_(-clamp, clamp)
    return x


class FullyConnected(nn.Module):
    """Equalised-lr linear layer: y = x (w * lr_mul / sqrt(in))^T + b * lr_mul, then the activation."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear", lr_mul: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)   # [out, in]
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))        # [out]
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def effective(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) with the run-time gains applied."""
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        return w, b

    def forward(self, x: Tensor) -> Tensor:  # [N, in] -> [N, out]
        w, b = self.effective()
        w = w.to(x.dtype)
        b = b.to(x.dtype)
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, gain=LRELU_GAIN)


def upfirdn2d(x: Tensor, f: Tensor, *, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> Tensor:
    """Zero-insertion up-sampling by `up`, padding (x0, x1, y0, y1), then a depthwise FIR filter.

    `f` is a symmetric [kh, kw] filter (so flipping it is a no-op); `gain` scales it by gain**(ndim/2)
    = gain, as StyleGAN2-ADA does for 2-D filters.
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    kernel = (f * gain).to(x.dtype)
    kernel = kernel[None, None].repeat(channels, 1, 1, 1)                  # [C, 1, kh, kw]
    return F.conv2d(x, kernel, groups=channels)


def upsample2d(x: Tensor, f: Tensor, *, up: int = 2) -> Tensor:
    """FIR up-sampling by `up` with gain up^2 (keeps the signal level); [B,C,H,W] -> [B,C,up*H,up*W]."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def conv2d_resample(x: Tensor, w: Tensor, f: Tensor | None, *, up: int = 1, padding: int = 0,
                    groups: int = 1) -> Tensor:
    """Convolution with optional x2 FIR up-sampling, in the form the published weights expect.

    up == 1: plain cross-correlation. up == 2: stride-2 transposed convolution with the (unflipped)
    weight, followed by the FIR filter with gain 4; padding chosen so that H -> 2H.
    """
    out_ch, in_per_group, kh, kw = w.shape
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if up != 2 or f is None:
        raise ValueError(f"conv2d_resample supports up in (1, 2) with a filter; got up={up}")
    fk = f.shape[-1]
    p0 = padding + (fk + up - 1) // 2 - (kw - 1)
    p1 = padding + (fk - up) // 2 - (kw - up)
    if groups == 1:
        wt = w.transpose(0, 1)                                                  # [in, out, kh, kw]
    else:
        wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    crop = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, wt, stride=up, padding=crop, groups=groups)
    return upfirdn2d(x, f, pad=(p0 + crop, p1 + crop, p0 + crop, p1 + crop), gain=up * up)


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, noise: Tensor | None = None, up: int = 1,
                     padding: int = 0, resample_filter: Tensor | None = None, demodulate: bool = True,
                     fused: bool = False) -> Tensor:
    """StyleGAN2 modulated convolution.

    x [B,I,H,W], weight [O,I,k,k], styles [B,I] -> [B,O,H',W'] (+ noise, broadcast).
    `fused=False` scales the activations instead of the weights (one shared conv for the whole batch);
    it is what ONNX export uses (grouped convs with a dynamic batch do not export) and equals the fused
    (grouped, per-sample weights) form up to rounding.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)            # [B, O, I, k, k]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()      # [B, O]
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = _fresh_op(x, "mul", dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        return x if noise is None else _fresh_op(x, "add", noise.to(x.dtype))
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw).to(x.dtype)
    x = conv2d_resample(x, w, resample_filter, up=up, padding=padding, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    return x if noise is None else _fresh_op(x, "add", noise.to(x.dtype))


def _fresh_op(x: Tensor, op: str, other: Tensor) -> Tensor:
    """`x op other` for an `x` just produced here: in place when autograd does not need `x` (see bias_act)."""
    if torch.is_grad_enabled() and (x.requires_grad or other.requires_grad):
        return getattr(torch, op)(x, other)
    return getattr(x, op + "_")(other)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally x2 up-sampling) + const noise + bias + leaky ReLU (+ clamp)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1,
                 conv_clamp: float | None = None, kernel_size: int = 3):
        super().__init__()
        self.up = up
        self.padding = kernel_size // 2
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))     # [res, res]
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, *, noise_mode: str = "const", fused: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        styles = self.affine(w)                                                  # [B, I]
        noise = None
        if noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode == "random":
            res = self.noise_const.shape[-1]
            noise = torch.randn(x.shape[0], 1, res, res, device=x.device, generator=generator) * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"unknown noise_mode {noise_mode!r}; valid: const, random, none")
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused=fused)
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=LRELU_GAIN, clamp=self.conv_clamp, inplace=True)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation; styles scaled by 1/sqrt(in_channels); linear output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, *, fused: bool = False) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, inplace=True)
