"""LSUV: unit variance per layer, the hand-checked case, odd layers, errors, transactions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from initlab import lsuv
from initlab.errors import InitlabError
from tests import models
from tests.methods._fault import assert_same_state, dirty, state_of


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _output_vars(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, float(o.var(unbiased=False))))
               for n in names]  # fmt: skip
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_unit_variance_on_held_out_batch() -> None:
    net = nn.Sequential(
        *[m for _ in range(6) for m in (nn.Linear(32, 32), nn.Tanh())], nn.Linear(32, 10)
    )
    n = 512
    x, held = torch.randn(n, 32, generator=_gen(0)), torch.randn(n, 32, generator=_gen(1))
    res = lsuv(net, x)
    assert [la.name for la in res.layers] == [str(i) for i in range(0, 13, 2)]
    assert all(abs(s**2 - 1) <= res.tol for s in res.stds.values())
    # held out: tol plus the sampling error of a variance, k * sqrt(2 / n) with k = 5
    for name, var in _output_vars(net, held, list(res.stds)).items():
        assert abs(var - 1) <= res.tol + 5 * math.sqrt(2 / n), (name, var)


def test_hand_checked_linear() -> None:
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    # outputs 1, 2, 3, 0: mean 1.5, population variance 1.25 -> W / sqrt(1.25)
    res = lsuv(net, x, orthogonal=False, tol=0.0, max_iters=1)
    assert torch.allclose(net.weight, torch.tensor([[1.0, 2.0]]) / math.sqrt(1.25))
    assert res.layers[0].iterations == 1
    assert res.layers[0].std_before == pytest.approx(math.sqrt(1.25))
    assert res.layers[0].scale == pytest.approx(1 / math.sqrt(1.25))


def test_orthonormal_pre_init_and_seed() -> None:
    a, b = nn.Linear(16, 8), nn.Linear(16, 8)
    x = torch.randn(64, 16, generator=_gen(0))
    lsuv(a, x, max_iters=0, seed=3)
    lsuv(b, x, max_iters=0, seed=3)
    assert torch.equal(a.weight, b.weight)
    assert torch.allclose(a.weight @ a.weight.T, torch.eye(8), atol=1e-5)
    assert torch.count_nonzero(a.bias) == 0


@pytest.mark.parametrize("build,example", [
    (models.cnn_bn, lambda: torch.randn(16, 3, 8, 8, generator=_gen(0))),
    (models.ResNet, lambda: torch.randn(8, 3, 8, 8, generator=_gen(0))),
    (models.Branchy, lambda: torch.randn(64, 8, generator=_gen(0))),
    (models.encoder, lambda: torch.randn(8, 5, 16, generator=_gen(0))),
    (models.FunctionalMLP, lambda: torch.randn(64, 16, generator=_gen(0))),
])  # fmt: skip
def test_test_models(build, example) -> None:
    torch.manual_seed(0)
    net = build()
    net.train()
    x = example()
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    res = lsuv(net, x)
    assert res.layers
    off = [(la.name, la.std, la.iterations) for la in res.layers if abs(la.std**2 - 1) > res.tol]
    assert off == []  # every layer reached unit variance (none stopped at the iteration cap)
    assert all(torch.equal(b, buffers[n]) for n, b in net.named_buffers())  # BN stats untouched
    assert all(m.training for m in net.modules())  # mode restored


def test_layer_called_twice_pools_both_calls() -> None:
    net = models.Branchy()
    res = lsuv(net, torch.randn(256, 8, generator=_gen(0)))
    assert "shared" in res.stds and "never" not in res.stds
    seen: list[torch.Tensor] = []
    h = net.shared.register_forward_hook(lambda m, a, o: seen.append(o))
    with torch.no_grad():
        net(torch.randn(256, 8, generator=_gen(0)))
    h.remove()
    pooled = torch.cat([t.flatten() for t in seen]).var(unbiased=False)
    assert abs(float(pooled) - 1) <= 0.1


def test_zero_variance_names_layer_or_skips() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.zero_()
    x = torch.randn(32, 4, generator=_gen(0))
    before = net[2].weight.clone()
    with pytest.raises(InitlabError, match="'2'"):
        lsuv(net, x, orthogonal=False)
    assert torch.equal(net[2].weight, before)
    with pytest.warns(UserWarning, match="'2'"):
        res = lsuv(net, x, orthogonal=False, on_zero="skip")
    assert res.layers[1].skipped and torch.equal(net[2].weight, before)


def test_nan_data_is_an_error() -> None:
    x = torch.randn(8, 4)
    x[3, 1] = float("nan")
    with pytest.raises(InitlabError, match="NaN"):
        lsuv(nn.Linear(4, 2), x)


def test_bad_options() -> None:
    with pytest.raises(InitlabError, match="on_zero"):
        lsuv(nn.Linear(4, 2), torch.randn(8, 4), on_zero="ignore")  # type: ignore[arg-type]


def test_accepts_loader_of_pairs() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    loader = [
        (torch.randn(64, 4, generator=_gen(i)), torch.zeros(64, dtype=torch.long)) for i in range(2)
    ]
    res = lsuv(net, loader)
    assert set(res.stds) == {"0", "2"}


class _Boom(nn.Module):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return x


def test_fault_injection_restores_everything() -> None:
    net = nn.Sequential(
        nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), _Boom(after=3), nn.Linear(8, 2)
    )
    dirty(net)
    before = state_of(net)
    with pytest.raises(RuntimeError, match="boom"):
        lsuv(net, torch.randn(32, 8, generator=_gen(0)))
    assert_same_state(before, state_of(net))


def test_frozen_parameters_are_left_alone_and_reported() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 8)
    )
    net[0].requires_grad_(False)  # a frozen layer (e.g. a pretrained stem)
    net[2].bias.requires_grad_(False)  # a frozen bias on a trainable layer
    with torch.no_grad():
        net[2].bias.fill_(0.5)
    frozen_before = [net[0].weight.clone(), net[0].bias.clone()]
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(1))
    res = lsuv(net, x)
    assert res.frozen == ("0.weight", "0.bias", "2.bias")
    assert torch.equal(net[0].weight, frozen_before[0])
    assert torch.equal(net[0].bias, frozen_before[1])
    assert torch.equal(net[2].bias, torch.full((32,), 0.5))  # not zeroed by the pre-init
    assert [la.name for la in res.layers] == ["2", "4"]
    assert all(abs(s**2 - 1) <= 0.1 for s in res.stds.values())
    assert not any(p.requires_grad for p in net[0].parameters())  # flags untouched


def test_frozen_parameters_rescaled_only_when_asked() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    net[0].requires_grad_(False)
    before = net[0].weight.clone()
    res = lsuv(net, torch.randn(256, 16), include_frozen=True)
    assert res.frozen == ()
    assert [la.name for la in res.layers] == ["0", "2"]
    assert not torch.equal(net[0].weight, before)
    net[2].requires_grad_(False)
    with pytest.raises(InitlabError, match="frozen"):
        lsuv(net, torch.randn(256, 16))


def test_attention_rescales_only_its_output_projection() -> None:
    """Scaling q/k changes the softmax, not just the scale: only ``out_proj`` is rescaled, so one
    step reaches the target and ``in_proj_weight`` keeps its orthonormal pre-init per chunk."""
    torch.manual_seed(0)
    net = models.encoder()
    x = torch.randn(8, 5, 16, generator=_gen(0))
    res = lsuv(net, x)
    attn = net.layers[0].self_attn
    step = res.layers[0]
    assert step.name == "layers.0.self_attn" and step.iterations == 1
    assert abs(step.std**2 - 1) <= 1e-4  # linear in out_proj: exact in one step
    for chunk in attn.in_proj_weight.detach().chunk(3):  # q, k, v untouched after the pre-init
        assert torch.allclose(chunk @ chunk.T, torch.eye(16), atol=1e-5)
    w = attn.out_proj.weight.detach()
    gram = w @ w.T / step.scale**2
    assert torch.allclose(gram, torch.eye(16), atol=1e-5)  # orthonormal times the LSUV factor
