"""Tests for initlab.bench.models: structure, forward shapes, and the makemore lecture's numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.bench import models
from initlab.errors import InitlabError

# --------------------------------------------------------------------------- makemore


@pytest.fixture(scope="module")
def names42() -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's training contexts: the names shuffled by random.seed(42), block 3."""
    from initlab.bench import data

    ds = data.load("names", block_size=3, seed=42)
    return ds.x_train, ds.y_train


def lecture_loss(init: str, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Initial loss on the lecture's first batch of 32 and the tanh saturation (|h| > 0.99).

    As in the lecture, the batch indices come from the same generator right after the init.
    """
    g = torch.Generator().manual_seed(models.MAKEMORE_SEED)
    model = models.MakemoreMLP()
    if init == "naive":
        models.makemore_naive_init_(model, g)
    else:
        models.makemore_fixed_init_(model, g, fix_tanh=init == "fixed")
    x, y = xy
    ix = torch.randint(0, x.shape[0], (32,), generator=g)
    with torch.no_grad():
        h = torch.tanh(model.W1(model.C(x[ix]).flatten(1)))
        loss = F.cross_entropy(model(x[ix]), y[ix])
    return float(loss), float((h.abs() > 0.99).float().mean())


def test_makemore_structure() -> None:
    model = models.MakemoreMLP()
    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert shapes == {
        "C.weight": (27, 10), "W1.weight": (200, 30), "W1.bias": (200,),
        "W2.weight": (27, 200), "W2.bias": (27,),
    }  # fmt: skip
    assert model(torch.zeros(5, 3, dtype=torch.long)).shape == (5, 27)


def test_makemore_naive_init_draws_like_the_lecture() -> None:
    model = models.makemore_naive_init_(models.MakemoreMLP())
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    assert torch.equal(model.C.weight, C) and torch.equal(model.W1.weight, W1.T)
    assert torch.equal(model.W1.bias, b1) and torch.equal(model.W2.weight, W2.T)
    assert torch.equal(model.W2.bias, b2)
    x = torch.randint(0, 27, (4, 3), generator=g)
    manual = torch.tanh(C[x].view(4, -1) @ W1 + b1) @ W2 + b2  # the lecture's forward
    assert torch.allclose(model(x), manual, atol=1e-5)


def test_makemore_initial_losses_match_the_lecture(
    names42: tuple[torch.Tensor, torch.Tensor],
) -> None:
    naive, naive_sat = lecture_loss("naive", names42)
    w2_only, _ = lecture_loss("w2", names42)
    fixed, fixed_sat = lecture_loss("fixed", names42)
    assert 25.0 <= naive <= 30.0  # lecture 27.88 on names.txt; 27.96 here
    assert abs(w2_only - 3.30) < 0.1 and abs(fixed - 3.30) < 0.1
    assert abs(fixed - math.log(27)) < 0.05
    assert naive_sat > 0.5 and fixed_sat < 0.05  # 62% of tanh units saturated, then ~1.4%


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("name", "kwargs", "x", "out"),
    [
        ("makemore_mlp", {}, torch.zeros(2, 3, dtype=torch.long), (2, 27)),
        ("plain_mlp", {"in_features": 64, "num_classes": 10, "depth": 4}, torch.zeros(2, 64),
         (2, 10)),
        ("residual_mlp", {"in_features": 40, "num_classes": 10, "blocks": 3, "width": 32},
         torch.zeros(2, 40), (2, 10)),
        ("vgg_like", {"in_channels": 1, "num_classes": 10, "batchnorm": False},
         torch.zeros(2, 1, 8, 8), (2, 10)),
        ("vgg_like", {"in_channels": 1, "num_classes": 10, "batchnorm": True},
         torch.zeros(2, 1, 28, 28), (2, 10)),
        ("resnet_like", {"in_channels": 1, "num_classes": 10, "depth_blocks": 2,
                         "batchnorm": True}, torch.zeros(2, 1, 28, 28), (2, 10)),
        ("resnet_like", {"in_channels": 3, "num_classes": 10, "depth_blocks": [1, 1, 1],
                         "batchnorm": False, "width": 8}, torch.zeros(2, 3, 32, 32), (2, 10)),
        ("char_transformer", {"block": 8}, torch.zeros(2, 5, dtype=torch.long), (2, 5, 27)),
        ("char_transformer", {"norm": False, "n_layer": 1}, torch.zeros(2, 8, dtype=torch.long),
         (2, 8, 27)),
    ],
)  # fmt: skip
def test_forward_shapes(name: str, kwargs: dict, x: torch.Tensor, out: tuple[int, ...]) -> None:
    model = models.build(name, **kwargs)
    assert tuple(model(x).shape) == out
    again = models.build(name, **kwargs)  # same structure every time
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in again.state_dict().items()
    ]


def test_build_unknown_name_suggests() -> None:
    with pytest.raises(InitlabError, match="'plain_mlp'"):
        models.build("plain_mpl")
    assert set(models.MODELS) == {
        "makemore_mlp", "plain_mlp", "residual_mlp", "vgg_like", "resnet_like",
        "char_transformer",
    }  # fmt: skip


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("depth", [1, 2, 10])
def test_plain_mlp_layers(depth: int) -> None:
    net = models.plain_mlp(64, 10, depth=depth, width=32, activation="tanh")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == depth and len(net) == 2 * depth - 1
    assert all(isinstance(m, nn.Tanh) for m in list(net)[1::2])
    assert linears[0].in_features == 64 and linears[-1].out_features == 10
    bound = 1 / math.sqrt(linears[0].in_features)  # PyTorch's default init left in place
    assert float(linears[0].weight.detach().abs().max()) <= bound


def test_plain_mlp_validates() -> None:
    with pytest.raises(InitlabError, match="'relu'"):
        models.plain_mlp(4, 2, depth=2, activation="rlu")  # type: ignore[arg-type]
    with pytest.raises(InitlabError, match="depth"):
        models.plain_mlp(4, 2, depth=0)


def test_residual_block_computes_x_plus_branch() -> None:
    net = models.residual_mlp(8, 3, blocks=2, width=16)
    block = net.blocks[0]
    assert isinstance(block, models.ResidualBlock)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(block(x), x + block.fc2(torch.relu(block.fc1(x))))
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for m in net.modules())


def test_vgg_like_batchnorm_switch() -> None:
    with_bn = models.vgg_like(1, 10, batchnorm=True, widths=(8, "M", 16))
    without = models.vgg_like(1, 10, batchnorm=False, widths=(8, "M", 16))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert all(m.bias is not None for m in without.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(InitlabError, match="widths"):
        models.vgg_like(1, 10, batchnorm=True, widths=("M",))


def test_resnet_like_is_6n_plus_2() -> None:
    net = models.resnet_like(3, 10, depth_blocks=3, batchnorm=True)  # ResNet-20
    blocks = [m for m in net.modules() if isinstance(m, models.BasicBlock)]
    assert len(blocks) == 9
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2  # at the two stride-2 stage changes
    main = 1 + 2 * len(blocks) + 1  # stem conv, two convs per block, head
    assert main == 20
    no_bn = models.resnet_like(3, 10, depth_blocks=1, batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())


def test_char_transformer_is_causal_and_norm_switch() -> None:
    model = models.char_transformer(block=8, n_layer=2).eval()
    x = torch.randint(0, 27, (2, 8), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 27  # change only the future
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :5], model(y)[:, :5], atol=1e-6)
        assert not torch.allclose(model(x)[:, 5:], model(y)[:, 5:])
    bare = models.char_transformer(norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in bare.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 5
    with pytest.raises(InitlabError, match="block size"):
        model(torch.zeros(1, 9, dtype=torch.long))
