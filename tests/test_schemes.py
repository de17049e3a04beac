"""Schemes: distributions (statistically), structure (exactly), agreement with torch.nn.init, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import initlab
from initlab.connectivity import Fans, fans, tensor_fans
from initlab.errors import InitlabError
from initlab.gains import gain
from initlab.schemes import (
    SCHEMES,
    constant_,
    delta_orthogonal_,
    dirac_,
    get_scheme,
    hadamard,
    identity_,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal_,
    ones_,
    orthogonal_,
    sparse_,
    trunc_normal_,
    truncated_normal_std,
    uniform_,
    variance_scaling,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zerO_,
    zero_matrix,
    zeros_,
)
from tests._stats import Reference, check_sample, check_std, ks_distance, ks_statistic, normal_cdf

TN2 = 0.8796256610342398  # std of N(0, 1) cut at +-2: the Keras/JAX correction


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# the registry


ISSUE_NAMES = [
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "trunc_normal",
    "variance_scaling",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "delta_orthogonal",
    "sparse",
    "identity",
    "dirac",
    "ZerO",
]


def test_registry_holds_every_scheme_the_issue_names():
    assert set(ISSUE_NAMES) <= set(SCHEMES)
    for name, scheme in SCHEMES.items():
        assert scheme.name == name
        assert scheme.formula.strip(), name


def test_deterministic_schemes_are_not_marked_random():
    deterministic = {"zeros", "ones", "constant", "identity", "dirac", "ZerO"}
    assert {n for n, s in SCHEMES.items() if not s.random} == deterministic


@pytest.mark.parametrize(
    ("alias", "name"),
    [("glorot_uniform", "xavier_uniform"), ("he_normal", "kaiming_normal"), ("zerO", "ZerO"),
     ("eye", "identity"), ("truncated_normal", "trunc_normal"), ("orthogonal", "orthogonal")],
)  # fmt: skip
def test_get_scheme_resolves_names_and_aliases(alias, name):
    assert get_scheme(alias) is SCHEMES[name]
    assert get_scheme(SCHEMES[name]) is SCHEMES[name]


@pytest.mark.parametrize("name", ["zero", "Zero", "ZERO"])
def test_ambiguous_zero_is_an_error_that_offers_zeros_and_zero_init(name):
    with pytest.raises(InitlabError, match=r"'zeros'.*'ZerO'"):
        get_scheme(name)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(InitlabError, match=r"'zeros'.*'ZerO'"):
        initlab.init(net, example=torch.zeros(2, 4), rules={"2.weight": name})
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_old_zero_names_point_to_the_new_ones():
    with pytest.raises(AttributeError, match=r"zerO_.*zeros_"):
        initlab.zero_  # noqa: B018
    with pytest.raises(AttributeError, match="zerO_init"):
        initlab.zero_init  # noqa: B018
    assert initlab.zerO_(torch.empty(3, 3)).equal(torch.eye(3))


def test_unknown_scheme_name_suggests_the_closest():
    with pytest.raises(InitlabError, match="Did you mean 'kaiming_normal'"):
        get_scheme("kaiming_norml")
    with pytest.raises(ValueError, match="Valid values"):  # InitlabError is a ValueError
        get_scheme("no_such_scheme_at_all")


# ---------------------------------------------------------------------------------------------
# every random elementwise scheme, against a reference written from the textbook formula

FI, FO, GAIN = 300, 700, 1.7
SHAPE = (400, 500)  # 200,000 draws: std tolerance 5 * sqrt(2 / 800k) = 0.8 % for a normal
F = Fans(FI, FO)


def _tn(std: float, cut: float = 2.0, mean: float = 0.0) -> Reference:
    """A normal widened so that, cut at +-cut widened stds, its std is ``std``."""
    s = std / truncated_normal_std(-cut, cut)
    return Reference("trunc_normal", mean, s, mean - cut * s, mean + cut * s)


def _u(bound: float) -> Reference:
    return Reference("uniform", 0.0, 0.0, -bound, bound)


def _n(std: float) -> Reference:
    return Reference("normal", 0.0, std)


# name -> (options, reference); fans F and gain GAIN for all
CASES: dict[str, list[tuple[dict, Reference]]] = {
    "normal": [({"mean": 0.5, "std": 2.0}, Reference("normal", 0.5, 2.0))],
    "uniform": [({"a": -1.0, "b": 3.0}, Reference("uniform", 0, 0, -1.0, 3.0))],
    "trunc_normal": [
        ({"mean": 0.1, "std": 0.5}, Reference("trunc_normal", 0.1, 0.5, 0.1 - 1.0, 0.1 + 1.0)),
        ({"std": 0.5, "a": -3.0, "b": 3.0, "exact_std": True}, _tn(0.5, 3.0)),
        ({"std": 0.02, "a": -1.0, "b": 2.0}, Reference("trunc_normal", 0, 0.02, -0.02, 0.04)),
    ],
    "variance_scaling": [
        ({"scale": 2.0, "mode": "fan_in", "distribution": "normal"}, _n(GAIN * math.sqrt(2 / FI))),
        ({"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
         _u(GAIN * math.sqrt(6 / FO))),
        ({"scale": 0.5, "mode": "fan_avg", "distribution": "truncated_normal"},
         _tn(GAIN * math.sqrt(0.5 / ((FI + FO) / 2)))),
    ],
    "xavier_uniform": [({}, _u(GAIN * math.sqrt(6 / (FI + FO))))],
    "xavier_normal": [({}, _n(GAIN * math.sqrt(2 / (FI + FO))))],
    "kaiming_uniform": [({}, _u(GAIN * math.sqrt(3 / FI)))],
    "kaiming_normal": [({}, _n(GAIN / math.sqrt(FI)))],
    "kaiming_normal_fan_out": [({}, _n(GAIN / math.sqrt(FO)))],
    "lecun_uniform": [({}, _u(math.sqrt(3 / FI)))],  # no gain: GAIN is ignored
    "lecun_normal": [({}, _tn(1 / math.sqrt(FI)))],
}  # fmt: skip
ELEMENTWISE_CASES = [(name, kw, ref) for name, cases in CASES.items() for kw, ref in cases]


def test_every_random_elementwise_scheme_has_a_statistical_case():
    random_elementwise = {n for n, s in SCHEMES.items() if s.random and s.distribution is not None}
    assert random_elementwise == set(CASES)


@pytest.mark.parametrize(("name", "kw", "ref"), ELEMENTWISE_CASES)
def test_elementwise_scheme_draws_its_distribution(name, kw, ref):
    scheme = SCHEMES[name]
    w = scheme.apply(torch.empty(SHAPE), fans=F, gain=GAIN, generator=gen(0), **kw)
    check_sample(w, ref)
    # the std the registry reports (used by the planner and the doctor) is the reference's
    assert scheme.expected_std(SHAPE, F, GAIN, **kw) == pytest.approx(ref.std, rel=1e-6)


@pytest.mark.parametrize(("name", "kw", "ref"), ELEMENTWISE_CASES)
def test_same_generator_seed_gives_the_same_tensor(name, kw, ref):
    scheme = SCHEMES[name]
    a = scheme.apply(torch.empty(20, 30), fans=F, gain=GAIN, generator=gen(7), **kw)
    b = scheme.apply(torch.empty(20, 30), fans=F, gain=GAIN, generator=gen(7), **kw)
    c = scheme.apply(torch.empty(20, 30), fans=F, gain=GAIN, generator=gen(8), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ["orthogonal", "delta_orthogonal", "sparse"])
def test_same_seed_same_tensor_for_structured_random_schemes(name):
    kw = {"sparsity": 0.5} if name == "sparse" else {}
    shape = (12, 6) if name == "sparse" else (12, 6, 3)
    a = SCHEMES[name].apply(torch.empty(shape), generator=gen(3), **kw)
    b = SCHEMES[name].apply(torch.empty(shape), generator=gen(3), **kw)
    c = SCHEMES[name].apply(torch.empty(shape), generator=gen(4), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_schemes_read_and_change_no_global_rng_state():
    state = torch.get_rng_state()
    for name, scheme in SCHEMES.items():
        kw = {"sparsity": 0.5} if name == "sparse" else {}
        shape = (8, 4) if name in ("sparse", "identity") else (8, 4, 3)
        tensor = torch.empty(shape)
        scheme.apply(tensor, fans=tensor_fans(tensor), generator=gen(0), **kw)
    assert torch.equal(torch.get_rng_state(), state)


def test_elementwise_apply_without_fans_falls_back_to_the_shape_convention():
    w = SCHEMES["kaiming_normal"].apply(torch.empty(200, 300), generator=gen(0))
    check_std(w, 1 / math.sqrt(300))


def test_constant_schemes():
    assert torch.equal(zeros_(torch.ones(3, 2)), torch.zeros(3, 2))
    assert torch.equal(ones_(torch.zeros(4)), torch.ones(4))
    assert torch.equal(constant_(torch.zeros(2, 2), 0.25), torch.full((2, 2), 0.25))
    lin = nn.Linear(3, 2)
    zeros_(lin, name="bias")
    assert torch.equal(lin.bias, torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# the torch.nn.init-style functions: fans from the module, agreement with torch where they agree


def test_public_functions_write_in_place_and_return_the_tensor():
    lin = nn.Linear(30, 20)
    out = kaiming_normal_(lin, nonlinearity="relu", generator=gen(0))
    assert out is lin.weight
    t = torch.empty(5, 4)
    assert xavier_uniform_(t, generator=gen(0)) is t


@pytest.mark.parametrize(
    ("ours", "theirs", "kw"),
    [
        (kaiming_normal_, nn.init.kaiming_normal_, {"nonlinearity": "relu"}),
        (kaiming_normal_, nn.init.kaiming_normal_, {"a": 0.2, "mode": "fan_out"}),
        (kaiming_uniform_, nn.init.kaiming_uniform_, {"a": math.sqrt(5)}),  # torch's Linear default
        (xavier_uniform_, nn.init.xavier_uniform_, {"gain": 5 / 3}),
        (xavier_normal_, nn.init.xavier_normal_, {"gain": 2.0}),
        (orthogonal_, nn.init.orthogonal_, {"gain": 1.5}),
        (normal_, nn.init.normal_, {"mean": 1.0, "std": 0.3}),
        (uniform_, nn.init.uniform_, {"a": -2.0, "b": 1.0}),
    ],
)
def test_matches_torch_where_fans_agree(ours, theirs, kw):
    """On a Linear, fans agree with torch's, so the same generator seed draws the same tensor."""
    a, b = nn.Linear(40, 24), torch.empty(24, 40)
    ours(a, generator=gen(11), **kw)
    theirs(b, generator=gen(11), **kw)
    torch.testing.assert_close(a.weight.detach(), b, rtol=1e-5, atol=1e-7)


