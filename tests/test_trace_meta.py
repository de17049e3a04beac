"""Tracing without computing: the meta pass records the graph a real pass records, leaves the
model as it was, and falls back to a real pass (saying so) when the model reads values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initlab.errors import InitlabError
from initlab.graph import Graph, trace
from tests.models import (
    Branchy,
    Frozen,
    FunctionalMLP,
    ResNet,
    TiedLM,
    cnn_bn,
    encoder,
    module_mlp,  # fmt: skip
)


def signature(g: Graph) -> tuple:
    """Everything the trace records, as plain values."""
    fields = ("kind", "calls", "activation", "order", "activation_param", "conflicts", "consumed")
    layers = {n: ([getattr(la, f) for f in fields], sorted(la.roles)) for n, la in g.layers.items()}
    return layers, g.branches, g.shared, g.functional_uses, g.unreached, g.loose


def prelu_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 6), nn.PReLU(6), nn.Linear(6, 2))
    with torch.no_grad():
        net[1].weight.fill_(0.1)  # the slope is read from the real module, not the meta copy
    return net


CASES = [
    (FunctionalMLP, lambda: torch.randn(4, 16)),
    (module_mlp, lambda: torch.randn(4, 16)),
    (cnn_bn, lambda: torch.randn(2, 3, 8, 8)),
    (ResNet, lambda: torch.randn(2, 3, 8, 8)),
    (encoder, lambda: torch.randn(2, 5, 16)),
    (TiedLM, lambda: torch.randint(0, 20, (2, 5))),
    (Frozen, lambda: torch.randn(2, 8)),
    (prelu_net, lambda: torch.randn(3, 4)),
]


@pytest.mark.parametrize(("factory", "example"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_meta_pass_records_the_real_graph(factory, example):
    torch.manual_seed(0)
    model, x = factory(), example()
    meta, real = trace(model, x), trace(model, x, forward="real")
    assert meta.note is None and real.note is None
    assert signature(meta) == signature(real)


def test_prelu_slope_comes_from_the_real_weight():
    assert trace(prelu_net(), torch.randn(3, 4)).layers["0"].activation_param == pytest.approx(0.1)


class Spy(nn.Module):
    """Records the device of what its layers compute, in a list outside the module."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.fc, self.out, self.seen = nn.Linear(8, 8), nn.Linear(8, 2), seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        self.seen.append(h.device.type)
        return self.out(h)


def test_the_meta_pass_computes_nothing_on_the_model_device():
    seen: list[str] = []
    trace(Spy(seen), torch.randn(3, 8))
    assert seen == ["meta"]
    seen.clear()
    trace(Spy(seen), torch.randn(3, 8), forward="real")
    assert seen == ["cpu"]


def test_model_reading_values_falls_back_to_a_real_pass_and_says_so():
    model = Branchy()  # `if h.sum() > 1e9` needs a value
    g = trace(model, torch.randn(3, 8))
    assert g.note is not None and "real forward pass" in g.note and "item" in g.note
    assert g.note in g.summary()
    assert signature(g) == signature(trace(model, torch.randn(3, 8), forward="real"))


class Caching(nn.Module):
    """Caches a tensor on itself in forward, and mixes a plain (unregistered) CPU tensor in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = torch.full((4,), 2.0)  # not a buffer: stays real during the meta pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache = self.fc(x) * self.scale
        return torch.tanh(self.cache)


def test_the_meta_pass_leaves_no_meta_tensor_on_the_model():
    model = Caching()
    params = {k: (v, v.detach().clone()) for k, v in model.named_parameters()}
    model.train()
    g = trace(model, torch.randn(2, 4))
    assert g.note is None and [la.name for la in g.heads] == ["fc"]
    assert not hasattr(model, "cache")  # the meta pass's attribute is gone
    assert model.scale.device.type == "cpu" and model.training
    for k, p in model.named_parameters():
        assert p is params[k][0] and torch.equal(p, params[k][1]) and p.device.type == "cpu"


def test_values_computed_from_the_example_alone_stay_real():
    """A check on the input ids (as transformers' padding warning does) works on a meta pass."""

    class PadCheck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 4), nn.Linear(4, 10)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            if 0 in ids[:, [-1, 0]]:  # reads values of the example only
                ids = ids.clamp(min=1)
            pos = torch.arange(ids.shape[1])  # a CPU tensor made in forward
            return self.head(self.emb(ids) + self.emb(pos))

    g = trace(PadCheck(), torch.randint(0, 10, (2, 5)))
    assert g.note is None and [la.name for la in g.heads] == ["head"]


def test_meta_model_with_a_real_example_traces_on_meta():
    with torch.device("meta"):
        model = ResNet()
    g = trace(model, torch.randn(2, 3, 8, 8))
    assert g.note is None and g.residual_depth == (3, 2)
    assert all(p.device.type == "meta" for p in model.parameters())


def test_forward_option_is_checked_and_a_misfit_example_still_explains():
    with pytest.raises(InitlabError, match="forward"):
        trace(nn.Linear(2, 2), torch.randn(1, 2), forward="fake")  # type: ignore[arg-type]
    with pytest.raises(InitlabError, match="example did not fit"):
        trace(nn.Linear(4, 2), torch.randn(3, 5))


