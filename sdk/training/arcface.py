"""The ArcFace ResNet-18 of the identity loss (spec 3.5, 5.4), laid out so that "resnet_face18" files load strictly.

Architecture (spec): 1-channel 128x128 input; conv3x3(1->64) + BN + PReLU + 2x2 max-pool (-> 64^2); four stages of
two IRBlocks (64, 128/2, 256/2, 512/2 -> 8^2), no squeeze-excitation; BN + dropout + FC 512*8*8 -> 512 + BN1d.
IRBlock: BN -> conv3x3 (in->in) -> BN -> PReLU -> conv3x3 (in->out, stride) -> BN, plus the (1x1 conv + BN
downsampled) input, then the block's PReLU again. PReLUs have one shared slope (`prelu.weight` is [1]); convs have
no bias. Key names follow the widely shared state dicts (ronghuaiyang/arcface-pytorch `resnet18_110.pth`,
GFPGAN's `arcface_resnet18.pth`): conv1, bn1, prelu, layer1..4.{0,1}.{bn0,conv1,bn1,prelu,conv2,bn2,downsample},
bn4, dropout, fc5, bn5. No weights ship with otavatar; `arcface_resnet18(None)` is random (tests only).
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn

from otavatar.training._state_files import check_state, read_state_dict

INPUT_SIZE = 128     # the FC expects 512 x 8 x 8: 128 / (max-pool 2 * three stride-2 stages 8) = 8
EMBEDDING_DIM = 512
_STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first stride)
_BLOCKS_PER_STAGE = 2


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """Improved residual block (pre-BN, PReLU) without squeeze-excitation."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)  # the same PReLU slope again, as in the published block


class ArcFaceResNet18(nn.Module):
    """[B,1,128,128] grey face in [-1,1] -> [B,512] embedding (not normalised; the loss uses cosine)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv3x3(1, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        cin = 64
        for index, (cout, stride) in enumerate(_STAGES, start=1):
            blocks = [IRBlock(cin, cout, stride)] + [IRBlock(cout, cout) for _ in range(_BLOCKS_PER_STAGE - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            cin = cout
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, EMBEDDING_DIM)
        self.bn5 = nn.BatchNorm1d(EMBEDDING_DIM)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"ArcFace expects [B,1,{INPUT_SIZE},{INPUT_SIZE}]; got {tuple(x.shape)}")
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def arcface_resnet18(weights: str | os.PathLike | None = None) -> ArcFaceResNet18:
    """The frozen ArcFace ResNet-18 in eval mode.

    weights=None: randomly initialised (for tests only: a random embedding carries no identity). A path: a
    "resnet_face18" state dict (.pth/.pt via torch.load(weights_only=True), "module." prefixes stripped, or
    .safetensors), loaded with strict keys and shapes. BatchNorm `num_batches_tracked` counters, which files
    saved by PyTorch < 0.4.1 lack, are the only keys allowed to be missing (they do not affect eval mode).
    """
    model = ArcFaceResNet18()
    if weights is not None:
        path = Path(weights)
        state = read_state_dict(path, "ArcFace ResNet-18")
        expected = model.state_dict()
        for key, value in expected.items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = value
        check_state(expected, state, str(path), "ArcFace resnet_face18")
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model
