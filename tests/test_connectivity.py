"""Fans by connectivity, for every layer type initlab knows, checked against torch and autograd."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from initlab.connectivity import Fans, fans, tensor_fans
from initlab.errors import InitlabError

# torch's shape guess, the oracle where initlab agrees with torch (and documents where it differs)
torch_fans = nn.init._calculate_fan_in_and_fan_out

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def connectivity(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """(max inputs any output depends on, max outputs any input reaches) of a linear layer.

    The layer's Jacobian, read off by pushing every basis vector through it (one batched forward).
    With stride 1 and an input at least twice the kernel, an interior output sees every tap and an
    interior input reaches every tap: these maxima are the fans by connectivity.
    """
    n = math.prod(in_shape)
    with torch.no_grad():
        jac = module(torch.eye(n).view(n, *in_shape)) - module(torch.zeros(1, *in_shape))
    nz = jac.reshape(n, -1) != 0  # (input, output)
    return int(nz.sum(0).max()), int(nz.sum(1).max())


# ---------------------------------------------------------------------------------------------
# the issue's examples


def test_issue_examples():
    assert fans(nn.Conv2d(6, 12, 3, groups=3)) == Fans(18, 36, 9, 1)
    f = fans(nn.LSTM(10, 20), "weight_ih_l0")
    assert (f.fan_in, f.fan_out, f.chunks) == (10, 20, 4)


# ---------------------------------------------------------------------------------------------
# dense layers


@settings(max_examples=30, deadline=None)
@given(i=st.integers(1, 64), o=st.integers(1, 64), bias=st.booleans())
def test_linear_fans_equal_torch(i, o, bias):
    lin = nn.Linear(i, o, bias=bias)
    assert fans(lin) == Fans(i, o)
    assert (fans(lin).fan_in, fans(lin).fan_out) == torch_fans(lin.weight)
    if bias:
        assert fans(lin, "bias") == fans(lin)  # a bias gets its weight's fans


def test_linear_connectivity():
    lin = nn.Linear(5, 7)
    assert connectivity(lin, (5,)) == (5, 7)


def test_bilinear_fans_equal_torch():
    bil = nn.Bilinear(3, 4, 5)  # weight (5, 3, 4): y_k = x1 W_k x2
    f = fans(bil)
    assert f == Fans(12, 20)
    assert (f.fan_in, f.fan_out) == torch_fans(bil.weight)
    assert fans(bil, "bias") == f


def test_embedding_fans_are_one_hot_times_matrix():
    emb = nn.Embedding(100, 16)
    assert fans(emb) == Fans(100, 16)
    # documented difference: torch reads the (N, D) weight as (fan_out, fan_in)
    assert torch_fans(emb.weight) == (16, 100)
    assert fans(nn.EmbeddingBag(50, 8)) == Fans(50, 8)


# ---------------------------------------------------------------------------------------------
# convolutions


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_fans(dim, groups):
    k = (3, 2, 1)[:dim]
    rf = math.prod(k)
    conv = CONV[dim](4, 6, k, groups=groups)
    f = fans(conv)
    assert f == Fans(4 // groups * rf, 6 // groups * rf, rf, 1)
    t_in, t_out = torch_fans(conv.weight)
    assert f.fan_in == t_in  # torch's fan_in is right ...
    assert f.fan_out * groups == t_out  # ... its fan_out forgets the groups
    assert fans(conv, "bias") == f


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_fans(dim, groups):
    k = (3, 2, 1)[:dim]
    rf = math.prod(k)
    conv = CONV_T[dim](4, 6, k, groups=groups)  # weight (4, 6 / groups, *k)
    f = fans(conv)
    assert f == Fans(4 // groups * rf, 6 // groups * rf, rf, 1)
    # documented difference: torch swaps them (and forgets groups on its fan_out)
    t_in, t_out = torch_fans(conv.weight)
    assert (t_in, t_out) == (f.fan_out, f.fan_in * groups)


def test_grouped_conv_transpose_example():
    conv = nn.ConvTranspose2d(6, 12, 3, groups=3)  # weight (6, 4, 3, 3)
    assert fans(conv) == Fans(18, 36, 9, 1)
    assert torch_fans(conv.weight) == (36, 54)


@pytest.mark.parametrize(
    "module",
    [nn.Conv1d(4, 6, 3, groups=2), nn.Conv2d(2, 4, 3), nn.Conv2d(6, 6, 2, groups=3),
     nn.Conv3d(2, 2, 2, groups=2), nn.ConvTranspose1d(4, 6, 3, groups=2),
     nn.ConvTranspose2d(2, 4, 3), nn.ConvTranspose2d(6, 3, 2, groups=3)],
    ids=repr,
)  # fmt: skip
def test_conv_fans_match_autograd_connectivity(module):
    spatial = module.weight.dim() - 2
    k = module.kernel_size[0]
    in_shape = (module.in_channels, *[2 * k + 1] * spatial)
    assert connectivity(module, in_shape) == (fans(module).fan_in, fans(module).fan_out)


def test_stride_dilation_and_padding_do_not_change_fans():
    base = fans(nn.Conv2d(4, 8, 3))
    assert fans(nn.Conv2d(4, 8, 3, stride=2, dilation=2, padding=5)) == base


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 3),
    transposed=st.booleans(),
    groups=st.integers(1, 4),
    a=st.integers(1, 5),
    b=st.integers(1, 5),
    k=st.integers(1, 4),
)
def test_conv_fans_properties(dim, transposed, groups, a, b, k):
    cin, cout = a * groups, b * groups
    conv = (CONV_T if transposed else CONV)[dim](cin, cout, k, groups=groups)
    f = fans(conv)
    taps = k**dim  # a group has a input and b output channels, each seen through every tap
    assert (f.fan_in, f.fan_out, f.receptive_field, f.chunks) == (a * taps, b * taps, taps, 1)
    # every weight is one edge: out units x fan_in = in units x fan_out = number of weights
    assert conv.weight.numel() == cout * f.fan_in == cin * f.fan_out
    t_in, t_out = torch_fans(conv.weight)
    if transposed:
        assert (t_in, t_out) == (f.fan_out, f.fan_in * groups)
    else:
        assert (t_in, t_out) == (f.fan_in, f.fan_out * groups)


class Conv1D(nn.Module):
    """transformers' GPT-2 ``Conv1D(nf, nx)`` (pytorch_utils.py): a Linear storing W as (in, out).

    Written out here so the suite does not import transformers (seconds) for one check.
    """

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


def test_hf_conv1d_is_a_transposed_linear():
    c_attn = Conv1D(48, 16)  # GPT-2's fused q, k, v: 16 -> 48, weight (16, 48)
    assert fans(c_attn) == Fans(16, 48)
    assert fans(c_attn, "bias") == Fans(16, 48)
    assert connectivity(c_attn, (16,)) == (16, 48)


# ---------------------------------------------------------------------------------------------
# attention


def test_multihead_attention_packed():
    mha = nn.MultiheadAttention(16, 4)
    assert fans(mha, "in_proj_weight") == Fans(16, 16, 1, 3)
    assert fans(mha, "in_proj_bias") == Fans(16, 16, 1, 3)
    assert fans(mha.out_proj) == Fans(16, 16)
    # torch reads the packed (3E, E) weight as one matrix
    assert torch_fans(mha.in_proj_weight) == (16, 48)


def test_multihead_attention_separate_kdim_vdim():
    mha = nn.MultiheadAttention(16, 4, kdim=10, vdim=6, add_bias_kv=True)
    assert fans(mha, "q_proj_weight") == Fans(16, 16)
    assert fans(mha, "k_proj_weight") == Fans(10, 16)
    assert fans(mha, "v_proj_weight") == Fans(6, 16)
    assert fans(mha, "in_proj_bias") == Fans(16, 16, 1, 3)
    assert fans(mha, "bias_k") == Fans(16, 16)
    assert fans(mha, "bias_v") == Fans(16, 16)
    with pytest.raises(InitlabError, match="no parameter 'in_proj_weight'"):
        fans(mha, "in_proj_weight")


# ---------------------------------------------------------------------------------------------
# recurrent layers

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


def expected_rnn_fans(
    kind: str, i: int, h: int, layers: int, bidirectional: bool, proj: int
) -> dict:
    """Fans of every parameter of an nn.RNN/LSTM/GRU, written from torch's documented shapes."""
    out = {}
    dirs = 2 if bidirectional else 1
    h_out = proj or h  # what the hidden state feeds forward (LSTM projections shrink it)
    for layer in range(layers):
        for suffix in ["", "_reverse"][:dirs]:
            fan_in = i if layer == 0 else h_out * dirs
            for kind_ in ("weight", "bias"):
                out[f"{kind_}_ih_l{layer}{suffix}"] = Fans(fan_in, h, 1, GATES[kind])
                out[f"{kind_}_hh_l{layer}{suffix}"] = Fans(h_out, h, 1, GATES[kind])
            if proj:
                out[f"weight_hr_l{layer}{suffix}"] = Fans(h, proj)
    return out


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, False), (2, True)])
def test_rnn_fans_per_gate(kind, layers, bidirectional):
    module = getattr(nn, kind)(5, 7, num_layers=layers, bidirectional=bidirectional)
    expected = expected_rnn_fans(kind, 5, 7, layers, bidirectional, 0)
    assert {n for n, _ in module.named_parameters()} == set(expected)
    for name, f in expected.items():
        assert fans(module, name) == f, name