@pytest.mark.hf
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_transformers_models_trace_on_meta_to_the_real_graph(name):
    pytest.importorskip("transformers")
    from tests import test_hf_models as hf

    torch.manual_seed(0)
    model = getattr(hf, name)()
    meta, real = trace(model, hf.IDS), trace(model, hf.IDS, forward="real")
    assert meta.note is None
    assert signature(meta) == signature(real)


def test_meta_calls_replay_the_layout_of_a_repeated_call():
    from initlab.graph import _MetaCalls

    calls = _MetaCalls()
    x = torch.empty(4, 6, 5, device="meta", requires_grad=True).transpose(1, 2)
    w = torch.empty(7, 6, device="meta")
    first = calls(torch.nn.functional.linear, (x, w), {})
    again = calls(torch.nn.functional.linear, (x, w), {})
    assert len(calls.seen) == 1 and again is not first
    assert (again.shape, again.stride(), again.dtype) == (first.shape, first.stride(), first.dtype)
    assert again.requires_grad and again.grad_fn is not None  # a non-leaf, like an op's output
    again.add_(1)  # in-place ops on it work as on the real output
    y = torch.empty(3, device="meta")
    assert calls(torch.Tensor.contiguous, (y,), {}) is y  # an op returning its operand
    assert calls(torch.Tensor.contiguous, (y,), {}) is y
    assert calls(torch.Tensor.add_, (y, 1.0), {}) is y and len(calls.seen) == 2  # in place: run


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_batch_norm_on_meta_gives_the_layout_of_the_real_meta_call(training, channels_last, grad):
    from initlab.graph import _MetaCalls

    x = torch.empty(2, 4, 5, 3, device="meta")
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    w, b = (torch.empty(4, device="meta", requires_grad=True) for _ in range(2))
    stats = [torch.empty(4, device="meta"), torch.empty(4, device="meta")]
    args = (x, *stats, w, b, training)
    with torch.set_grad_enabled(grad):
        ours = _MetaCalls()(torch.nn.functional.batch_norm, args, {})
        theirs = torch.nn.functional.batch_norm(*args)
    assert (ours.shape, ours.stride(), ours.dtype) == (theirs.shape, theirs.stride(), theirs.dtype)
    assert ours.requires_grad == theirs.requires_grad == grad
    assert ours.device.type == "meta"


def test_batch_norm_on_meta_runs_the_real_call_where_it_would_raise():
    from initlab.graph import _MetaCalls

    one = torch.empty(1, 4, device="meta")  # one value per channel in train mode
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _MetaCalls()(torch.nn.functional.batch_norm, (one, None, None), {"training": True})
    x = torch.empty(2, 4, device="meta")
    wrong = torch.empty(3, device="meta")  # not one per channel
    with pytest.raises(RuntimeError):
        _MetaCalls()(torch.nn.functional.batch_norm, (x, wrong, wrong), {})


@pytest.mark.parametrize(
    "n, x_shape, w_shape, options",
    [
        (2, (2, 4, 9, 7), (6, 4, 3, 3), {}),
        (2, (2, 4, 9, 7), (6, 2, 3, 1), {"stride": 2, "padding": (1, 0), "groups": 2}),
        (2, (1, 3, 8, 8), (5, 3, 3, 3), {"dilation": 2, "padding": "valid"}),
        (1, (2, 3, 10), (4, 3, 4), {"stride": 3, "padding": 2}),
        (3, (1, 2, 5, 6, 7), (3, 2, 2, 3, 1), {"stride": (1, 2, 3)}),
        (2, (2, 4, 5, 5), (0, 4, 1, 1), {}),  # a zero-width layer
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_on_meta_gives_the_layout_of_the_real_meta_call(n, x_shape, w_shape, options, bias):
    from initlab.graph import _MetaCalls

    conv = {1: torch.conv1d, 2: torch.conv2d, 3: torch.conv3d}[n]
    x = torch.empty(x_shape, device="meta")
    w = torch.empty(w_shape, device="meta", requires_grad=True)
    b = torch.empty(w_shape[0], device="meta") if bias else None
    calls = _MetaCalls()
    ours = calls(conv, (x, w, b), options)
    theirs = conv(x, w, b, **options)
    assert (ours.shape, ours.stride(), ours.dtype) == (theirs.shape, theirs.stride(), theirs.dtype)
    assert ours.requires_grad and theirs.requires_grad
    assert not calls.seen  # short-cut, never run nor recorded


def test_conv_on_meta_runs_the_real_call_where_it_would_raise_or_cannot_tell():
    from initlab.graph import _MetaCalls

    x = torch.empty(2, 4, 5, 5, device="meta")
    with pytest.raises(RuntimeError):  # 3 input channels expected, 4 given
        _MetaCalls()(torch.conv2d, (x, torch.empty(6, 3, 3, 3, device="meta")), {})
    with pytest.raises(RuntimeError):  # a kernel larger than the padded input
        _MetaCalls()(torch.conv2d, (x, torch.empty(6, 4, 7, 7, device="meta")), {})
    calls = _MetaCalls()
    same = calls(torch.conv2d, (x, torch.empty(6, 4, 3, 3, device="meta")), {"padding": "same"})
    assert same.shape == (2, 6, 5, 5) and len(calls.seen) == 1  # run by torch, then remembered
