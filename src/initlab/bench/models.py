r"""The bench's model zoo: small plain ``nn.Module`` factories with PyTorch's default init.

Each factory builds the same structure every time and leaves PyTorch's default initialization in
place: initlab's schemes and methods are what the bench compares, applied afterwards. Every
activation is its own module instance (none is reused), so hooks see each call.

=================  ===============================================================  ===========
name               model                                                            source
=================  ===============================================================  ===========
makemore_mlp       :class:`MakemoreMLP`, embedding + one tanh layer                 Bengio 2003;
                                                                                    Karpathy 2022
plain_mlp          :func:`plain_mlp`, ``depth`` Linear layers, no normalization     –
residual_mlp       :func:`residual_mlp`, ``x + f2(relu(f1(x)))`` blocks, no norm    He 2016
vgg_like           :func:`vgg_like`, conv3x3-[BN]-ReLU stacks and max-pools         Simonyan 2015
resnet_like        :func:`resnet_like`, CIFAR ResNet of BasicBlocks                 He 2016
char_transformer   :func:`char_transformer`, tiny pre-LN GPT on characters          Radford 2019
=================  ===============================================================  ===========

>>> model = build("plain_mlp", in_features=64, num_classes=10, depth=3)
>>> model(torch.zeros(5, 64)).shape
torch.Size([5, 10])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from initlab.errors import InitlabError, check_choice

__all__ = [
    "MAKEMORE_SEED",
    "MODELS",
    "BasicBlock",
    "CharTransformer",
    "FeedForward",
    "MakemoreMLP",
    "ResNet",
    "ResidualBlock",
    "ResidualMLP",
    "TransformerBlock",
    "build",
    "char_transformer",
    "makemore_fixed_init_",
    "makemore_naive_init_",
    "plain_mlp",
    "residual_mlp",
    "resnet_like",
    "vgg_like",
]

MAKEMORE_SEED = 2147483647
"""The seed of the lecture's ``torch.Generator().manual_seed(2147483647)``."""

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "identity": nn.Identity,
}


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InitlabError(f"{name} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------- makemore


class MakemoreMLP(nn.Module):
    """The character MLP of makemore part 3 (Karpathy 2022), after Bengio et al. (2003).

    ``logits = tanh(flatten(C[x]) @ W1 + b1) @ W2 + b2``: an embedding ``C`` (``vocab x n_embd``),
    a Linear ``W1`` (``block * n_embd -> n_hidden``, bias ``b1``), a functional ``torch.tanh``
    and a Linear ``W2`` (``n_hidden -> vocab``, bias ``b2``). Note that ``nn.Linear`` stores
    ``W1.weight`` as the transpose of the lecture's ``W1``.

    >>> MakemoreMLP()(torch.zeros(4, 3, dtype=torch.long)).shape
    torch.Size([4, 27])
    """

    def __init__(
        self, vocab: int = 27, block: int = 3, n_embd: int = 10, n_hidden: int = 200
    ) -> None:
        super().__init__()
        self.block = _positive("block", block)
        self.C = nn.Embedding(_positive("vocab", vocab), _positive("n_embd", n_embd))
        self.W1 = nn.Linear(block * n_embd, _positive("n_hidden", n_hidden))
        self.W2 = nn.Linear(n_hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, vocab)`` for contexts ``x`` of shape ``(B, block)``."""
        emb = self.C(x)  # (B, block, n_embd)
        h = torch.tanh(self.W1(emb.flatten(1)))  # (B, n_hidden): the lecture's functional tanh
        return self.W2(h)  # (B, vocab)


@torch.no_grad()
def makemore_naive_init_(
    model: MakemoreMLP, generator: torch.Generator | None = None
) -> MakemoreMLP:
    """The lecture's first init: every parameter ``torch.randn``, drawn in the lecture's order.

    ``C, W1, b1, W2, b2 ~ N(0, 1)`` drawn one after the other from ``generator`` (default: the
    lecture's ``torch.Generator().manual_seed(2147483647)``) with the lecture's shapes, so the
    numbers equal the lecture's; ``W1`` and ``W2`` are transposed into ``nn.Linear`` layout.
    The logits come out far too large: the initial loss is ~28 instead of ``log(27) = 3.30``.

    >>> model = makemore_naive_init_(MakemoreMLP())
    >>> round(model.C.weight[0, 0].item(), 4)  # the lecture's C[0, 0]
    1.5674
    """
    g = torch.Generator().manual_seed(MAKEMORE_SEED) if generator is None else generator
    vocab, n_embd = model.C.weight.shape
    n_hidden, fan_in = model.W1.weight.shape
    model.C.weight.copy_(torch.randn((vocab, n_embd), generator=g))
    model.W1.weight.copy_(torch.randn((fan_in, n_hidden), generator=g).T)
    model.W1.bias.copy_(torch.randn(n_hidden, generator=g))
    model.W2.weight.copy_(torch.randn((n_hidden, vocab), generator=g).T)
    model.W2.bias.copy_(torch.randn(vocab, generator=g))
    return model


@torch.no_grad()
def makemore_fixed_init_(
    model: MakemoreMLP, generator: torch.Generator | None = None, *, fix_tanh: bool = True
) -> MakemoreMLP:
    """The lecture's hand-fixed init: :func:`makemore_naive_init_`, then shrink by hand.

    ``W2 *= 0.01`` and ``b2 *= 0`` bring the initial loss to ~3.3 (logits near zero); with
    ``fix_tanh`` also ``W1 *= 0.2`` and ``b1 *= 0.01``, which takes the tanh units out of
    saturation (62% of ``|h| > 0.99`` down to ~1.4%).

    Args:
        model: the model to initialize in place.
        generator: as in :func:`makemore_naive_init_`.
        fix_tanh: also apply the lecture's second fix (``W1``, ``b1``).
    """
    makemore_naive_init_(model, generator)
    model.W2.weight.mul_(0.01)
    model.W2.bias.mul_(0.0)
    if fix_tanh:
        model.W1.weight.mul_(0.2)
        model.W1.bias.mul_(0.01)
    return model


# --------------------------------------------------------------------------- MLPs


def plain_mlp(
    in_features: int,
    num_classes: int,
    depth: int,
    width: int = 256,
    activation: Literal["relu", "tanh", "gelu", "selu", "identity"] = "relu",
) -> nn.Sequential:
    """A plain MLP of ``depth`` Linear layers in all, an activation module between each two.

    No normalization and no skip connections: the setting of the depth experiments (Glorot &
    Bengio 2010; He et al. 2015; Saxe et al. 2014), where the init alone decides whether the
    signal survives. ``depth=1`` is a linear classifier.

    >>> net = plain_mlp(64, 10, depth=3, width=32, activation="tanh")
    >>> [type(m).__name__ for m in net]
    ['Linear', 'Tanh', 'Linear', 'Tanh', 'Linear']
    """
    check_choice("activation", activation, _ACTIVATIONS)
    _positive("depth", depth)
    dims = [_positive("in_features", in_features)] + [_positive("width", width)] * (depth - 1)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(dims):
        layers += [nn.Linear(fan_in, fan_out), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(dims[-1], _positive("num_classes", num_classes)))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """``x + fc2(relu(fc1(x)))``, with no normalization (the residual branch of He et al. 2016)."""

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = width if hidden is None else hidden
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    """``stem``, ``blocks`` (a Sequential of :class:`ResidualBlock`), ``head``: see
    :func:`residual_mlp`."""

    def __init__(self, in_features: int, num_classes: int, blocks: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def residual_mlp(in_features: int, num_classes: int, blocks: int, width: int = 256) -> ResidualMLP:
    """A residual MLP without normalization: ``stem``, ``blocks`` x :class:`ResidualBlock`, head.

    Each block adds its branch to the stream, so with a default init the stream's variance grows
    with depth (Hanin & Rolnick 2018); Fixup (Zhang et al. 2019) and SkipInit (De & Smith 2020)
    are the cures the bench compares on it.

    >>> net = residual_mlp(64, 10, blocks=2, width=32)
    >>> net(torch.zeros(5, 64)).shape, len(net.blocks)
    (torch.Size([5, 10]), 2)
    """
    return ResidualMLP(
        _positive("in_features", in_features), _positive("num_classes", num_classes),
        _positive("blocks", blocks), _positive("width", width),
    )  # fmt: skip


# --------------------------------------------------------------------------- CNNs


def _norm2d(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def vgg_like(
    in_channels: int,
    num_classes: int,
    batchnorm: bool,
    widths: Sequence[int | Literal["M"]] = (32, 32, "M", 64, 64, "M"),
) -> nn.Sequential:
    """A small VGG (Simonyan & Zisserman 2015) for 8x8 digits or 28x28 MNIST.

    ``widths`` reads like torchvision's VGG configs: an int is a conv3x3 (padding 1) to that many
    channels, followed by BatchNorm when ``batchnorm`` and a ReLU; ``"M"`` is a 2x2 max-pool.
    A global average pool and one Linear head follow, so any input size works. Convs have a
    bias only without BatchNorm (where BN's shift makes it redundant). VGG-19 is
    ``(64, 64, "M", 128, 128, "M", 256 x 4, "M", 512 x 4, "M", 512 x 4, "M")``.

    >>> vgg_like(1, 10, batchnorm=True)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    channels = _positive("in_channels", in_channels)
    if not any(w != "M" for w in widths):
        raise InitlabError(f"widths must hold at least one conv width, got {tuple(widths)!r}")
    layers: list[nn.Module] = []
    for w in widths:
        if w == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        _positive("widths entry", w)  # type: ignore[arg-type]
        layers += [
            nn.Conv2d(channels, w, 3, padding=1, bias=not batchnorm),
            _norm2d(w, batchnorm),
            nn.ReLU(),
        ]
        channels = w
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, _positive("num_classes", num_classes)),
    ]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    The shortcut ``s`` is the identity, or a 1x1 conv (+ BN) projection where the stride or the
    width changes (option B). Without ``batchnorm`` the BNs are ``nn.Identity`` and convs get a
    bias.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, batchnorm: bool = True) -> None:
        super().__init__()
        bias = not batchnorm
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm2d(out_ch, batchnorm)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias)
        self.bn2 = _norm2d(out_ch, batchnorm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias), _norm2d(out_ch, batchnorm)
            )
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem ``conv``/``bn``/``act``, ``stages`` of :class:`BasicBlock`, ``pool``, ``fc``: see
    :func:`resnet_like`."""

    def __init__(
        self, in_channels: int, num_classes: int, blocks: Sequence[int], batchnorm: bool,
        width: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=not batchnorm)
        self.bn = _norm2d(width, batchnorm)
        self.act = nn.ReLU()
        stages: list[nn.Module] = []
        ch = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(ch, out, stride if j == 0 else 1, batchnorm))
                ch = out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.act(self.bn(self.conv(x))))  # (B, C, H', W')
        return self.fc(self.pool(x).flatten(1))


def resnet_like(
    in_channels: int,
    num_classes: int,
    depth_blocks: int | Sequence[int],
    batchnorm: bool,
    width: int = 16,
) -> ResNet:
    """A CIFAR-style ResNet (He et al. 2016, sec. 4.2) of :class:`BasicBlock` s for small images.

    A conv3x3 stem of ``width`` channels, three stages of ``depth_blocks`` blocks each (or one
    count per stage) at ``width``, ``2 width``, ``4 width`` channels (stride 2 at each new
    stage), global average pool, Linear head. ``depth_blocks=n`` has ``6n + 2`` layers:
    ResNet-20 is ``n=3``, ResNet-110 ``n=18``, ResNet-1202 ``n=200``.

    >>> net = resnet_like(1, 10, depth_blocks=1, batchnorm=False)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    counts = [depth_blocks] * 3 if isinstance(depth_blocks, int) else list(depth_blocks)
    if not counts:
        raise InitlabError("depth_blocks must name at least one stage, got an empty sequence")
    for n in counts:
        _positive("depth_blocks", n)
    return ResNet(
        _positive("in_channels", in_channels), _positive("num_classes", num_classes), counts,
        batchnorm, _positive("width", width),
    )  # fmt: skip


