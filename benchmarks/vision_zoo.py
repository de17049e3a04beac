"""Held-out vision survey (issue #14): does the default policy hold on torchvision-style CNNs?

Small (32x32 inputs, 10 classes, narrow) re-implementations of torchvision's CNN families, each
structurally faithful (its blocks, skips, concatenations, activations, dropout, its head) and each
with its authors' own init reproduced in the constructor. For each model:

(a) ``initlab.init(model, example=x, seed=s)`` runs and the model runs after it;
(b) the initial loss in train mode on random Gaussian images and labels (per pixel for the U-Net),
    mean over 3 seeds: initlab's default vs the own init vs ``kaiming_normal_`` everywhere vs
    ``log(classes)``. Pass: initlab <= own + 0.02 and within 0.05 of ``log(classes)``;
(c) no NaN/inf, and every conv/linear output's std in train mode below ``MAX_STD`` (10);
(d) the model built under ``torch.device("meta")``, then ``initlab.init(m, example=x,
    device="cpu")``, runs a forward with a finite loss.

Usage::

    PYTHONPATH=src python benchmarks/vision_zoo.py                 # every model (~1 min, 1 thread)
    PYTHONPATH=src python benchmarks/vision_zoo.py --models squeezenet,unet
"""

from __future__ import annotations

import itertools
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.bench.architectures import Bottleneck, uniform_label_loss
from initlab.bench.methods import Context, kaiming

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _survey, run or loaded by path
from _survey import loss_failures, meta_check, parse, run

CLASSES, IMAGE, BATCH, EVAL_BATCH = 10, 32, 32, 256
SEEDS = (0, 1, 2)
MAX_STD = 10.0
"""(c): the largest std of a conv/linear output on unit Gaussian images, train mode. A conv
followed by BN may output any scale (GoogLeNet's own N(0, 0.01) gives 0.2, Kaiming ~1-5); a
larger one means the signal grows along the net."""


# --------------------------------------------------------------------------- building blocks


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: Callable[[], nn.Module] | None = nn.ReLU) -> nn.Sequential:  # fmt: skip
    """torchvision's ``Conv2dNormActivation``: conv (no bias), BN, optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """torchvision's ``SqueezeExcitation``: pool, 1x1 conv, activation, 1x1 conv, gate, scale."""

    def __init__(self, c: int, squeeze: int, act: Callable[[], nn.Module] = nn.ReLU,
                 gate: Callable[[], nn.Module] = nn.Sigmoid) -> None:  # fmt: skip
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * s


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """torchvision's ``StochasticDepth`` in ``row`` mode: drop whole samples of the branch with
    probability ``p`` in training, rescale the kept ones by ``1 / (1 - p)``."""
    if not training or p == 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    return x * keep.bernoulli_(1.0 - p).div_(1.0 - p)