def test_kaiming_on_grouped_conv_uses_connectivity_fans():
    conv = nn.Conv2d(64, 128, 3, groups=4)  # fan_in 16*9 = 144, fan_out 32*9 = 288
    kaiming_normal_(conv, nonlinearity="relu", generator=gen(0))
    check_std(conv.weight, math.sqrt(2 / 144))  # fan_in: the same as torch
    kaiming_normal_(conv, mode="fan_out", nonlinearity="relu", generator=gen(0))
    check_std(conv.weight, math.sqrt(2 / 288))  # torch would use 128*9 = 1152


def test_kaiming_on_grouped_conv_transpose_differs_from_torch_as_documented():
    conv = nn.ConvTranspose2d(64, 128, 3, groups=4)  # weight (64, 32, 3, 3)
    kaiming_normal_(conv, generator=gen(0))  # leaky_relu(0) gain sqrt(2); fan_in = 16 * 9
    check_std(conv.weight, math.sqrt(2 / 144))
    torch_fan_in = conv.weight.shape[1] * 9  # torch reads size(1) = out/groups: 288
    assert fans(conv).fan_in != torch_fan_in


def test_lecun_normal_is_truncated_with_exact_std():
    lin = nn.Linear(400, 500)
    lecun_normal_(lin, generator=gen(0))
    check_sample(lin.weight, _tn(1 / math.sqrt(400)))
    lecun_uniform_(lin, generator=gen(0))
    check_sample(lin.weight, _u(math.sqrt(3 / 400)))