@settings(max_examples=20, deadline=None)
@given(
    i=st.integers(1, 6),
    h=st.integers(2, 6),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    proj=st.integers(0, 5),
)
def test_lstm_fans_with_projection(i, h, layers, bidirectional, proj):
    proj = min(proj, h - 1)  # torch requires proj_size < hidden_size
    lstm = nn.LSTM(i, h, num_layers=layers, bidirectional=bidirectional, proj_size=proj)
    expected = expected_rnn_fans("LSTM", i, h, layers, bidirectional, proj)
    assert {n for n, _ in lstm.named_parameters()} == set(expected)
    for name, f in expected.items():
        assert fans(lstm, name) == f, name
        weight = getattr(lstm, name.replace("bias", "weight"))
        assert weight.shape[0] == f.fan_out * f.chunks and weight.shape[1] == f.fan_in


@pytest.mark.parametrize(("cell", "gates"), [(nn.RNNCell, 1), (nn.LSTMCell, 4), (nn.GRUCell, 3)])
def test_rnn_cells(cell, gates):
    module = cell(5, 7)
    assert fans(module, "weight_ih") == Fans(5, 7, 1, gates)
    assert fans(module, "weight_hh") == Fans(7, 7, 1, gates)
    assert fans(module, "bias_ih") == Fans(5, 7, 1, gates)
    assert fans(module, "bias_hh") == Fans(7, 7, 1, gates)


