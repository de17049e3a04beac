"""The tracer: order, activations, roles, residual branches, and that it leaves the model alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initlab.errors import InitlabError
from initlab.graph import trace
from tests.models import (
    Branchy,
    FunctionalMLP,
    ResNet,
    TiedLM,
    cnn_bn,
    encoder,
    module_mlp,  # fmt: skip
)


def acts(g):
    return {la.name: la.activation for la in g}


def test_functional_activations_are_seen():
    g = trace(FunctionalMLP(), torch.randn(4, 16))
    assert [la.name for la in g] == ["fc1", "fc2", "fc3", "out"]
    assert acts(g) == {"fc1": "tanh", "fc2": "gelu", "fc3": "relu", "out": None}
    assert [la.name for la in g.heads] == ["out"]


def test_module_activations_and_leaky_slope():
    g = trace(module_mlp(), torch.randn(4, 16))
    assert acts(g) == {"0": "tanh", "2": "silu", "4": "leaky_relu", "6": None}
    assert g.layers["4"].activation_param == pytest.approx(0.2)


def test_norm_is_transparent_and_inplace_relu():
    g = trace(cnn_bn(), torch.randn(2, 3, 8, 8))
    assert acts(g)["0"] == "relu" and acts(g)["3"] == "relu"
    assert g.layers["1"].kind == "norm" and "norm" in g.layers["1"].roles
    assert [la.name for la in g.heads] == ["8"]


def test_residual_branches_and_projection_shortcut():
    g = trace(ResNet(), torch.randn(2, 3, 8, 8))
    assert len(g.branches) == 3
    for i, b in enumerate(g.branches):
        assert b.layers == (f"blocks.{i}.conv1", f"blocks.{i}.conv2")
        assert b.m == 2 and b.last_weight == f"blocks.{i}.conv2"
    assert g.branches[2].skip_layers == ("blocks.2.shortcut",)
    assert g.residual_depth == (3, 2)
    assert "residual_out" in g.layers["blocks.0.conv2"].roles
    assert "residual_out" not in g.layers["blocks.2.shortcut"].roles
    assert [la.name for la in g.heads] == ["fc"]


def test_transformer_encoder_branches():
    g = trace(encoder(), torch.randn(2, 5, 16))
    ends = [b.last for b in g.branches]
    assert ends == [
        "layers.0.self_attn",
        "layers.0.linear2",
        "layers.1.self_attn",
        "layers.1.linear2",
    ]
    assert g.layers["layers.0.linear1"].activation == "relu"
    assert g.heads == []  # a bare encoder has no output head: its last layers end residual branches
    assert [b.m for b in g.branches] == [2, 2, 2, 2]  # MHA counts as in- and out-projection


def test_tied_weights_lstm_and_shared_report():
    g = trace(TiedLM(), torch.randint(0, 20, (2, 5)))
    assert g.shared == {"emb.weight": ["head.weight"]}
    assert g.layers["lstm"].kind == "weight"
    assert [la.name for la in g.heads] == ["head"]


def test_called_twice_unreached_and_control_flow():
    g = trace(Branchy(), torch.randn(3, 8))
    assert g.layers["shared"].calls == 2
    assert g.layers["shared"].activation == "sigmoid"  # the first call's
    assert g.layers["shared"].conflicts == ["sigmoid", "tanh"]
    assert g.unreached == ["never"]
    assert "never reached" in g.summary()


def test_trace_leaves_model_untouched():
    model = cnn_bn()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    example = torch.randn(4, 3, 8, 8)
    rng_before = torch.get_rng_state()
    hooks_before = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    trace(model, example)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats too
    assert torch.equal(rng_before, torch.get_rng_state())
    assert hooks_before == [
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    ]


def test_meta_model_traces():
    with torch.device("meta"):
        model = FunctionalMLP()
    g = trace(model, torch.randn(2, 16))
    assert acts(g)["fc2"] == "gelu"


def test_bad_example_says_what_to_do():
    with pytest.raises(InitlabError, match="example did not fit"):
        trace(nn.Linear(4, 2), torch.randn(3, 5))
    with pytest.raises(InitlabError, match=r"expected an nn\.Module"):
        trace("not a model", torch.randn(1))  # type: ignore[arg-type]


def test_dict_and_tuple_examples():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(5, 4)

        def forward(self, x, y=None):
            return self.a(x) + self.b(y)

    m = Two()
    assert len(list(trace(m, (torch.randn(2, 3), torch.randn(2, 5))))) == 2
    assert len(list(trace(m, {"x": torch.randn(2, 3), "y": torch.randn(2, 5)}))) == 2


class _QKNorm(nn.Module):
    """A query projection normalized per head (Qwen3, OLMo2), a value projection that is not, and
    a layer whose output a norm reads and a sum reads too."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.v, self.mix = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.q_norm, self.out_norm, self.lrn = (
            nn.LayerNorm(4),
            nn.LayerNorm(16),
            nn.LocalResponseNorm(2),
        )
        self.conv = nn.Conv1d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q_norm(self.q(x).view(*x.shape[:-1], 4, 4)).flatten(-2)
        m = self.mix(x)
        y = self.out_norm(m) + m + q * self.v(x)
        return self.lrn(self.conv(y.transpose(1, 2))).transpose(1, 2)


class _LinearBN(nn.Module):
    """LeViT's ``MLPLayerWithBN``: a BatchNorm over the tokens, reshaped like the linear output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn, self.out = (
            nn.Linear(16, 16, bias=False),
            nn.BatchNorm1d(16),
            nn.Linear(16, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return self.out(x + self.bn(h.flatten(0, 1)).reshape_as(h))


def test_normalized_layers_are_those_only_a_norm_reads():
    g = trace(cnn_bn(), torch.randn(2, 3, 8, 8))
    weights = {la.name: la.normalized for la in g if la.kind == "weight"}
    assert weights == {"0": True, "3": True, "8": False}  # convs before BN; the head
    g = trace(_QKNorm(), torch.randn(2, 3, 16))
    assert g.layers["q"].normalized  # through a view
    assert not g.layers["v"].normalized and not g.layers["mix"].normalized  # mix: also summed
    assert not g.layers["conv"].normalized  # LocalResponseNorm is not scale-invariant
    g = trace(_LinearBN(), torch.randn(2, 3, 16))  # reshape_as reads only the shape
    assert g.layers["lin"].normalized and not g.layers["out"].normalized
    g = trace(encoder(), torch.randn(2, 5, 16))  # post-norm: LN(x + f(x)) reads the sum
    assert not any(la.normalized for la in g if la.kind == "weight")
    g = trace(ResNet(), torch.randn(2, 3, 8, 8))
    assert not any(la.normalized for la in g)  # no norms
