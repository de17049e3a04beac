"""GradInit: scales, floors, the gamma bound, an autograd oracle, data handling, transactions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab import gradinit
from initlab.errors import InitlabError
from initlab.methods.gradinit import default_gamma
from tests import models
from tests.methods._fault import assert_same_state, dirty, failing, state_of


def _data(n: int, d: int = 8, classes: int = 3, batch: int = 16, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, d, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n)
    ]


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )


def test_each_tensor_one_scalar_and_min_scale() -> None:
    net = _mlp()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    res = gradinit(net, F.cross_entropy, _data(6), lr=0.1, iters=40, scale_lr=0.1, min_scale=0.5)
    assert set(res.scales) == set(before)  # nonzero biases are scaled too
    for n, p in net.named_parameters():
        s = res.scales[n]
        assert torch.allclose(p, s * before[n], atol=1e-6)
        assert s >= (0.0 if n.endswith("bias") else 0.5)
    assert any(s == 0.5 for n, s in res.scales.items() if n.endswith("weight"))  # the floor binds


def test_zero_norm_skipped_norm_layers_scaled_by_default() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    nn.init.zeros_(net[0].bias)
    stats = {n: b.clone() for n, b in net.named_buffers()}
    res = gradinit(net, F.cross_entropy, _data(4), lr=0.1, iters=5, scale_lr=0.1)
    # the official code scales BN gammas; BN betas start at 0 and are skipped like zero biases
    assert set(res.scales) == {"0.weight", "1.weight", "3.weight", "3.bias"}
    assert "zero norm" in res.skipped["0.bias"] and "zero norm" in res.skipped["1.bias"]
    assert res.scales["1.weight"] != 1.0
    assert torch.allclose(net[1].weight, torch.full((16,), res.scales["1.weight"]))
    assert torch.count_nonzero(net[0].bias) == 0
    assert all(torch.equal(b, stats[n]) for n, b in net.named_buffers())  # running stats untouched
    torch.manual_seed(0)
    net2 = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    res2 = gradinit(net2, F.cross_entropy, _data(2, classes=4), lr=0.1, iters=2, scale_lr=0.1,
                    scale_norms=False)  # fmt: skip
    assert "norm layer" in res2.skipped["1.weight"] and torch.equal(net2[1].weight, torch.ones(4))


def _official_rescale_adam(steps: list[tuple[float, bool]], lr: float, floor: float,
                           clip: float, b1: float = 0.9, b2: float = 0.999,
                           eps: float = 1e-8) -> list[float]:  # fmt: skip
    """The official RescaleAdam rule for one scalar, in plain Python, written from its formula:
    separate first moments and step counts per kind of step, one second moment over all steps."""
    alpha, m, v, t = 1.0, {True: 0.0, False: 0.0}, 0.0, {True: 0, False: 0}
    out = []
    for g, cons in steps:
        if alpha == 0.0:  # a tensor of zero norm is skipped
            out.append(alpha)
            continue
        g = max(min(g, clip), -clip)
        t[cons] += 1
        m[cons] = m[cons] * b1 + g * (1 - b1)
        v = v * b2 + g * g * (1 - b2)
        denom = math.sqrt(v / (1 - b2 ** (t[True] + t[False]))) + eps
        alpha = max(alpha - lr / (1 - b1 ** t[cons]) * m[cons] / denom, floor)
        out.append(alpha)
    return out


def test_scale_optimizer_follows_the_official_rule() -> None:
    from initlab.methods.gradinit import _RescaleAdam

    g = torch.Generator().manual_seed(0)
    n = 40
    # constraint steps, then objective steps, then interleaved; gradients of both signs, some
    # beyond the clip; per scalar its own sequence
    kinds = [True] * 5 + [False] * 5 + [i % 3 == 0 for i in range(20)]
    grads = torch.randn(len(kinds), n, generator=g, dtype=torch.float64) * 0.8
    grads[:, : n // 2] += 0.6  # half the scalars drift down (some reach the floor)
    lr, clip = 0.1, 1.0
    floor = torch.tensor([0.0 if i % 4 == 0 else 0.01 for i in range(n)], dtype=torch.float64)
    alpha = torch.ones(n, dtype=torch.float64)
    opt = _RescaleAdam(n, lr, floor, clip)
    got = []
    for k, gr in zip(kinds, grads, strict=True):
        opt.step(alpha, gr, constraint=k)
        got.append(alpha.clone())
    got_t = torch.stack(got)
    for i in range(n):
        want = _official_rescale_adam(
            [(float(grads[s, i]), kinds[s]) for s in range(len(kinds))], lr, float(floor[i]), clip
        )
        assert torch.allclose(got_t[:, i], torch.tensor(want, dtype=torch.float64), atol=1e-12)
    assert bool((got_t[-1] == 0).any())  # some biases reached 0 and stayed (skipped after)
    assert bool((got_t[-1] == 0.01).any())  # some weights sit at their floor


def test_gradient_norm_bound_reached() -> None:
    net = _mlp()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # a large init: the gradient norm starts far above gamma
    data = _data(8)
    res = gradinit(net, F.cross_entropy, data, lr=0.1, iters=120, gamma=0.5, scale_lr=0.05)
    assert res.history[0].constrained and res.history[0].grad_norm > 0.5
    # final model: the L2 gradient norm on a GradInit batch (two halves) respects gamma (5% slack)
    x = torch.cat([data[0][0], data[1][0]])
    y = torch.cat([data[0][1], data[1][1]])
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    assert math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) <= 0.5 * 1.05
    assert sum(h.constrained for h in res.history[-20:]) < 20  # objective steps resume


def test_one_objective_step_matches_autograd_oracle() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    w0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    data = _data(3, d=3, classes=2, batch=4)
    lr, tau = 0.1, 0.01
    res = gradinit(net, F.cross_entropy, data, lr=lr, iters=1, gamma=1e9, scale_lr=tau)
    assert not res.history[0].constrained
    # oracle: plain autograd on explicit scales, no functional_call
    a = torch.ones(4, requires_grad=True)
    names = list(w0)

    def fwd(ps, x):
        h = torch.tanh(x @ ps[0].T + ps[1])
        return h @ ps[2].T + ps[3]

    ps = [a[i] * w0[n] for i, n in enumerate(names)]
    x = torch.cat([data[0][0], data[1][0]])
    y = torch.cat([data[0][1], data[1][1]])
    g = torch.autograd.grad(F.cross_entropy(fwd(ps, x), y), ps, create_graph=True)
    gn = torch.sqrt(sum(t.pow(2).sum() for t in g))
    ps2 = [p - lr * (t / gn).detach() for p, t in zip(ps, g, strict=True)]
    x2 = torch.cat([data[0][0], data[2][0]])
    y2 = torch.cat([data[0][1], data[2][1]])
    (ga,) = torch.autograd.grad(F.cross_entropy(fwd(ps2, x2), y2) / lr, a)
    assert res.history[0].grad_norm == pytest.approx(float(gn.detach()), rel=1e-5)
    # first Adam step with bias correction: alpha = 1 - tau * g / (|g| + eps) ~ 1 - tau * sign(g)
    gc = ga.clamp(-1, 1)
    expected = 1 - tau * gc / (gc.abs() + 1e-8)
    got = torch.tensor([res.scales[n] for n in names])
    assert torch.allclose(got, expected, atol=1e-6)


def test_adam_target_uses_l1_norm() -> None:
    net = _mlp()
    data = _data(4)
    res = gradinit(net, F.cross_entropy, data, lr=1e-3, optimizer="adam", iters=1, scale_lr=0.0)
    x = torch.cat([data[0][0], data[1][0]])
    y = torch.cat([data[0][1], data[1][1]])
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    assert res.history[0].grad_norm == pytest.approx(
        sum(float(g.abs().sum()) for g in grads), rel=1e-5
    )
    assert res.gamma == pytest.approx(default_gamma(1e-3, "adam")) == pytest.approx(100.0)


def test_model_not_mutated_while_optimizing() -> None:
    net = _mlp()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    seen = []

    def loss_fn(out, y):
        seen.append(all(torch.equal(p, before[n]) for n, p in net.named_parameters()))
        return F.cross_entropy(out, y)

    gradinit(net, loss_fn, _data(4), lr=0.1, iters=5, scale_lr=0.1)
    assert seen and all(seen)
    assert not all(
        torch.equal(p, before[n]) for n, p in net.named_parameters()
    )  # written at the end


def test_data_sources() -> None:
    data = _data(3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data])), batch_size=16)  # fmt: skip
    assert len(gradinit(_mlp(), F.cross_entropy, loader, lr=0.1, iters=4).history) == 4  # cycles
    with pytest.raises(InitlabError, match="ran out after 3"):
        gradinit(_mlp(), F.cross_entropy, iter(data), lr=0.1, iters=4)
    with pytest.raises(InitlabError, match="optimizer"):
        gradinit(_mlp(), F.cross_entropy, data, lr=0.1, optimizer="adamw")  # type: ignore[arg-type]
    bad = _data(2)
    bad[1][0][0, 0] = float("inf")
    with pytest.raises(InitlabError, match="NaN/inf"):
        gradinit(_mlp(), F.cross_entropy, bad, lr=0.1, iters=1)


def test_test_models_run() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
        for _ in range(3)
    ]
    for net in (models.cnn_bn(), models.ResNet()):
        res = gradinit(net, F.cross_entropy, data, lr=0.1, iters=2)
        assert len(res.history) == 2
        floors = {n: 0.0 if "bias" in n.rsplit(".", 1)[-1] else 0.01 for n in res.scales}
        assert all(math.isfinite(s) and s >= floors[n] for n, s in res.scales.items())
        assert any(s != 1.0 for s in res.scales.values())  # the two steps moved the scales


def test_fault_injection_restores_everything() -> None:
    net = _mlp()
    dirty(net)
    before = state_of(net)
    with pytest.raises(RuntimeError, match="loader broke"):
        gradinit(net, F.cross_entropy, failing(_data(10), after=5), lr=0.1, iters=10, scale_lr=0.1)
    assert_same_state(before, state_of(net))