def _init_convs_fan_out(model: nn.Module, linear: Callable[[nn.Linear], None] | None) -> None:
    """The init shared by torchvision's MobileNets, EfficientNet, VGG and ResNets: convs Kaiming
    normal (fan_out), their biases 0; norms 1/0; linears by ``linear`` (``None``: PyTorch's)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear is not None:
            linear(m)


def _linear_normal_001(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, 0.0, 0.01)
    nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; a
    skip when the stride is 1 and the width is kept."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [] if t == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, hidden, nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]  # fmt: skip
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.skip else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        cfg = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 2, 1), (6, 32, 1, 2)]
        layers: list[nn.Module] = [conv_bn(3, 8, 3, 1, act=nn.ReLU6)]
        cin = 8
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 128, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, classes))
        _init_convs_fan_out(self, _linear_normal_001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- MobileNetV3-small


class V3Block(nn.Module):
    """MobileNetV3's block: expand 1x1, depthwise kxk, SE (ReLU, hardsigmoid; squeeze to
    ``expanded / 4`` rounded to 8), project 1x1; a skip when stride 1 and width kept."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type[nn.Module],
                 stride: int) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = [] if exp == cin else [conv_bn(cin, exp, 1, act=act)]
        layers.append(conv_bn(exp, exp, k, stride, exp, act))
        if se:
            layers.append(
                SqueezeExcite(exp, max(8, (exp // 4 + 4) // 8 * 8), nn.ReLU, nn.Hardsigmoid)
            )
        layers.append(conv_bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.skip else self.block(x)


class MobileNetV3Small(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        RE, HS = nn.ReLU, nn.Hardswish
        # (kernel, expanded, out, SE, activation, stride): the small config at half width
        cfg = [(3, 8, 8, True, RE, 2), (3, 36, 12, False, RE, 2), (3, 44, 12, False, RE, 1),
               (5, 48, 20, True, HS, 2), (5, 120, 20, True, HS, 1), (5, 60, 24, True, HS, 1),
               (5, 144, 48, True, HS, 2), (5, 288, 48, True, HS, 1)]  # fmt: skip
        layers: list[nn.Module] = [conv_bn(3, 8, 3, 1, act=HS)]
        cin = 8
        for k, exp, c, se, act, s in cfg:
            layers.append(V3Block(cin, k, exp, c, se, act, s))
            cin = c
        layers.append(conv_bn(cin, 6 * cin, 1, act=HS))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, 256), HS(), nn.Dropout(0.2),
                                        nn.Linear(256, classes))  # fmt: skip
        _init_convs_fan_out(self, _linear_normal_001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- EfficientNet-B0


class MBConv(nn.Module):
    """EfficientNet's MBConv: expand 1x1 (SiLU), depthwise kxk (SiLU), SE (squeeze to a quarter
    of the block's input, SiLU, sigmoid), project 1x1; stochastic depth on the skip."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, ratio: int, drop: float) -> None:
        super().__init__()
        hidden = cin * ratio
        layers: list[nn.Module] = [] if ratio == 1 else [conv_bn(cin, hidden, 1, act=nn.SiLU)]
        layers += [conv_bn(hidden, hidden, k, stride, hidden, nn.SiLU),
                   SqueezeExcite(hidden, max(1, cin // 4), nn.SiLU, nn.Sigmoid),
                   conv_bn(hidden, cout, 1, act=None)]  # fmt: skip
        self.block = nn.Sequential(*layers)
        self.skip, self.drop = stride == 1 and cin == cout, drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return self.block(x)
        return x + stochastic_depth(self.block(x), self.drop, self.training)


class EfficientNetB0(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        # (ratio, kernel, stride, cin, cout, layers): B0's stages at a quarter width, depth ~0.5
        cfg = [(1, 3, 1, 8, 8, 1), (6, 3, 2, 8, 12, 2), (6, 5, 2, 12, 20, 2), (6, 3, 2, 20, 40, 2),
               (6, 5, 1, 40, 56, 2), (6, 5, 2, 56, 96, 2), (6, 3, 1, 96, 160, 1)]  # fmt: skip
        total = sum(c[-1] for c in cfg)
        layers: list[nn.Module] = [conv_bn(3, 8, 3, 1, act=nn.SiLU)]
        i = 0
        for ratio, k, s, cin, cout, n in cfg:
            for j in range(n):
                layers.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, ratio,
                                     0.2 * i / total))  # fmt: skip
                i += 1
        layers.append(conv_bn(160, 320, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(320, classes))

        def uniform(m: nn.Linear) -> None:  # torchvision: U(-1/sqrt(out), 1/sqrt(out)), bias 0
            r = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)

        _init_convs_fan_out(self, uniform)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck), BN-ReLU-3x3 conv (growth), concatenated to the input."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1, self.conv1 = (
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, bn_size * growth, 1, bias=False),
        )
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(F.relu(self.norm2(y)))], 1)


class DenseNet(nn.Module):
    def __init__(
        self, classes: int = CLASSES, growth: int = 8, blocks: tuple[int, ...] = (3, 4, 3)
    ) -> None:
        super().__init__()
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU()]  # fmt: skip
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(blocks) - 1:  # transition: BN, ReLU, 1x1 conv halving, 2x2 avg-pool
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2)]  # fmt: skip
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)
        for m in self.modules():  # torchvision: Kaiming normal (fan_in), BN 1/0, linear bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- RegNetY


class RegNetBlock(nn.Module):
    """RegNet's ``ResBottleneckBlock`` (Y: with SE): 1x1, grouped 3x3 (stride), SE (a quarter of
    the block's input width), 1x1 without activation; projected skip; ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.proj = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.f = nn.Sequential(
            conv_bn(cin, cout, 1), conv_bn(cout, cout, 3, stride, cout // group_width),
            SqueezeExcite(cout, max(1, round(0.25 * cin))), conv_bn(cout, cout, 1, act=None),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNetY(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 16, 3, 1)]
        cin = 16
        for width, depth in ((24, 1), (48, 2), (96, 3), (192, 1)):
            for j in range(depth):
                layers.append(RegNetBlock(cin, width, 2 if j == 0 else 1, 8))
                cin = width
        self.trunk = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():  # torchvision: N(0, 2 / (k^2 out)), BN 1/0, linear N(0, 0.01)
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _linear_normal_001(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.trunk(x), 1), 1))


# --------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's unit: stride 1 splits the channels, transforms one half and concatenates;
    stride 2 transforms both copies; then the channels are shuffled."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, cin, act=None),
                                         conv_bn(cin, half, 1))  # fmt: skip
        c2 = cin if stride > 1 else half
        self.branch2 = nn.Sequential(conv_bn(c2, half, 1), conv_bn(half, half, 3, stride, half, None),
                                     conv_bn(half, half, 1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision ships no init: PyTorch's defaults."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 12, 3, 1), nn.MaxPool2d(3, 2, 1)]
        cin = 12
        for cout, n in ((24, 4), (48, 8), (96, 4)):
            for j in range(n):
                layers.append(ShuffleBlock(cin, cout, 2 if j == 0 else 1))
                cin = cout
        layers.append(conv_bn(cin, 256, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# --------------------------------------------------------------------------- SqueezeNet 1.1


class Fire(nn.Module):
    """1x1 squeeze (ReLU), then 1x1 and 3x3 expands (ReLU) concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1, self.expand3x3 = (
            nn.Conv2d(squeeze, e1, 1),
            nn.Conv2d(squeeze, e3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """The classifier is a 1x1 conv, ReLU and a global average pool; torchvision draws that conv
    at N(0, 0.01) and every other conv Kaiming uniform, biases 0."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 16, 16), Fire(32, 4, 16, 16), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 32, 32), Fire(64, 8, 32, 32), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 12, 48, 48), Fire(96, 12, 48, 48), Fire(96, 16, 64, 64), Fire(128, 16, 64, 64),
        )  # fmt: skip
        self.final_conv = nn.Conv2d(128, classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), self.final_conv, nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))  # fmt: skip
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.final_conv:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --------------------------------------------------------------------------- VGG-11-BN


class VGG11(nn.Module):
    """VGG-11 (``batch_norm=False``: 11 weight layers, no normalization, a deep plain chain)
    or VGG-11-BN; torchvision's init."""

    def __init__(self, classes: int = CLASSES, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in (8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(nn.Conv2d(cin, int(v), 3, padding=1))
                layers += [nn.BatchNorm2d(int(v)), nn.ReLU()] if batch_norm else [nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, classes),
        )  # fmt: skip
        _init_convs_fan_out(self, _linear_normal_001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------- GoogLeNet


def basic_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """GoogLeNet's ``BasicConv2d``: conv (no bias), BN (eps 1e-3), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())  # fmt: skip


class Inception(nn.Module):
    """Four parallel branches concatenated: 1x1; 1x1-3x3; 1x1-3x3; 3x3 max-pool-1x1."""

    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int) -> None:
        super().__init__()
        self.b1 = basic_conv(cin, c1, 1)
        self.b2 = nn.Sequential(basic_conv(cin, r3, 1), basic_conv(r3, c3, 3))
        self.b3 = nn.Sequential(basic_conv(cin, r5, 1), basic_conv(r5, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), basic_conv(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's init: every conv and linear truncated N(0, 0.01) on [-2, 2], BN 1/0."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(basic_conv(3, 16, 3), basic_conv(16, 32, 3),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))  # fmt: skip
        self.blocks = nn.Sequential(
            Inception(32, 16, 24, 32, 4, 8, 8), Inception(64, 32, 32, 48, 8, 24, 16),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Inception(120, 48, 24, 52, 4, 12, 16), Inception(128, 40, 28, 56, 6, 16, 16),
        )  # fmt: skip
        self.dropout, self.fc = nn.Dropout(0.2), nn.Linear(128, classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


# --------------------------------------------------------------------------- ResNeXt, Wide ResNet


class GroupResNet(nn.Module):
    """torchvision's ResNet layout with bottlenecks, for 32x32 (3x3 stem, no max-pool); init:
    convs Kaiming normal (fan_out), BN 1/0, the classifier PyTorch's default;
    ``zero_init_residual`` zeroes each block's last BN gamma."""

    def __init__(self, classes: int = CLASSES, groups: int = 4, base_width: int = 16,
                 layers: tuple[int, ...] = (2, 2, 2), zero_init_residual: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 1)
        blocks, cin = [], 16
        for i, n in enumerate(layers):
            for j in range(n):
                planes = 8 * 2**i  # torchvision's width: planes * base_width / 64 per group
                width = int(planes * base_width / 64) * groups
                blocks.append(Bottleneck(cin, width, 2 if j == 0 and i > 0 else 1, groups,
                                         planes * 4))  # fmt: skip
                cin = planes * 4
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)
        _init_convs_fan_out(self, None)
        if zero_init_residual:
            for b in blocks:
                nn.init.zeros_(b.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class PreActBlock(nn.Module):
    """He et al. 2016's pre-activation basic block: BN-ReLU-conv twice, identity skip (a 1x1
    projection of the pre-activated input where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.proj = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        skip = x if self.proj is None else self.proj(a)
        return skip + self.conv2(F.relu(self.bn2(self.conv1(a))))


class PreActResNet(nn.Module):
    """A pre-activation ResNet-18 layout at 1/8 width: stem conv, blocks, final BN-ReLU; convs
    Kaiming normal (fan_out), BN 1/0, the classifier PyTorch's default."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        blocks, cin = [], 8
        for i, w in enumerate((8, 16, 32, 64)):
            for j in range(2):
                blocks.append(PreActBlock(cin, w, 2 if j == 0 and i > 0 else 1))
                cin = w
        self.blocks, self.bn = nn.Sequential(*blocks), nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)
        _init_convs_fan_out(self, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.blocks(self.stem(x)))).mean((2, 3)))


# --------------------------------------------------------------------------- U-Net


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout, 3), conv_bn(cout, cout, 3))