def test_variance_scaling_is_the_one_family():
    """Xavier, Kaiming and LeCun are variance_scaling with parameters: the same draws."""
    lin = nn.Linear(50, 30)
    pairs = [
        (lambda t: xavier_uniform_(t, 2.0, generator=gen(1)),
         lambda t: variance_scaling_(t, 4.0, "fan_avg", "uniform", generator=gen(1))),
        (lambda t: kaiming_normal_(t, nonlinearity="tanh", generator=gen(1)),
         lambda t: variance_scaling_(t, (5 / 3) ** 2, "fan_in", "normal", generator=gen(1))),
        (lambda t: lecun_normal_(t, generator=gen(1)),
         lambda t: variance_scaling_(t, 1.0, "fan_in", "truncated_normal", generator=gen(1))),
    ]  # fmt: skip
    for one, other in pairs:
        a = one(lin).detach().clone()
        b = other(lin).detach().clone()
        assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 3),
    groups=st.integers(1, 4),
    cin=st.integers(1, 6),
    cout=st.integers(1, 6),
    k=st.integers(1, 4),
    transposed=st.booleans(),
    act=st.sampled_from(["relu", "tanh", "gelu", "linear", "selu"]),
    mode=st.sampled_from(["fan_in", "fan_out"]),
)
def test_kaiming_std_matches_formula_on_random_convs(
    dim, groups, cin, cout, k, transposed, act, mode
):
    cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d][dim - 1 + 3 * transposed]  # fmt: skip
    conv = cls(cin * groups, cout * groups, k, groups=groups)
    f = fans(conv)
    n = f.fan_in if mode == "fan_in" else f.fan_out
    sigma = gain(act) / math.sqrt(n)
    assert SCHEMES["variance_scaling"].expected_std(
        tuple(conv.weight.shape), f, 1.0, scale=gain(act) ** 2, mode=mode, distribution="normal"
    ) == pytest.approx(sigma)
    kaiming_normal_(conv, mode=mode, nonlinearity=act, generator=gen(0))
    check_std(conv.weight, sigma)


