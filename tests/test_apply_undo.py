"""Undo without a copy of the model: whatever fails, the model is as it was, and ``init`` on a
model in memory peaks near its weights' size (measured in a subprocess)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from initlab.errors import InitlabError
from initlab.planning import init, plan

apply_module = sys.modules["initlab.planning.apply"]  # _apply draws through its module's `draw`


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    net[2].weight.grad = torch.ones(32, 32)
    net[0].bias.requires_grad_(False)
    net[1].eval()
    net[2].register_forward_hook(lambda m, a, o: None)
    return net


def _state(net: nn.Module) -> dict[str, object]:
    return {
        "values": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "ids": {k: id(p) for k, p in net.named_parameters()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in net.named_parameters()},
        "requires_grad": {k: p.requires_grad for k, p in net.named_parameters()},
        "modes": [m.training for m in net.modules()],
        "hooks": [len(m._forward_hooks) for m in net.modules()],
    }


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    values = all(torch.equal(a["values"][k], b["values"][k]) for k in a["values"])  # type: ignore[index]
    grads = all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a["grads"].values(), b["grads"].values(), strict=True)  # type: ignore[union-attr]
    )
    rest = all(a[k] == b[k] for k in ("ids", "requires_grad", "modes", "hooks"))
    return values and grads and rest


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_rule_that_raises_on_the_last_parameter_leaves_every_weight_bit_identical(exc):
    net = _model()
    before = _state(net)
    order = [e.name for e in plan(net, example=torch.randn(2, 16), include_frozen=True)]
    assert order[-1] == "4.bias"

    def boom(t: torch.Tensor, g: torch.Generator) -> None:
        t.fill_(7.0)  # writes its scratch copy, then fails
        raise exc("stop")

    rules = {"2.weight": "orthogonal", "0.weight": lambda t, g: t.mul_(3.0), "4.bias": boom}
    with pytest.raises(exc, match="stop"):
        init(net, example=torch.randn(2, 16), rules=rules, include_frozen=True)
    assert _same(before, _state(net))


def test_an_interrupt_while_writing_is_delivered_after_the_write(monkeypatch):
    """Ctrl-C during the write phase: the write completes, then KeyboardInterrupt is raised."""
    example = torch.randn(2, 16)
    ref = _model()
    init(ref, example=example, seed=4)
    net = _model()
    real_draw = apply_module.draw
    calls = []

    def interrupted(entry, tensor, seed):
        calls.append(entry.name)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # arrives mid-way through the elementwise fills
        return real_draw(entry, tensor, seed)

    monkeypatch.setattr(apply_module, "draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        init(net, example=example, seed=4)
    assert len(calls) == len([p for p in net.parameters() if p.requires_grad])
    assert all(
        torch.equal(a, b)
        for a, b in zip(ref.state_dict().values(), net.state_dict().values(), strict=True)
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failure_while_materializing_puts_the_meta_tensors_back(monkeypatch):
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    real_draw = apply_module.draw

    def fail_late(entry, tensor, seed):
        if entry.name == "2.weight":
            raise MemoryError("no room")
        return real_draw(entry, tensor, seed)

    monkeypatch.setattr(apply_module, "draw", fail_late)
    with pytest.raises(MemoryError):
        init(net, example=torch.randn(4, 8), device="cpu")
    assert all(t.device.type == "meta" for t in [*net.parameters(), *net.buffers()])


_MEASURE = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from torch import nn
    from initlab.planning import init

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    layers, width = int(sys.argv[1]), int(sys.argv[2])
    net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    x = torch.randn(2, width)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    init(nn.Linear(4, 4), example=torch.randn(1, 4))  # one-time imports, outside the measure
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    start = status("VmRSS:")
    init(net, example=x, seed=0)
    print(json.dumps({"extra": status("VmHWM:") - start, "weights": weights}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("layers", "width"), [("6", "2048"), ("12", "1536")])
def test_init_on_a_model_in_memory_adds_little_beyond_its_weights(layers: str, width: str):
    """Default settings (transactional): the peak grows by far less than a copy of the weights,
    with elementwise draws (6 layers: Kaiming) and structured ones (12 layers, a deep plain
    chain: the default's ZerO)."""
    src = str(Path(apply_module.__file__).resolve().parents[2])
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, layers, width],
        capture_output=True, text=True, check=True,
        env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["extra"] <= 0.15 * r["weights"], r  # a copy of the weights would add 1.0x


@pytest.mark.parametrize(
    "rule", ["delta_orthogonal", "dirac", ("sparse", {"sparsity": 1.5})], ids=str
)
def test_a_structured_scheme_that_cannot_apply_fails_before_any_weight_changes(rule):
    """Built-in structured schemes are drawn while writing, in place; their checks run first, on
    a meta tensor of the parameter's shape, so a misfit on the last layer changes nothing."""
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InitlabError):
        init(net, example=torch.randn(2, 4), seed=0, rules={"4.weight": rule})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
