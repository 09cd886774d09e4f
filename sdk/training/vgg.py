"""VGG19 feature extractor for the perceptual loss (spec 3.5), torchvision-compatible without torchvision.

torchvision does not import beside our torch 2.13 CPU wheel, so this module rebuilds `vgg19().features` with the
same indices (`features.0.weight` ... `features.34.bias`) so that a user's torchvision ImageNet state dict loads
strictly. Nothing is downloaded: `vgg19(None)` is a fixed-seed random network (see its docstring).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from otavatar.training._state_files import check_state, read_state_dict

# torchvision's configuration "E" (VGG19): channel counts, "M" = 2x2 max-pool.
_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                               512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _layout() -> tuple[list[nn.Module], dict[str, int]]:
    """The `features` modules and a map relu{block}_{i} -> index of that ReLU in `features`."""
    modules: list[nn.Module] = []
    names: dict[str, int] = {}
    in_ch, block, conv_in_block = 3, 1, 0
    for item in _CFG:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            block, conv_in_block = block + 1, 0
            continue
        modules.append(nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1))
        modules.append(nn.ReLU(inplace=False))  # not in-place: the returned features must not be overwritten
        conv_in_block += 1
        names[f"relu{block}_{conv_in_block}"] = len(modules) - 1
        in_ch = int(item)
    return modules, names


CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
LAYER_NAMES: tuple[str, ...] = tuple(_layout()[1])


class VGG19(nn.Module):
    """`features` of torchvision's vgg19 (16 convs, 5 pools); forward returns the named ReLU outputs."""

    def __init__(self) -> None:
        super().__init__()
        modules, names = _layout()
        self.features = nn.Sequential(*modules)
        self._relu_index: dict[str, int] = names

    def forward(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """x [B,3,H,W] ImageNet-normalised -> {name: [B,C,h,w]}; stops after the deepest requested layer."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19 expects x [B,3,H,W]; got {tuple(x.shape)}")
        if isinstance(layers, str):
            raise TypeError(f"layers must be a tuple of names, got the string {layers!r}")
        unknown = [name for name in layers if name not in self._relu_index]
        if unknown or not layers:
            raise ValueError(f"unknown or no VGG19 layers {unknown or list(layers)}; valid: {list(self._relu_index)}")
        wanted = {self._relu_index[name]: name for name in layers}
        last = max(wanted)
        out: dict[str, Tensor] = {}
        h = x
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                out[wanted[index]] = h
            if index == last:
                break  # relu5_1 needs 30 of the 37 modules; relu1_1 needs 2
        return out


def _random_init(model: VGG19, seed: int) -> None:
    # Same scheme as torchvision's VGG constructor: Kaiming-normal (fan_out, relu) convs, zero biases.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.features:
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                std = (2.0 / fan_out) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.zero_()


def _load_features(model: VGG19, state: dict[str, Tensor], source: str) -> None:
    # A full torchvision vgg19 state dict or one saved from this module: classifier.* is ignored, features.* strict.
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    expected = model.state_dict()
    check_state(expected, features, source, "torchvision vgg19 features")
    model.load_state_dict({k: features[k].to(torch.float32) for k in expected}, strict=True)


def vgg19(weights: str | os.PathLike | None = None, *, seed: int = 0) -> VGG19:
    """A frozen VGG19 feature extractor in eval mode.

    weights=None: the documented stand-in — a fixed-seed random VGG19 (Kaiming-normal fan_out convs, zero biases,
    seeded by `seed`). The perceptual loss then is a *random-feature* perceptual loss: still a useful multi-scale
    structural distance, but not the ImageNet-feature loss of the published training. Pass a path to
    torchvision's `vgg19` ImageNet state dict (.pth/.pt read with torch.load(weights_only=True), or .safetensors)
    to reproduce the spec; `classifier.*` keys are ignored and `features.*` must match exactly.
    """
    model = VGG19()
    if weights is None:
        _random_init(model, seed)
    else:
        path = Path(weights)
        _load_features(model, read_state_dict(path, "VGG19"), str(path))
    model.eval()
    model.requires_grad_(False)
    return model