def test_trunc_normal_bounds_are_in_stds_unlike_torch():
    w = trunc_normal_(torch.empty(100_000), std=0.02, generator=gen(0))
    assert float(w.abs().max()) <= 0.04
    check_sample(w, Reference("trunc_normal", 0.0, 0.02, -0.04, 0.04))
    # torch's a, b are absolute: at std 0.02 its +-2 cuts nothing (a plain normal)
    t = nn.init.trunc_normal_(torch.empty(100_000), std=0.02, generator=gen(0))
    assert float(t.abs().max()) > 0.04


def test_trunc_normal_exact_std_applies_the_keras_correction():
    assert truncated_normal_std(-2, 2) == pytest.approx(TN2, abs=1e-12)
    assert truncated_normal_std(-3, 3) == pytest.approx(0.9866, abs=1e-4)
    w = trunc_normal_(torch.empty(200_000), std=0.02, exact_std=True, generator=gen(0))
    check_sample(w, _tn(0.02))
    assert float(w.abs().max()) <= 0.04 / TN2 * (1 + 1e-6)


def test_variance_scaling_distribution_objects():
    d = variance_scaling(Fans(100, 50), 2.0, "fan_avg", "uniform")
    assert d.kind == "uniform"
    assert d.high == pytest.approx(math.sqrt(3 * 2 / 75))
    assert d.std == pytest.approx(math.sqrt(2 / 75))
    assert "U(" in d.describe()


# ---------------------------------------------------------------------------------------------
# orthogonal and delta-orthogonal


def assert_semi_orthogonal(w: torch.Tensor, g: float = 1.0, atol: float = 1e-5) -> None:
    m = w.detach().reshape(w.shape[0], -1).to(torch.float64)
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    torch.testing.assert_close(gram, g * g * torch.eye(min(rows, cols), dtype=torch.float64),
                               atol=atol * max(1.0, g * g), rtol=0)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(1, 40), cols=st.integers(1, 40), g=st.floats(0.1, 3.0), seed=st.integers(0, 9)
)
def test_orthogonal_is_orthogonal_for_random_shapes(rows, cols, g, seed):
    w = orthogonal_(torch.empty(rows, cols), g, generator=gen(seed))
    assert_semi_orthogonal(w, g)
    # its RMS is exactly what the registry reports
    rms = float(w.double().pow(2).mean().sqrt())
    assert rms == pytest.approx(
        SCHEMES["orthogonal"].expected_std((rows, cols), Fans(cols, rows), g)
    )


def test_orthogonal_entries_are_haar_distributed():
    """sqrt(n) times an entry of a Haar orthogonal n x n matrix is N(0, 1) up to O(1/n)."""
    n = 256
    w = orthogonal_(torch.empty(n, n), generator=gen(0))
    check_sample(w * math.sqrt(n), Reference("normal", 0.0, 1.0))


