"""Regressions from the torchvision-style vision survey (``benchmarks/vision_zoo.py``, issue #14):
its cheapest models through the survey's four checks, and the measured head (:mod:`initlab.planning.calibrate`)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.planning import HEAD_GAIN
from initlab.planning.calibrate import HEAD_CALIBRATED
from tests._benchmarks import load_benchmark

zoo = load_benchmark("vision_zoo")


@pytest.mark.parametrize("name", ["squeezenet1_1", "mobilenet_v3_small", "unet", "alexnet",
                                  "vgg11_bn"])  # fmt: skip
def test_survey_row_passes(name: str) -> None:
    """(a)-(d) of the survey: initlab's initial loss at most the own init's + 0.02 and within
    0.05 of log(classes) (3 seeds, 256 random images), finite and bounded activations, and the
    meta-built model runs after ``init(..., device="cpu")``."""
    torch.set_num_threads(1)
    row = zoo.survey(name)
    assert zoo.verdict(row) == [], row
    assert row["initlab"] <= row["own"] + 0.02


def _alexnet_like(scale: float = 1.0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = scale * torch.randn(1024, 3, 32, 32, generator=g)
    return zoo.AlexNet().train(), x, torch.randint(0, 10, (1024,), generator=g)


def test_head_without_normalization_is_calibrated() -> None:
    """Max-pools and dropouts raise the head's input to E[h^2] ~ 24 under Kaiming gains: the
    planned gain 0.1 would start 0.11 nats above log(10). The head is scaled to E[h^2] = 1."""
    model, x, y = _alexnet_like()
    p = initlab.init(model, example=x[:32], seed=0)
    head = p["classifier.6.weight"]
    assert HEAD_CALIBRATED in head.note and head.gain < HEAD_GAIN / 2
    assert abs(float(model.classifier[6].weight.detach().std()) - head.std) < 0.1 * head.std
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    assert abs(loss - math.log(10)) < 0.02


def test_calibration_follows_the_input_scale() -> None:
    """Raw-scale inputs (x 50) in a net without normalization: the head shrinks with them, and
    the initial loss stays at log(classes)."""
    model, x, y = _alexnet_like(50.0)
    p = initlab.init(model, example=x[:32], seed=0)
    assert p["classifier.6.weight"].gain < 1e-3
    with torch.no_grad():
        assert abs(float(F.cross_entropy(model(x), y)) - math.log(10)) < 0.02


def test_calibration_leaves_state_rng_and_mode() -> None:
    """The measuring forward runs in train mode on a forked RNG: every module's mode and the
    global RNG stream are as before."""
    model, x, _ = _alexnet_like()
    model.classifier[0].eval()  # one submodule in eval on purpose: kept so
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    initlab.init(model, example=x[:32], seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert model.training and not model.classifier[0].training
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_calibration_on_an_example_the_model_cannot_run_leaves_the_plan() -> None:
    """The measuring forward fails (here: the example's batch has the wrong width for the real
    pass): the heads stay as planned and no hook is left behind."""
    from initlab.planning.calibrate import calibrate_heads

    model, x, _ = _alexnet_like()
    p = initlab.plan(model, example=x[:8], seed=0).apply()
    head = model.classifier[6].weight.detach().clone()
    q = calibrate_heads(model, p, torch.randn(2, 5))
    assert (
        torch.equal(model.classifier[6].weight, head)
        and HEAD_CALIBRATED not in q["classifier.6.weight"].note
    )
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def _logit_variance(model: nn.Module, head: str, x: torch.Tensor, std: float) -> float:
    """``fan_in std^2 E[h^2]``: the head's logit variance at the planned ``std``, ``h`` its
    train-mode input on ``x``."""
    from initlab.planning.calibrate import _input_moments

    w = model.get_submodule(head).weight
    return w[0].numel() * std**2 * _input_moments(model, [head], x)[head]


@pytest.mark.parametrize(("build", "head"), [(lambda: zoo.PreActResNet(), "fc"),
                                             (lambda: zoo.VGG11(), "classifier.6")])  # fmt: skip
def test_normalized_head_starts_at_the_logit_budget(build: Any, head: str) -> None:
    """In a normalized net the head's input is measured too (pooled BN-ReLU features:
    E[h^2] ~ 0.17, well under the 1 gain 0.1 assumes; VGG-BN: a dropout MLP after the last BN)
    and its gain set so that the logits start at the budget's variance on the example
    (``fan_in std^2 E[h^2]``), up or down, and drawn at that std."""
    from initlab.planning.calibrate import LOGIT_VARIANCE_BUDGET

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    model = build()
    p = initlab.init(model, example=x, seed=0)
    e = p[head + ".weight"]
    assert HEAD_CALIBRATED in e.note and e.gain != HEAD_GAIN
    assert abs(float(model.get_submodule(head).weight.detach().std()) - e.std) < 0.1 * e.std
    assert _logit_variance(model, head, x, e.std) == pytest.approx(LOGIT_VARIANCE_BUDGET, rel=1e-6)
    n = model.get_submodule(head).weight.numel()  # the draw: E[w^2] within 3 sd of std^2
    mean_square = float(model.get_submodule(head).weight.detach().pow(2).mean())
    assert mean_square == pytest.approx(e.std**2, rel=3 * math.sqrt(2 / n))


def test_head_after_a_final_norm_and_dead_features_and_head_scale() -> None:
    """A head read straight from a LayerNorm (E[h^2] = 1, up to its eps) rises to gain
    sqrt(0.025); features
    that are all but dead cap it at gain 1; ``head_scale`` is the user's gain, used as given."""
    from initlab.planning.calibrate import LOGIT_VARIANCE_BUDGET, MAX_HEAD_GAIN

    torch.manual_seed(0)
    x = torch.randn(256, 32)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.LayerNorm(64), nn.Linear(64, 10))
    p = initlab.init(net, example=x, seed=0)
    assert p["3.weight"].gain == pytest.approx(math.sqrt(LOGIT_VARIANCE_BUDGET), rel=1e-3)
    net = nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.Linear(64, 64), nn.Tanh(),
                        nn.Linear(64, 10))  # fmt: skip
    with torch.no_grad():
        net[1].weight.fill_(1e-4)  # a deliberate constant, kept: tanh of ~0 features
    assert initlab.init(net, example=x, seed=0)["4.weight"].gain == MAX_HEAD_GAIN
    model, x, _ = _alexnet_like()
    p = initlab.init(model, example=x[:32], seed=0, head_scale=0.1)
    assert p["classifier.6.weight"].gain == pytest.approx(0.1)