def test_lstm_fans_differ_from_torch_by_the_gate_stack():
    lstm = nn.LSTM(10, 20)
    assert torch_fans(lstm.weight_ih_l0) == (10, 80)
    assert fans(lstm, "weight_ih_l0").fan_out == 20


# ---------------------------------------------------------------------------------------------
# raw tensors, unknown modules, explicit chunks


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_raw_tensor_falls_back_to_torch_convention(shape):
    t = torch.empty(shape)
    f = fans(t)
    assert f == tensor_fans(t)
    assert (f.fan_in, f.fan_out) == torch_fans(t)
    assert f.fan_in > 0 and f.fan_out > 0


def test_tensor_fans_with_chunks():
    assert tensor_fans(torch.empty(12, 5), chunks=3) == Fans(5, 4, 1, 3)
    assert fans(torch.empty(12, 5), chunks=4) == Fans(5, 3, 1, 4)
    with pytest.raises(InitlabError, match="not divisible by 5 chunks"):
        tensor_fans(torch.empty(12, 5), chunks=5)


def test_unknown_module_uses_the_shape_convention():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = nn.Parameter(torch.empty(4, 3, 2))

    assert fans(Custom(), "kernel") == Fans(6, 8, 2, 1)


def test_explicit_chunks_for_a_fused_qkv_linear():
    qkv = nn.Linear(8, 24)
    assert fans(qkv, chunks=3) == Fans(8, 8, 1, 3)
    assert fans(qkv, "bias", chunks=3) == Fans(8, 8, 1, 3)
    with pytest.raises(InitlabError, match="do not split into 5 chunks"):
        fans(qkv, chunks=5)


def test_fans_value_object():
    f = Fans(100, 50)
    assert f.fan_avg == 75
    assert (f.mode("fan_in"), f.mode("fan_out"), f.mode("fan_avg")) == (100, 50, 75)
    with pytest.raises(InitlabError, match="Did you mean 'fan_avg'"):
        f.mode("fan_avrg")
    with pytest.raises(InitlabError, match="positive"):
        Fans(0, 3)
    with pytest.raises(InitlabError, match="positive"):
        Fans(3, 3, chunks=0)


# ---------------------------------------------------------------------------------------------
# errors


def test_module_without_the_named_parameter():
    with pytest.raises(
        InitlabError, match=r"Linear has no parameter 'kernel'.*\['weight', 'bias'\]"
    ):
        fans(nn.Linear(2, 2), "kernel")


def test_one_dimensional_tensors_have_no_fans():
    with pytest.raises(InitlabError, match="at least 2 dimensions"):
        fans(torch.empty(5))
    with pytest.raises(InitlabError, match="at least 2 dimensions"):
        fans(nn.LayerNorm(5))
    with pytest.raises(InitlabError, match="at least 2 dimensions"):
        fans(torch.tensor(1.0))


def test_rnn_without_the_parameter():
    with pytest.raises(InitlabError, match="weight_hr_l0"):
        fans(nn.LSTM(3, 4), "weight_hr_l0")
    with pytest.raises(InitlabError, match="no parameter 'weight_ih_l5'"):
        fans(nn.GRU(3, 4), "weight_ih_l5")


class _TwoProjections(nn.Module):
    """A (8 -> 24) Linear named ``name`` and one of the same shape named ``other``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.add_module(name, nn.Linear(8, 24))
        self.other = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.name)(x) + self.other(x)


@pytest.mark.parametrize("name", ["qkv", "to_qkv", "c_attn", "Wqkv", "query_key_value"])
def test_plan_reads_a_fused_qkv_linear_as_three_chunks(name):
    """The plan and the residual methods share one list of fused Q/K/V names."""
    from initlab.planning import plan

    entries = plan(_TwoProjections(name), "xavier_normal", example=torch.zeros(2, 8))
    assert (entries[f"{name}.weight"].chunks, entries[f"{name}.weight"].fan_out) == (3, 8)
    assert (entries["other.weight"].chunks, entries["other.weight"].fan_out) == (1, 24)
