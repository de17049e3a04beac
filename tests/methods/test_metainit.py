"""MetaInit: the gradient quotient by hand, its descent, the sign step, transactions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab import metainit
from initlab.errors import InitlabError
from initlab.methods.metainit import gradient_quotient
from tests import models
from tests.methods._fault import assert_same_state, dirty, failing, state_of


def _mlp(seed: int = 0, gain: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return net


def test_gradient_quotient_by_hand() -> None:
    # L = a^3 / 3 + b^2: g = (a^2, 2b), Hg = (2a * a^2, 2 * 2b)
    a = torch.tensor([2.0], requires_grad=True)
    b = torch.tensor([0.5, 0.0], requires_grad=True)
    loss = (a**3).sum() / 3 + (b**2).sum()
    gq = gradient_quotient(loss, [a, b], eps=1e-5)
    # a: g=4, Hg=16 -> |(4-16)/4 - 1| = 4; b0: g=1, Hg=2 -> |(1-2)/1 - 1| = 2;
    # b1: g=0, Hg=0 -> |0/(0 + 1e-5) - 1| = 1 (sign(0) = +1)
    assert float(gq.detach()) == pytest.approx((4 + 2 + 1) / 3, rel=1e-5)


def _fixed_batch(n: int = 256) -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 8, generator=g), torch.randint(0, 4, (n,), generator=g))]


@pytest.mark.slow
def test_lowers_the_quotient() -> None:
    # on one fixed batch the objective is deterministic; GQ is rough (ratios with small
    # denominators), so compare averages rather than demand monotone descent
    res = metainit(_mlp(), F.cross_entropy, _fixed_batch(), iters=40, lr=0.01)
    assert len(res.history) == 40
    assert sum(res.history[-10:]) / 10 < 0.9 * res.history[0]


@pytest.mark.parametrize("gain", [0.5, 1.0, 3.0])
def test_small_step_is_a_descent_step(gain: float) -> None:
    res = metainit(_mlp(gain=gain), F.cross_entropy, _fixed_batch(), iters=2, lr=1e-3, momentum=0.0)
    assert res.history[1] < res.history[0]


def test_only_matrices_change_by_one_scalar_each() -> None:
    net = _mlp()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    res = metainit(net, F.cross_entropy, input_shape=(16, 8), num_classes=4, iters=3)
    assert set(res.scales) == {"0.weight", "2.weight", "4.weight"}
    for n, p in net.named_parameters():
        if n.endswith("bias"):
            assert torch.equal(p, before[n])
        else:
            assert torch.allclose(p, res.scales[n] * before[n], atol=1e-6)


def test_first_step_changes_each_norm_by_lr() -> None:
    net = _mlp()
    norms = {n: float(p.detach().norm()) for n, p in net.named_parameters() if p.dim() >= 2}
    res = metainit(net, F.cross_entropy, input_shape=(16, 8), num_classes=4, iters=1, lr=0.1)
    for n, before in norms.items():
        assert abs(res.norms[n] - before) == pytest.approx(
            0.1, abs=1e-5
        )  # signSGD: |m| = lr at step 1
        assert float(dict(net.named_parameters())[n].detach().norm()) == pytest.approx(
            res.norms[n], rel=1e-5
        )


def test_real_data_and_seed() -> None:
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)
    ]
    a, b = _mlp(), _mlp()
    ra = metainit(a, F.cross_entropy, data, iters=5)
    rb = metainit(b, F.cross_entropy, data, iters=5)
    assert ra.history == rb.history
    with pytest.raises(InitlabError, match="input_shape"):
        metainit(_mlp(), F.cross_entropy)


def test_test_models_run() -> None:
    torch.manual_seed(0)
    for net in (models.cnn_bn(), models.ResNet()):
        res = metainit(net, F.cross_entropy, input_shape=(4, 3, 8, 8), num_classes=10, iters=2)
        assert len(res.history) == 2


def test_fault_injection_restores_everything() -> None:
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g))
        for _ in range(10)
    ]
    net = _mlp()
    dirty(net)
    before = state_of(net)
    with pytest.raises(RuntimeError, match="loader broke"):
        metainit(net, F.cross_entropy, failing(data, after=4), iters=10)
    assert_same_state(before, state_of(net))