def test_plain_mlp_at_the_bound_keeps_its_plan() -> None:
    """A shallow ReLU MLP at Kaiming gains on standardized inputs has E[h^2] ~ 1 at its head,
    within the margin: the plan's gain is drawn exactly."""
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10))  # fmt: skip
    p = initlab.init(net, example=torch.randn(64, 64), seed=0)
    assert p["4.weight"].gain == HEAD_GAIN and HEAD_CALIBRATED not in p["4.weight"].note


def _pooled_relu_chain() -> nn.Sequential:
    """Ten 3x3 ReLU convs (a deep plain chain: ZerO, head gain 0.3) with three max-pools."""
    layers: list[nn.Module] = []
    c = 3
    for i in range(10):
        layers += [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if i in (2, 5, 8) else []
        c = 16
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def test_deep_plain_head_within_the_margin_meets_the_loss_bound() -> None:
    """The pools leave the head's input at 1.0-1.25x the bound, inside the margin; at the deep
    chain's head gain 0.3 the logits' variance would be 0.107 (0.044 nats here): past the budget,
    the head is scaled to it all the same."""
    from initlab.planning import DEEP_PLAIN_HEAD_GAIN
    from initlab.planning.calibrate import LOGIT_VARIANCE_BUDGET, MARGIN, _input_moments

    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = 0.465 * torch.randn(2048, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (2048,), generator=g)
    model = _pooled_relu_chain()
    head = str(len(model) - 1)
    p = initlab.plan(model, example=x[:32], seed=0)
    assert p[head + ".weight"].gain == pytest.approx(DEEP_PLAIN_HEAD_GAIN)
    p = initlab.init(model, example=x[:32], seed=0)
    assert 1.0 < _input_moments(model, [head], x[:32])[head] < MARGIN  # the head's input as drawn
    assert HEAD_CALIBRATED in p[head + ".weight"].note
    with torch.no_grad():
        logits = model(x)
        loss = float(F.cross_entropy(logits, y))
    assert float(logits.var()) <= 1.1 * LOGIT_VARIANCE_BUDGET  # measured on 32 of the 2048
    assert 0.0 < loss - math.log(10) <= 0.05


def test_meta_built_model_gets_the_same_measured_head() -> None:
    """Built on the meta device and initialized with ``device="cpu"``, the model is measured
    after it is materialized: every value equals the eager build's, the head's included."""
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        meta = zoo.PreActResNet()
    p = initlab.init(meta, example=x, seed=0, device="cpu")
    torch.manual_seed(0)
    eager = zoo.PreActResNet()
    q = initlab.init(eager, example=x, seed=0)
    assert HEAD_CALIBRATED in p["fc.weight"].note and p["fc.weight"].gain == q["fc.weight"].gain
    a, b = meta.state_dict(), eager.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm"])
def test_parametrized_head_is_not_measured(wrap: str) -> None:
    """A head under weight or spectral norm computes its original's direction times a norm:
    redrawing the original at another gain would change nothing, so it keeps its plan and no
    note claims otherwise."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    head = getattr(parametrizations, wrap)(nn.Linear(32, 10))
    net = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), head)
    p = initlab.init(net, example=torch.randn(8, 16), seed=0)
    heads = [e for e in p if "head" in e.roles]
    assert heads and all(HEAD_CALIBRATED not in e.note for e in heads)
    q = initlab.plan(net, example=torch.randn(8, 16), seed=0)
    assert all(p[e.name].gain == q[e.name].gain for e in heads)
