"""PyTorch's own ``test/nn/test_init.py`` cases, mapped onto initlab's functions.

Each case of torch's suite is ported with ``torch.nn.init.X`` replaced by initlab's function of the
same meaning. Arguments are translated only where initlab documents a difference (README, "How
initlab differs from torch.nn.init"): ``trunc_normal_`` takes its bounds in units of std, and
``identity_`` on a 3- to 5-D kernel writes a Dirac kernel where ``eye_`` raises. Beyond torch's
suite: zero-element tensors (a warned no-op, module or tensor), meta tensors (a silent no-op for
every in-place scheme) and the precision of the structured schemes.

Random sizes and parameters come from a fixed ``random.Random``, draws from fixed generators; the
Kolmogorov-Smirnov tests keep torch's threshold (p > 1e-4). torch's ``test_deprecation`` (the
old names without an underscore) has no counterpart: initlab has no such aliases.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab import (
    constant_,
    delta_orthogonal_,
    dirac_,
    gain,
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
    uniform_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)

stats = pytest.importorskip("scipy.stats")
P_MIN = 1e-4  # torch's threshold for its KS tests


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_tensor(rng: random.Random, dims: int, lo: int, hi: int, **kw) -> torch.Tensor:
    return torch.zeros([rng.randint(lo, hi) for _ in range(dims)], **kw)


KS_MAX = 200_000  # i.i.d. draws: the KS test on the first 200k is as valid and keeps it fast


def _sample(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)[:KS_MAX].double()


def is_normal(t: torch.Tensor, mean: float, std: float) -> bool:
    return stats.kstest(_sample(t).numpy(), "norm", args=(mean, std))[1] > P_MIN


def is_uniform(t: torch.Tensor, a: float, b: float) -> bool:
    return stats.kstest(_sample(t).numpy(), "uniform", args=(a, b - a))[1] > P_MIN


def is_trunc_normal(t: torch.Tensor, mean: float, std: float, a: float, b: float) -> bool:
    """``a, b`` absolute, as in torch's helper."""
    z = ((_sample(t) - mean) / std).numpy()
    return stats.kstest(z, "truncnorm", args=((a - mean) / std, (b - mean) / std))[1] > P_MIN


def fans_of(t: torch.Tensor) -> tuple[int, int]:
    rf = t[0, 0].numel() if t.dim() > 2 else 1
    return t.size(1) * rf, t.size(0) * rf


# ---------------------------------------------------------------------------------------------
# gains


def test_gain_linear_family_is_one():
    for fn in ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d"]:  # fmt: skip
        assert gain(fn) == 1


def test_gain_nonlinear_values():
    assert gain("sigmoid") == 1
    assert gain("tanh") == 1.6666666666666667
    assert gain("relu") == 1.4142135623730951
    assert gain("leaky_relu") == 1.4141428569978354
    assert gain("selu") == 0.75


@pytest.mark.parametrize(
    ("param", "expected"),
    [(None, 1.4141428569978354), (0, 1.4142135623730951), (0.01, 1.4141428569978354),
     (10, 0.14071950894605836)],
)  # fmt: skip
def test_gain_leaky_relu(param, expected):
    assert gain("leaky_relu", param) == expected


@pytest.mark.parametrize("param", [True, False, [1], {"a": "b"}, "0.2", torch.tensor(0.2)])
def test_gain_leaky_relu_only_accepts_numbers(param):
    with pytest.raises(ValueError, match="negative_slope"):
        gain("leaky_relu", param)
    with pytest.raises(ValueError, match="negative_slope"):
        gain(nn.LeakyReLU(), param)


@pytest.mark.parametrize("fn", [kaiming_normal_, kaiming_uniform_])
@pytest.mark.parametrize("a", [True, [0.1]])
def test_kaiming_rejects_a_slope_that_is_not_a_number(fn, a):
    w = torch.zeros(200, 300)
    with pytest.raises(ValueError, match="negative_slope"):
        fn(w, a=a)
    assert not w.any()  # nothing written


@pytest.mark.parametrize("name", ["xy", "abcde", "qwertyuiopasdfghjklzxcvbn"])
def test_gain_only_accepts_valid_nonlinearities(name):
    with pytest.raises(ValueError, match="nonlinearity"):
        gain(name)


# ---------------------------------------------------------------------------------------------
# elementwise distributions


@pytest.mark.parametrize("dims", [1, 2, 4])
def test_uniform(dims):
    rng = random.Random(123 + dims)
    t = rand_tensor(rng, dims, 30, 50)
    a = rng.uniform(-3, 3)
    b = a + rng.uniform(1, 5)
    uniform_(t, a=a, b=b, generator=gen(dims))
    assert is_uniform(t, a, b)