class UNet(nn.Module):
    """A per-pixel segmentation net: encoder (double 3x3 conv-BN-ReLU, max-pool), transposed-conv
    upsampling, the encoder's features concatenated on the way up, a 1x1 conv to per-pixel
    logits. Common U-Net code ships no init: PyTorch's defaults."""

    def __init__(self, classes: int = CLASSES, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        self.down = nn.ModuleList([double_conv(3, widths[0])] +
                                  [double_conv(a, b) for a, b in itertools.pairwise(widths)])  # fmt: skip
        ups, convs = [], []
        for a, b in itertools.pairwise(widths[::-1]):
            ups.append(nn.ConvTranspose2d(a, b, 2, 2))
            convs.append(double_conv(2 * b, b))
        self.up, self.up_conv = nn.ModuleList(ups), nn.ModuleList(convs)
        self.out = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, conv, skip in zip(self.up, self.up_conv, skips[-2::-1], strict=True):
            x = conv(torch.cat([skip, up(x)], 1))
        return self.out(x)


# --------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """Five convs (ReLU, max-pools), no normalization, a dropout MLP head; torchvision ships no
    init: PyTorch's defaults."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 48, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(48, 96, 3, padding=1), nn.ReLU(), nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3_small": MobileNetV3Small,
    "efficientnet_b0": EfficientNetB0,
    "densenet": DenseNet,
    "regnet_y": RegNetY,
    "shufflenet_v2": ShuffleNetV2,
    "squeezenet1_1": SqueezeNet11,
    "vgg11_bn": VGG11,
    "vgg11": lambda: VGG11(batch_norm=False),
    "googlenet": GoogLeNet,
    "resnext": GroupResNet,
    "wide_resnet": lambda: GroupResNet(groups=1, base_width=128),
    "resnet_zero_res": lambda: GroupResNet(groups=1, base_width=64, zero_init_residual=True),
    "preact_resnet": PreActResNet,
    "unet": UNet,
    "alexnet": AlexNet,
}
"""The survey's models, each built with its authors' own init (reads the global RNG)."""

