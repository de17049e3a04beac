"""Models of 10 M parameters and more for ``bench_scale.py``, each with its own init.

* ``resnet50``: torchvision's ResNet-50 written out (bottleneck blocks [3, 4, 6, 3], 25.6 M
  parameters); its own init is torchvision's: Kaiming normal (fan_out, ReLU) for every conv, ones
  and zeros for BatchNorm, PyTorch's default for the classifier.
* ``vit_b16``: torchvision's ViT-B/16 written out (12 blocks of width 768, MLP 3072, 86.6 M
  parameters); its own init is torchvision's: truncated normal ``sqrt(1 / fan_in)`` for the patch
  projection, ``N(0, 0.02)`` position embedding, Xavier uniform MLP weights with ``N(0, 1e-6)``
  biases, ``nn.MultiheadAttention``'s own reset, zero class token and head.
* ``llama``: transformers' ``LlamaForCausalLM`` from a config (12 layers, width 768, vocabulary
  16 k, 110 M parameters); its own init is the model's ``_init_weights`` (``N(0, 0.02)``, RMSNorm
  ones).

Every builder returns ``(model, example, own_init)``; ``own_init(model)`` re-runs the model's own
init in place (what a user pays for it), so both inits are timed on the same built model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Built = tuple[nn.Module, object, Callable[[nn.Module], None]]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, inplanes = [], 64
        for planes, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            layers = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * 4
            layers += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        resnet_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_init(model: nn.Module) -> None:
    """torchvision's ResNet init (and the classifier's default reset)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


class EncoderBlock(nn.Module):
    def __init__(self, dim: int = 768, heads: int = 12, mlp: int = 3072) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ViTB16(nn.Module):
    def __init__(self, image: int = 224, patch: int = 16, dim: int = 768, depth: int = 12,
                 num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        seq = (image // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, dim))
        self.layers = nn.Sequential(*[EncoderBlock(dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        vit_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.ln(self.layers(x + self.pos_embedding))
        return self.head(x[:, 0])


def vit_init(model: nn.Module) -> None:
    """torchvision's ViT init."""
    assert isinstance(model, ViTB16)
    fan_in = model.conv_proj.in_channels * model.patch**2
    nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(model.conv_proj.bias)
    nn.init.normal_(model.pos_embedding, std=0.02)
    nn.init.zeros_(model.class_token)
    for block in model.layers:
        block.self_attention._reset_parameters()
        block.self_attention.out_proj.reset_parameters()
        for m in block.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)
        for ln in (block.ln_1, block.ln_2):
            ln.reset_parameters()
    model.ln.reset_parameters()
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)


def resnet50(batch: int = 8) -> Built:
    return ResNet50(), torch.randn(batch, 3, 224, 224), resnet_init


def vit_b16(batch: int = 8) -> Built:
    return ViTB16(), torch.randn(batch, 3, 224, 224), vit_init


def llama(batch: int = 4, seq: int = 512) -> Built:
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=16_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=seq,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(3, 16_000, (batch, seq), generator=torch.Generator().manual_seed(0))

    def own_init(m: nn.Module) -> None:
        for p in m.parameters():  # transformers skips parameters it flagged as initialized
            if hasattr(p, "_is_hf_initialized"):
                del p._is_hf_initialized
        m.apply(m._init_weights)

    return model, {"input_ids": ids}, own_init


MODELS: dict[str, Callable[..., Built]] = {"resnet50": resnet50, "vit_b16": vit_b16, "llama": llama}
