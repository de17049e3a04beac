"""Small models for trying the CLI: ``initlab plan examples/models.py:resnet --example-shape 8,3,32,32``."""

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + x).relu()


def resnet(width: int = 16, blocks: int = 3, classes: int = 10) -> nn.Module:
    """A CIFAR-style residual CNN."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        *[BasicBlock(width) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes),
    )  # fmt: skip


def transformer(d: int = 64, heads: int = 4, layers: int = 2) -> nn.Module:
    """A post-LN ``nn.TransformerEncoder``; example input ``--example-shape 2,16,64``."""
    layer = nn.TransformerEncoderLayer(d, heads, 4 * d, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def mlp(depth: int = 4, width: int = 128) -> nn.Module:
    """A tanh MLP for 64-feature inputs (digits)."""
    layers: list[nn.Module] = [nn.Linear(64, width), nn.Tanh()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))