@pytest.mark.parametrize(
    ("module", "name", "chunks"),
    [(nn.LSTM(6, 8), "weight_hh_l0", 4), (nn.LSTM(6, 8), "weight_ih_l0", 4),
     (nn.GRU(8, 8), "weight_hh_l0", 3), (nn.MultiheadAttention(16, 4), "in_proj_weight", 3)],
)  # fmt: skip
def test_orthogonal_per_chunk(module, name, chunks):
    w = orthogonal_(module, 1.3, name=name, generator=gen(0))
    assert w is getattr(module, name)
    parts = w.detach().chunk(chunks)
    for part in parts:
        assert_semi_orthogonal(part, 1.3)
    if w.shape[0] // chunks == w.shape[1]:  # square chunks: the stack is not one orthogonal matrix
        torch.testing.assert_close(w.detach().T @ w.detach(), chunks * 1.69 * torch.eye(w.shape[1]),
                                   atol=1e-4, rtol=0)  # fmt: skip


def test_orthogonal_per_group_on_grouped_conv():
    """Each group of a grouped conv is its own linear map, so each is orthogonal (an isometry)."""
    conv = nn.Conv2d(32, 16, 1, groups=2)  # weight (16, 16, 1, 1): two (8, 16) maps
    w = orthogonal_(conv, generator=gen(0)).detach()
    for block in w.chunk(2):
        assert_semi_orthogonal(block)
    assert not torch.allclose(w.flatten(1) @ w.flatten(1).T, torch.eye(16), atol=1e-3)
    depthwise = nn.Conv1d(8, 8, 3, groups=8)  # eight (1, 3) maps: each a unit vector
    dw = orthogonal_(depthwise, generator=gen(0)).detach()
    torch.testing.assert_close(dw.flatten(1).norm(dim=1), torch.ones(8))
    rms = float(w.double().pow(2).mean().sqrt())
    assert rms == pytest.approx(SCHEMES["orthogonal"].expected_std(tuple(w.shape), fans(conv), 1.0))


def test_orthogonal_bf16_runs_qr_in_fp32():
    w = orthogonal_(torch.empty(64, 32, dtype=torch.bfloat16), generator=gen(0))
    assert w.dtype == torch.bfloat16
    ref = orthogonal_(torch.empty(64, 32), generator=gen(0))
    assert torch.equal(w, ref.to(torch.bfloat16))
    assert_semi_orthogonal(w.float(), atol=3e-2)  # bf16 keeps 8 bits of mantissa
    lin = nn.Linear(16, 48).to(torch.bfloat16)
    orthogonal_(lin, generator=gen(0))
    assert_semi_orthogonal(lin.weight.float(), atol=3e-2)


@pytest.mark.parametrize(
    ("cls", "k"), [(nn.Conv1d, 3), (nn.Conv2d, 3), (nn.Conv3d, 3), (nn.Conv2d, 5), (nn.Conv2d, 4)]
)
def test_delta_orthogonal_centre_tap(cls, k):
    conv = cls(6, 10, k)
    w = delta_orthogonal_(conv, 2.0, generator=gen(0)).detach()
    centre = (k - 1) // 2
    index = (slice(None), slice(None), *([centre] * (w.dim() - 2)))
    assert_semi_orthogonal(w[index], 2.0)
    rest = w.clone()
    rest[index] = 0
    assert torch.count_nonzero(rest) == 0
    rms = float(w.double().pow(2).mean().sqrt())
    assert rms == pytest.approx(
        SCHEMES["delta_orthogonal"].expected_std(tuple(w.shape), fans(conv), 2.0)
    )


def test_delta_orthogonal_conv_preserves_norms():
    """With c_out >= c_in, the conv maps each position's channel vector by an isometry."""
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    delta_orthogonal_(conv, generator=gen(0))
    x = torch.randn(2, 8, 5, 5, generator=gen(1))
    torch.testing.assert_close(conv(x).detach().norm(dim=1), x.norm(dim=1), atol=1e-5, rtol=1e-5)


def test_delta_orthogonal_per_group():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    delta_orthogonal_(conv, generator=gen(0))
    x = torch.randn(2, 8, 5, 5, generator=gen(1))
    y = conv(x).detach()
    for group in range(2):
        sl = slice(4 * group, 4 * group + 4)
        torch.testing.assert_close(y[:, sl].norm(dim=1), x[:, sl].norm(dim=1), atol=1e-5, rtol=1e-5)


def test_delta_orthogonal_on_depthwise_conv_keeps_the_signal():
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    delta_orthogonal_(conv, generator=gen(0))
    assert torch.equal(conv.weight.detach()[:, 0, 1, 1].abs(), torch.ones(16))