@pytest.mark.parametrize("dims", [1, 2, 4])
def test_normal(dims):
    rng = random.Random(321 + dims)
    t = rand_tensor(rng, dims, 30, 50)
    mean, std = rng.uniform(-3, 3), rng.uniform(1, 5)
    normal_(t, mean=mean, std=std, generator=gen(dims))
    assert is_normal(t, mean, std)


def test_trunc_normal_generator_matches_the_global_stream():
    t = trunc_normal_(torch.empty(5), a=0.0, b=1.0, generator=gen(42))
    torch.manual_seed(42)
    ref = trunc_normal_(torch.empty(5), a=0.0, b=1.0)
    torch.testing.assert_close(t, ref, rtol=0, atol=0)
    assert bool(((t >= 0) & (t <= 1)).all())


@pytest.mark.parametrize("dims", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_normal_all_dtypes(dims, dtype):
    rng = random.Random(7 * dims + (dtype == torch.float64))
    t = rand_tensor(rng, dims, 30, 50, dtype=dtype)
    mean, std = rng.uniform(-3, 3), rng.uniform(0.01, 1)
    a, b = rng.uniform(mean - 2 * std, mean), rng.uniform(mean, mean + 2 * std)
    # initlab's bounds are in units of std (documented difference): translate torch's absolute ones
    trunc_normal_(t, mean, std, (a - mean) / std, (b - mean) / std, generator=gen(dims))
    assert t.dtype == dtype
    lo, hi = torch.tensor(a, dtype=dtype).item(), torch.tensor(b, dtype=dtype).item()
    assert t.min().item() >= lo
    assert t.max().item() <= hi
    assert is_trunc_normal(t.float(), mean, std, a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_trunc_normal_low_precision(dtype):
    t = trunc_normal_(torch.empty(10_000, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=gen(1))
    assert t.min().item() >= -2.0
    assert t.max().item() <= 2.0
    assert is_trunc_normal(t.float(), 0.0, 1.0, -2.0, 2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_trunc_normal_narrow_interval(dtype):
    t = trunc_normal_(torch.empty(10_000, dtype=dtype), 0.0, 1.0, 2.0, 3.0, generator=gen(2))
    assert t.min().item() >= 2.0
    assert t.max().item() <= 3.0
    assert is_trunc_normal(t.float(), 0.0, 1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("dtype", "min_unique"),
    [(torch.float32, 5000), (torch.float64, 5000), (torch.float16, 3000), (torch.bfloat16, 1000)],
)
def test_trunc_normal_unique_values(dtype, min_unique):
    t = trunc_normal_(torch.empty(10_000, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=gen(3))
    assert t.min().item() >= -2.0
    assert t.max().item() <= 2.0
    assert t.unique().numel() > min_unique
    assert torch.isfinite(t).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_trunc_normal_no_boundary_values_small_std(dtype):
    # torch's a=-2, b=2 (absolute) at std 0.1 are -20 and 20 in units of std
    t = trunc_normal_(torch.empty(10_000, dtype=dtype), 0.0, 0.1, -20.0, 20.0, generator=gen(4))
    assert int((t == -2.0).sum()) == 0
    assert int((t == 2.0).sum()) == 0


@pytest.mark.parametrize("dims", [1, 2, 4])
def test_constant(dims):
    rng = random.Random(dims)
    t = rand_tensor(rng, dims, 1, 5)
    val = rng.uniform(1, 10)
    constant_(t, val)
    assert torch.equal(t, torch.full_like(t, val))


@pytest.mark.parametrize(("fn", "val"), [(ones_, 1.0), (zeros_, 0.0)])
@pytest.mark.parametrize("dims", [1, 2, 4])
def test_ones_and_zeros(fn, val, dims):
    t = rand_tensor(random.Random(dims), dims, 1, 5) + 0.5
    fn(t)
    assert torch.equal(t, torch.full_like(t, val))


# ---------------------------------------------------------------------------------------------
# eye / dirac


def test_eye():
    t = rand_tensor(random.Random(5), 2, 1, 5)
    identity_(t)
    assert torch.equal(t, torch.eye(*t.shape))


def test_eye_only_works_on_2d_inputs_and_identity_writes_dirac_on_kernels():
    with pytest.raises(ValueError, match="2 dims"):
        identity_(torch.zeros(3))
    # documented difference: torch's eye_ raises on a 3-D tensor, identity_ writes a Dirac kernel
    t = identity_(torch.zeros(3, 3, 3))
    assert torch.equal(t, nn.init.dirac_(torch.zeros(3, 3, 3)))


@pytest.mark.parametrize("dims", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_dirac_properties(dims, groups):
    rng = random.Random(dims * 10 + groups)
    a, c, d, e = (rng.randint(1, 5) for _ in range(4))
    b = rng.randint(1, 5 * groups)
    t = torch.randn((a * groups, b, c, d, e)[:dims], generator=gen(0))
    dirac_(t, groups=groups)
    min_d = min(t.size(0) // groups, t.size(1))
    assert torch.count_nonzero(t) == min_d * groups
    assert t.sum().item() == pytest.approx(min_d * groups)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_dirac_identity(groups, dims):
    batch, in_c, out_c, size, k = 8, 3, 9, 5, 3
    eff_out = out_c // groups
    x = torch.randn(batch, in_c, *([size] * dims), generator=gen(1))
    w = torch.cat([torch.zeros(eff_out, in_c, *([k] * dims))] * groups)
    dirac_(w, groups=groups)
    y = (F.conv1d, F.conv2d, F.conv3d)[dims - 1](x, w)
    inner = (slice(None), slice(None), *([slice(1, -1)] * dims))
    for g in range(groups):
        torch.testing.assert_close(y[:, eff_out * g : eff_out * g + in_c], x[inner])
        assert not y[:, eff_out * g + in_c : eff_out * (g + 1)].any()


@pytest.mark.parametrize("dims", [1, 2, 6])
def test_dirac_only_works_on_3_4_5d_inputs(dims):
    with pytest.raises(ValueError, match="3-5 dims"):
        dirac_(rand_tensor(random.Random(dims), dims, 1, 3))


# ---------------------------------------------------------------------------------------------
# xavier / kaiming


@pytest.mark.parametrize("fn", [xavier_uniform_, xavier_normal_, kaiming_uniform_, kaiming_normal_])
@pytest.mark.parametrize("dims", [0, 1])
def test_fan_schemes_error_on_inputs_smaller_than_2d(fn, dims):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn(torch.zeros([1] * dims))


@pytest.mark.parametrize("use_gain", [True, False])
@pytest.mark.parametrize("dims", [2, 4])
@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_xavier(use_gain, dims, dist):
    rng = random.Random(dims + 10 * use_gain + (dist == "normal"))
    t = rand_tensor(rng, dims, 20, 25)
    g = rng.uniform(0.1, 2) if use_gain else 1.0
    fn = xavier_uniform_ if dist == "uniform" else xavier_normal_
    fn(t, gain=g, generator=gen(dims))
    fan_in, fan_out = fans_of(t)
    std = g * math.sqrt(2.0 / (fan_in + fan_out))
    assert is_uniform(t, -std * 3**0.5, std * 3**0.5) if dist == "uniform" else is_normal(t, 0, std)


@pytest.mark.parametrize("use_a", [True, False])
@pytest.mark.parametrize("dims", [2, 4])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_kaiming(use_a, dims, mode, dist):
    rng = random.Random(hash((use_a, dims, mode, dist)) % 1000)
    t = rand_tensor(rng, dims, 20, 25)
    a = rng.uniform(0.1, 2) if use_a else 0.0
    fn = kaiming_uniform_ if dist == "uniform" else kaiming_normal_
    fn(t, a=a, mode=mode, generator=gen(dims))
    fan_in, fan_out = fans_of(t)
    std = math.sqrt(2.0 / ((1 + a**2) * (fan_in if mode == "fan_in" else fan_out)))
    assert is_uniform(t, -std * 3**0.5, std * 3**0.5) if dist == "uniform" else is_normal(t, 0, std)


# ---------------------------------------------------------------------------------------------
# zero-element tensors: torch warns and does nothing

FAN_SCHEMES = [
    kaiming_normal_, kaiming_uniform_, xavier_normal_, xavier_uniform_, lecun_normal_,
    lecun_uniform_, variance_scaling_, orthogonal_,
]  # fmt: skip
EMPTY_SHAPES = [(0, 1), (1, 0), (0, 3, 3, 3), (4, 0, 3, 3), (0,), (0, 0)]


@pytest.mark.parametrize("fn", [kaiming_uniform_, kaiming_normal_])
def test_kaiming_warning_on_0element_tensor(fn):
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        fn(torch.empty(0, 1))


@pytest.mark.parametrize("fn", FAN_SCHEMES)
@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_zero_element_tensors_warn_and_return(fn, shape):
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        out = fn(t)
    assert out is t


@pytest.mark.parametrize(
    "call",
    [lambda t: delta_orthogonal_(t), lambda t: dirac_(t), lambda t: identity_(t),
     lambda t: initlab.zerO_(t)],
)  # fmt: skip
@pytest.mark.parametrize("shape", [(0, 3, 3, 3), (4, 0, 3, 3), (0, 0, 3)])
def test_zero_element_kernels_warn_and_return(call, shape):
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert call(t) is t


@pytest.mark.parametrize("shape", [(0, 4), (5, 0)])
def test_sparse_on_zero_element_tensor_warns_and_returns(shape):
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert sparse_(t, 0.5) is t


@pytest.mark.parametrize("fn", FAN_SCHEMES)
@pytest.mark.parametrize(
    ("cls", "args"), [(nn.Linear, (0, 5)), (nn.Linear, (5, 0)), (nn.Conv2d, (4, 0, 3)),
                      (nn.Conv1d, (4, 0, 3)), (nn.ConvTranspose2d, (0, 4, 3))],
)  # fmt: skip
def test_zero_element_module_parameters_warn_and_return(fn, cls, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own reset_parameters warns too
        module = cls(*args)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert fn(module) is module.weight


@pytest.mark.parametrize("fn", [normal_, uniform_, trunc_normal_, zeros_, ones_])
def test_zero_element_tensors_with_elementwise_schemes_are_a_silent_no_op(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fn(torch.empty(0, 3)).numel() == 0


# ---------------------------------------------------------------------------------------------
# meta tensors: every in-place scheme does nothing (torch's behaviour)

META_CALLS = {
    "kaiming_normal_": lambda t: kaiming_normal_(t),
    "kaiming_uniform_": lambda t: kaiming_uniform_(t, mode="fan_out"),
    "xavier_normal_": lambda t: xavier_normal_(t),
    "xavier_uniform_": lambda t: xavier_uniform_(t),
    "lecun_normal_": lambda t: lecun_normal_(t),
    "lecun_uniform_": lambda t: lecun_uniform_(t),
    "variance_scaling_ (truncated)": lambda t: variance_scaling_(t, 2.0),
    "variance_scaling_ (normal)": lambda t: variance_scaling_(t, 2.0, distribution="normal"),
    "normal_": lambda t: normal_(t, std=0.02),
    "uniform_": lambda t: uniform_(t, -1, 1),
    "trunc_normal_": lambda t: trunc_normal_(t, std=0.02),
    "trunc_normal_ (narrow)": lambda t: trunc_normal_(t, a=2.0, b=3.0),
    "constant_": lambda t: constant_(t, 0.3),
    "zeros_": lambda t: zeros_(t),
    "ones_": lambda t: ones_(t),
    "orthogonal_": lambda t: orthogonal_(t),
    "sparse_": lambda t: sparse_(t, 0.5),
    "identity_": lambda t: identity_(t),
    "zerO_": lambda t: initlab.zerO_(t),
}
KERNEL_CALLS = {
    "delta_orthogonal_": lambda t: delta_orthogonal_(t),
    "dirac_": lambda t: dirac_(t),
    "identity_": lambda t: identity_(t),
    "zerO_": lambda t: initlab.zerO_(t),
    "orthogonal_": lambda t: orthogonal_(t),
    "kaiming_normal_": lambda t: kaiming_normal_(t),
}


@pytest.mark.parametrize("name", list(META_CALLS))
def test_meta_tensors_are_a_no_op(name):
    t = torch.empty(64, 32, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = META_CALLS[name](t)
    assert out is t and t.is_meta


@pytest.mark.parametrize("name", list(KERNEL_CALLS))
def test_meta_kernels_are_a_no_op(name):
    t = torch.empty(8, 8, 3, 3, device="meta")
    assert KERNEL_CALLS[name](t) is t


def test_meta_built_model_with_the_usual_init_weights_pattern():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))

    def init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            zeros_(m.bias)

    model.apply(init_weights)
    lecun_normal_(model[0])
    assert all(p.is_meta for p in model.parameters())


def test_meta_tensors_still_validate_options():
    t = torch.empty(4, 4, device="meta")
    with pytest.raises(ValueError, match="sparsity"):
        sparse_(t, 1.5)
    with pytest.raises(ValueError, match="mode"):
        kaiming_normal_(t, mode="fan_middle")
    with pytest.raises(ValueError, match="2 dims"):
        orthogonal_(torch.empty(4, device="meta"))


# ---------------------------------------------------------------------------------------------
# sparse / orthogonal


@pytest.mark.parametrize("dims", [1, 3])
def test_sparse_only_works_on_2d_inputs(dims):
    with pytest.raises(ValueError, match="2-D"):
        sparse_(rand_tensor(random.Random(dims), dims, 1, 3), 0.5)


@pytest.mark.parametrize("use_random_std", [True, False])
def test_sparse_default_std(use_random_std):
    rng = random.Random(11 + use_random_std)
    t = rand_tensor(rng, 2, 30, 35)
    rows = t.size(0)
    sparsity = rng.uniform(0.1, 0.2)
    std = rng.uniform(0.01, 0.2) if use_random_std else 0.01
    if use_random_std:
        sparse_(t, sparsity=sparsity, std=std, generator=gen(5))
    else:
        sparse_(t, sparsity=sparsity, generator=gen(5))
    for col in t.T:
        assert int((col == 0).sum()) >= math.ceil(sparsity * rows)
    assert is_normal(t[t != 0], 0, std)


@pytest.mark.parametrize("use_gain", [True, False])
@pytest.mark.parametrize("size", [(3, 4), (4, 3), (20, 2, 3, 4), (2, 3, 4, 5)])
def test_orthogonal(use_gain, size):
    g = random.Random(len(size)).uniform(0.1, 2) if use_gain else 1.0
    t = orthogonal_(torch.zeros(size), gain=g, generator=gen(6))
    rows, cols = size[0], math.prod(size[1:])
    flat = t.view(rows, cols)
    gram = flat.T @ flat if rows > cols else flat @ flat.T
    # torch's atol 1e-6, relative to the Gram matrix's scale g^2 (float32 rounding of g^2 ~ 3.7)
    torch.testing.assert_close(
        gram, torch.eye(min(rows, cols)) * g**2, atol=1e-6 * max(1, g**2), rtol=0
    )


# ---------------------------------------------------------------------------------------------
# precision of the structured schemes


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
def test_orthogonal_float64_is_orthogonal_to_float64_precision(shape):
    w = orthogonal_(torch.empty(shape, dtype=torch.float64), generator=gen(7))
    flat = w if shape[0] > shape[1] else w.T
    err = (flat.T @ flat - torch.eye(min(shape), dtype=torch.float64)).abs().max().item()
    assert err < 1e-13


def test_orthogonal_float32_draws_are_unchanged():
    """float32 draws stay torch's own (QR of a float32 normal from the same generator)."""
    w = orthogonal_(torch.empty(40, 24), gain=1.5, generator=gen(8))
    ref = nn.init.orthogonal_(torch.empty(40, 24), 1.5, generator=gen(8))
    assert torch.equal(w, ref)


def test_delta_orthogonal_float64():
    w = delta_orthogonal_(torch.empty(16, 16, 3, 3, dtype=torch.float64), generator=gen(9))
    centre = w[:, :, 1, 1]
    err = (centre @ centre.T - torch.eye(16, dtype=torch.float64)).abs().max().item()
    assert err < 1e-13


def test_sparse_fills_float64_with_float64_values():
    w = sparse_(torch.empty(200, 50, dtype=torch.float64), 0.5, std=1.0, generator=gen(10))
    nonzero = w[w != 0]
    # a float32 value cast to float64 has its low 29 mantissa bits zero
    assert not torch.equal(nonzero, nonzero.float().double())


def test_sparse_float32_draws_are_unchanged():
    """float32: values N(0, std) then a uniform permutation per column, from one generator."""
    w = sparse_(torch.empty(30, 20), 0.3, std=0.1, generator=gen(11))
    g = gen(11)
    ref = torch.empty(30, 20).normal_(0.0, 0.1, generator=g)
    order = torch.rand(30, 20, generator=g).argsort(dim=0)
    ref.scatter_(0, order[: math.ceil(0.3 * 30)], 0.0)
    assert torch.equal(w, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_deterministic_schemes_keep_dtype_and_precision(dtype):
    z = initlab.zerO_(torch.empty(6, 3, dtype=dtype))
    p = 8
    ref = torch.tensor([[1.0, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1], [1, -1, 1]],
                       dtype=torch.float64) / math.sqrt(p)  # fmt: skip
    assert z.dtype == dtype
    assert torch.equal(z, ref.to(dtype))  # computed in float64, rounded once
    eye = identity_(torch.empty(3, 5, dtype=dtype), gain=1 / 3)
    assert torch.equal(eye, (torch.eye(3, 5, dtype=torch.float64) / 3).to(dtype))
    k = dirac_(torch.empty(4, 4, 3, dtype=dtype), gain=1 / 3)
    assert k.dtype == dtype and k[0, 0, 1].item() == torch.tensor(1 / 3, dtype=dtype).item()
