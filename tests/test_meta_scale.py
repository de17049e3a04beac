"""Meta-device init: same weights as the CPU-built model, materialized one parameter at a time,
drawn straight into the parameter's own storage (no second copy). Memory figures for a 1 B
parameter model are in benchmarks/bench_scale.py (tests never time or weigh anything)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initlab import schemes
from initlab.planning import apply as plan_module  # the plan draws through its `draw`
from initlab.planning import init


class TinyGPT(nn.Module):
    """Embedding tied to the head, a residual MLP stack, a norm: the shapes of a GPT block."""

    def __init__(self, vocab: int = 37, d: int = 24, depth: int = 3) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.wte(idx)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.ln_f(h))


def example() -> torch.Tensor:
    return torch.randint(0, 37, (2, 5), generator=torch.Generator().manual_seed(0))


RULES = {"residual_out": ("trunc_normal", {"std": 0.02}), "blocks.0.1.weight": "orthogonal"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scheme", ["kaiming_normal", "trunc_normal", "xavier_uniform"])
def test_meta_model_equals_cpu_model(scheme: str, dtype: torch.dtype) -> None:
    cpu = TinyGPT().to(dtype)
    init(cpu, scheme, example=example(), rules=RULES, seed=7)
    with torch.device("meta"):
        meta = TinyGPT().to(dtype)
    init(meta, scheme, example=example(), rules=RULES, seed=7)
    got, want = dict(meta.named_parameters()), dict(cpu.named_parameters())
    assert got.keys() == want.keys()
    for name, p in got.items():
        assert p.device.type == "cpu" and p.dtype == dtype, name
        assert torch.equal(p, want[name]), name
    assert meta.head.weight is meta.wte.weight  # tying survives materialization


def test_parameters_materialized_one_at_a_time_and_drawn_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with torch.device("meta"):
        net = TinyGPT(vocab=64, d=32, depth=4)
    params = dict(net.named_parameters())  # unique names (tied head.weight is wte.weight)
    live: list[int] = []  # materialized parameters when each draw starts
    drawn: list[str] = []
    foreign: list[tuple[str, int]] = []  # sampler writes outside the parameter being drawn

    real_draw = plan_module.draw

    def counting_draw(entry: object, tensor: torch.Tensor, seed: int) -> torch.Tensor:
        live.append(sum(p.device.type != "meta" for p in net.parameters()))
        drawn.append(entry.name)  # type: ignore[attr-defined]
        target = tensor.untyped_storage().data_ptr()

        def sample_(
            self: schemes.Distribution, t: torch.Tensor, generator: object = None
        ) -> torch.Tensor:
            if t.untyped_storage().data_ptr() != target:
                foreign.append((entry.name, t.numel()))  # type: ignore[attr-defined]
            return real_sample(self, t, generator)

        with monkeypatch.context() as m:
            m.setattr(schemes.Distribution, "sample_", sample_)
            return real_draw(entry, tensor, seed)

    real_sample = schemes.Distribution.sample_
    monkeypatch.setattr(plan_module, "draw", counting_draw)
    init(
        net,
        "kaiming_normal",
        example=example(),
        rules={"residual_out": ("trunc_normal", {"std": 0.02})},
        seed=0,
    )

    # the k-th draw sees exactly k materialized parameters: one new one per draw, none ahead
    assert live == list(range(1, len(params) + 1))
    assert sorted(drawn) == sorted(params)
    # elementwise schemes write straight into the parameter's storage: no buffer, no copy
    assert foreign == []
    assert all(p.device.type == "cpu" for p in net.parameters())