# ---------------------------------------------------------------------------------------------
# sparse


def test_sparse_zeros_a_fraction_of_each_column():
    rows, cols, sparsity = 1000, 300, 0.3
    w = sparse_(torch.empty(rows, cols), sparsity, std=0.05, generator=gen(0))
    zeros_per_column = (w == 0).sum(0)
    assert torch.equal(zeros_per_column, torch.full((cols,), math.ceil(sparsity * rows)))
    check_sample(w[w != 0], Reference("normal", 0.0, 0.05))
    # the zero pattern is random: not the same rows in every column
    assert not torch.equal((w[:, 0] == 0), (w[:, 1] == 0))


def test_sparse_on_a_module_and_same_seed_same_tensor():
    lin = nn.Linear(20, 10)
    a = sparse_(lin, 0.5, generator=gen(5)).detach().clone()
    b = sparse_(lin, 0.5, generator=gen(5)).detach().clone()
    assert torch.equal(a, b)
    assert torch.equal((a == 0).sum(0), torch.full((20,), 5))


# ---------------------------------------------------------------------------------------------
# identity, dirac, ZerO: exact


def test_identity_partial_identity():
    assert torch.equal(identity_(torch.empty(2, 3)), torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
    assert torch.equal(
        identity_(torch.empty(3, 2), 0.5), 0.5 * torch.tensor([[1.0, 0], [0, 1], [0, 0]])
    )
    lin = nn.Linear(4, 6)
    identity_(lin)
    torch.testing.assert_close((lin(torch.eye(4)) - lin.bias).detach(), torch.eye(6, 4).T)


def test_identity_per_chunk_on_lstm_gates():
    lstm = nn.LSTM(5, 5)
    w = identity_(lstm, name="weight_hh_l0").detach()
    for gate in w.chunk(4):
        assert torch.equal(gate, torch.eye(5))


def test_identity_of_a_conv_is_dirac():
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    identity_(conv)
    x = torch.randn(1, 4, 6, 6, generator=gen(0))
    torch.testing.assert_close(conv(x).detach(), x)


@pytest.mark.parametrize("cls", [nn.Conv1d, nn.Conv2d, nn.Conv3d])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_dirac_conv_returns_its_input(cls, groups):
    conv = cls(8, 8, 3, padding=1, groups=groups, bias=False)
    dirac_(conv)
    spatial = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[cls]
    x = torch.randn(2, 8, *[5] * spatial, generator=gen(0))
    torch.testing.assert_close(conv(x).detach(), x)
    dirac_(conv, 1.5)
    torch.testing.assert_close(conv(x).detach(), 1.5 * x)


def test_dirac_with_more_outputs_copies_the_inputs_per_group():
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)  # 2 in, 4 out per group
    dirac_(conv)
    x = torch.randn(1, 4, 5, 5, generator=gen(0))
    y = conv(x).detach()
    torch.testing.assert_close(y[:, 0:2], x[:, 0:2])
    torch.testing.assert_close(y[:, 4:6], x[:, 2:4])
    assert torch.count_nonzero(y[:, 2:4]) == 0 and torch.count_nonzero(y[:, 6:8]) == 0


def test_dirac_groups_inferred_from_fans_in_the_registry():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
    with torch.no_grad():
        SCHEMES["dirac"].apply(conv.weight, fans=fans(conv))
    x = torch.randn(1, 8, 4, 4, generator=gen(0))
    torch.testing.assert_close(conv(x).detach(), x)


def test_hadamard_matrices():
    assert torch.equal(hadamard(1), torch.ones(1, 1))
    assert torch.equal(
        hadamard(4),
        torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]),
    )
    for n in (2, 8, 32):
        h = hadamard(n)
        assert torch.equal(h @ h.T, n * torch.eye(n))
    with pytest.raises(InitlabError, match="power of two"):
        hadamard(12)


def test_zero_matrices_are_exact():
    assert torch.equal(zero_matrix(4, 4), torch.eye(4))
    assert torch.equal(zero_matrix(2, 5), torch.eye(2, 5))  # fewer outputs: partial identity
    assert torch.equal(zero_matrix(3, 2), torch.tensor([[1.0, 1], [1, -1], [1, 1]]) / 2)
    # more outputs, power of two: H_8[:, :4] / sqrt(8), an isometry (orthonormal columns)
    w = zero_matrix(8, 4)
    assert torch.equal(w, hadamard(8)[:, :4] / math.sqrt(8))
    torch.testing.assert_close(w.T @ w, torch.eye(4))
    # not a power of two: p = 2^ceil(log2 5) = 8
    assert torch.equal(zero_matrix(5, 3), hadamard(8)[:5, :3] / math.sqrt(8))