# --------------------------------------------------------------------------- transformer


class FeedForward(nn.Module):
    """The transformer's MLP: ``fc2(gelu(fc1(x)))`` with a 4x wider hidden layer."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """A pre-LN block (GPT-2; Xiong et al. 2020): ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    ``post_ln=True`` gives the original Transformer's post-LN block (Vaswani et al. 2017):
    ``ln1(x + attn(x))``, then ``ln2(x + mlp(x))``, the layout that needs warmup and that
    T-Fixup (Huang et al. 2020) was made to train without it.
    """

    def __init__(self, d_model: int, n_head: int, norm: bool = True, post_ln: bool = False) -> None:
        super().__init__()
        self.post_ln = post_ln
        self.ln1: nn.Module = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln2: nn.Module = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.mlp = FeedForward(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # True = masked
        if self.post_ln:
            x = self.ln1(x + self.attn(x, x, x, attn_mask=causal, need_weights=False)[0])
            return self.ln2(x + self.mlp(x))
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A tiny GPT (Radford et al. 2019; after nanoGPT) over characters, see
    :func:`char_transformer`."""

    def __init__(
        self,
        vocab: int,
        block: int,
        d_model: int,
        n_head: int,
        n_layer: int,
        norm: bool,
        post_ln: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise InitlabError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.block = block
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(block, d_model)
        self.blocks = nn.Sequential(
            *(TransformerBlock(d_model, n_head, norm, post_ln) for _ in range(n_layer))
        )
        # post-LN: the last block's ln2 already normalizes the output
        self.ln_f: nn.Module = nn.LayerNorm(d_model) if norm and not post_ln else nn.Identity()
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` for token indices ``idx`` of shape ``(B, T)``, T <= block."""
        t = idx.shape[1]
        if t > self.block:
            raise InitlabError(f"sequence length {t} exceeds the model's block size {self.block}")
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)  # (B, T, d_model)
        return self.head(self.ln_f(self.blocks(x)))


def char_transformer(
    vocab: int = 27,
    block: int = 8,
    d_model: int = 64,
    n_head: int = 4,
    n_layer: int = 2,
    norm: bool = True,
    post_ln: bool = False,
) -> CharTransformer:
    """A tiny GPT-style character model: token + position embeddings, ``n_layer`` pre-LN
    :class:`TransformerBlock` s (causal ``nn.MultiheadAttention``, GELU MLP), a final LayerNorm
    and a bias-free Linear head. ``norm=False`` replaces every LayerNorm by ``nn.Identity``,
    the setting of T-Fixup (Huang et al. 2020); ``post_ln=True`` builds post-LN blocks (no
    final LayerNorm: the last block ends with one).

    >>> char_transformer()(torch.zeros(2, 8, dtype=torch.long)).shape
    torch.Size([2, 8, 27])
    >>> type(char_transformer(post_ln=True).ln_f).__name__
    'Identity'
    """
    return CharTransformer(
        _positive("vocab", vocab), _positive("block", block), _positive("d_model", d_model),
        _positive("n_head", n_head), _positive("n_layer", n_layer), norm, post_ln,
    )  # fmt: skip


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "makemore_mlp": MakemoreMLP,
    "plain_mlp": plain_mlp,
    "residual_mlp": residual_mlp,
    "vgg_like": vgg_like,
    "resnet_like": resnet_like,
    "char_transformer": char_transformer,
}
"""Factory per model name."""


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name with its factory's keyword arguments.

    >>> build("resnet_lke", num_classes=10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    initlab.errors.InitlabError: unknown model 'resnet_lke'. Did you mean 'resnet_like'? ...
    """
    check_choice("model", name, MODELS)
    return MODELS[name](**kwargs)