SEGMENTATION = frozenset({"unet"})


# --------------------------------------------------------------------------- the survey


def example(name: str, seed: int, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian images and uniform labels (per pixel for segmentation), seeded."""
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(batch, 3, IMAGE, IMAGE, generator=g)
    shape = (batch, IMAGE, IMAGE) if name in SEGMENTATION else (batch,)
    return x, torch.randint(0, CLASSES, shape, generator=g)


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy (over pixels for a segmentation net), no grad, the model's current mode,
    expected over uniform labels as :func:`example` draws ``y`` (so ``y`` itself is not read):
    ``mean(logsumexp(z) - mean_k z_k)``. A net's logits on random images share an offset ``c``,
    and drawn labels would add ``c_y``'s spread, ``sqrt(Var(c) / batch)``."""
    with torch.no_grad():
        return float(uniform_label_loss(model(x), dim=1))


@torch.no_grad()
def layer_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    """The std of every conv/linear output, in call order, in the model's current mode."""
    stds: list[float] = []
    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    hooks = [m.register_forward_hook(lambda _m, _i, out: stds.append(float(out.float().std())))
             for m in model.modules() if isinstance(m, kinds)]  # fmt: skip
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return stds


def start(name: str, how: str, seed: int, x: torch.Tensor) -> nn.Module:
    """``name`` built with its own init (seeded), then started by ``how``: ``own``, ``initlab``
    or ``kaiming`` (``kaiming_normal_`` on every conv/linear, biases 0, norms 1/0)."""
    torch.manual_seed(seed)
    model = MODELS[name]().train()
    if how == "initlab":
        initlab.init(model, example=x, seed=seed)
    elif how == "kaiming":
        kaiming(model, Context(x, lambda: iter(()), F.cross_entropy, None, seed))  # type: ignore[arg-type]
    return model


def survey(name: str) -> dict[str, Any]:
    """The four checks on one model; errors are caught and reported per check."""
    row: dict[str, Any] = {"model": name, "log_c": math.log(CLASSES)}
    losses: dict[str, list[float]] = {"own": [], "initlab": [], "kaiming": []}
    peak: dict[str, float] = {}
    for seed in SEEDS:
        x, _ = example(name, seed)
        # the loss on a larger batch than the example (expected over labels; see loss())
        xe, ye = example(name, seed, BATCH if name in SEGMENTATION else EVAL_BATCH)
        for how in losses:
            try:
                model = start(name, how, seed, x)
            except Exception as e:
                row["init_error"] = f"{type(e).__name__}: {e}"[:200]
                row["trace"] = traceback.format_exc()
                return row
            losses[how].append(loss(model, xe, ye))
            stds = layer_stds(model, x)
            peak[how] = max(peak.get(how, 0.0), max(stds))
            if how == "initlab" and not all(math.isfinite(s) for s in stds):
                row["nonfinite"] = True
    for how, v in losses.items():
        row[how] = sum(v) / len(v)
    row["peak"] = peak
    row["meta"] = meta_check(lambda: example(name, 0), lambda: _meta_build(name), loss)
    return row


def _meta_build(name: str) -> nn.Module:
    with torch.device("meta"):
        torch.manual_seed(0)
        return MODELS[name]()


def verdict(row: dict[str, Any]) -> list[str]:
    """The failed criteria of one row (empty: it passes)."""
    if "init_error" in row:
        return ["(a) " + row["init_error"]]
    bad = []
    if not math.isfinite(row["initlab"]):
        bad.append("(a) non-finite loss")
    bad.extend(loss_failures(row))
    ours = row["peak"]["initlab"]
    if row.get("nonfinite") or ours > MAX_STD:
        bad.append(f"(c) largest layer std {ours:.3g}")
    if row["meta"] != "ok":
        bad.append("(d) " + row["meta"])
    return bad


def main(argv: list[str] | None = None) -> int:
    names, full_traceback = parse(argv, __doc__, MODELS)
    header = (f"{'model':<19}{'initlab':>8}{'own':>8}{'kaiming':>9}{'log C':>7}{'std max':>9}"
              f"{'s':>6}  verdict")  # fmt: skip

    def cells(name: str, row: dict[str, Any]) -> str:
        num = {k: f"{row[k]:.3f}" if k in row else "-" for k in ("initlab", "own", "kaiming")}
        peak = f"{row['peak']['initlab']:.2f}" if "peak" in row else "-"
        return (f"{name:<19}{num['initlab']:>8}{num['own']:>8}{num['kaiming']:>9}"
                f"{row['log_c']:>7.3f}{peak:>9}")  # fmt: skip

    return run(names, survey, verdict, header, cells, full_traceback)


if __name__ == "__main__":
    main()