def test_zero_on_modules():
    lin = nn.Linear(3, 5)
    zerO_(lin)
    assert torch.equal(lin.weight.detach(), zero_matrix(5, 3))
    conv = nn.Conv2d(4, 8, 3)
    w = zerO_(conv).detach()
    assert torch.equal(w[:, :, 1, 1], zero_matrix(8, 4))
    w[:, :, 1, 1] = 0
    assert torch.count_nonzero(w) == 0
    conv4 = nn.Conv1d(2, 2, 4)  # even kernel: the official code's k // 2
    assert torch.equal(zerO_(conv4).detach()[:, :, 2], torch.eye(2))
    lstm = nn.LSTM(3, 6)
    for gate in zerO_(lstm, name="weight_ih_l0").detach().chunk(4):
        assert torch.equal(gate, zero_matrix(6, 3))


def test_zero_is_deterministic_and_ignores_generators():
    a = SCHEMES["ZerO"].apply(torch.empty(7, 3), generator=gen(0))
    b = SCHEMES["ZerO"].apply(torch.empty(7, 3), generator=gen(1))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# errors


def test_fan_based_scheme_on_a_1d_tensor():
    with pytest.raises(InitlabError, match="at least 2 dimensions"):
        kaiming_normal_(torch.empty(5))
    with pytest.raises(InitlabError, match="at least 2 dimensions"):
        xavier_uniform_(nn.LayerNorm(8))


def test_sparse_needs_a_matrix():
    with pytest.raises(InitlabError, match="2-D"):
        sparse_(torch.empty(4, 3, 3), 0.5)
    with pytest.raises(InitlabError, match="2-D"):
        sparse_(nn.Conv2d(2, 2, 3), 0.5)
    with pytest.raises(InitlabError, match="sparsity"):
        sparse_(torch.empty(4, 3), 1.0)


def test_module_without_the_named_parameter():
    with pytest.raises(InitlabError, match=r"no parameter 'weigth'.*'weight'"):
        kaiming_normal_(nn.Linear(2, 3), name="weigth")
    with pytest.raises(InitlabError, match="no parameter"):
        orthogonal_(nn.ReLU())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: kaiming_normal_(torch.empty(3, 3), mode="fan_inn"), "Did you mean 'fan_in'"),
        (lambda: variance_scaling_(torch.empty(3, 3), 1.0, "fan_avg", "gaussian"), "distribution"),
        (lambda: variance_scaling_(torch.empty(3, 3), 0.0), "scale > 0"),
        (lambda: kaiming_uniform_(torch.empty(3, 3), nonlinearity="rleu"), "'relu'"),
        (lambda: uniform_(torch.empty(3), 1.0, 0.0), "a < b"),
        (lambda: trunc_normal_(torch.empty(3), std=0.0), "std > 0"),
        (lambda: trunc_normal_(torch.empty(3), a=2.0, b=-2.0), "a < b"),
        (lambda: dirac_(torch.empty(4, 2, 3), groups=3), "groups"),
        (lambda: dirac_(torch.empty(4, 4)), "identity"),
        (lambda: delta_orthogonal_(torch.empty(4, 4)), "orthogonal"),
        (lambda: orthogonal_(torch.empty(4)), ">= 2 dims"),
        (lambda: identity_(torch.empty(4)), ">= 2 dims"),
        (lambda: zerO_(torch.empty(4)), ">= 2 dims"),
        (lambda: xavier_uniform_([1.0, 2.0]), "tensor or an nn.Module"),
        (lambda: SCHEMES["xavier_uniform"].apply(torch.empty(2, 2), fans=Fans(2, 2), foo=1),
         "unexpected options"),
    ],
)  # fmt: skip
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(InitlabError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# the test helpers themselves


def test_ks_statistic_matches_scipy():
    pytest.importorskip("scipy")
    x = torch.randn(5000, generator=gen(0))
    assert ks_statistic(x, normal_cdf) == pytest.approx(ks_distance(x, normal_cdf), abs=1e-9)
    # and it rejects a wrong distribution
    assert ks_statistic(x * 1.1, normal_cdf) > 1.63 / math.sqrt(5000)
