"""The truncated-normal sampler: exact, bit-identical to the plain rejection loop, and shardable.

The CPU path settles the rejection rounds on a small numpy array and writes them once; these tests
hold it to the tensor loop it replaces (same draws, same order), to the textbook distribution (KS
at fixed seeds, tolerances from n), and to the block/shard contract of :mod:`initlab.rng`.
"""

from __future__ import annotations

import pytest
import torch

from initlab import rng
from initlab.rng import BLOCK, fill_
from initlab.schemes import Distribution, _trunc_normal_, trunc_normal_
from tests._stats import Reference, check_sample


def loop_reference(n: int, mean: float, std: float, low: float, high: float, seed: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """Rejection written as a plain tensor loop: draw all, redraw those outside, repeat."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.empty(n, dtype=dtype).normal_(mean, std, generator=g)
    idx = ((flat < low) | (flat > high)).nonzero().squeeze(1)
    while idx.numel():
        redraw = torch.empty(idx.numel(), dtype=dtype).normal_(mean, std, generator=g)
        flat[idx] = redraw
        idx = idx[(redraw < low) | (redraw > high)]
    return flat


CASES = [  # (n, mean, std, low, high): symmetric, asymmetric, shifted, tiny, one redraw-heavy
    (200_000, 0.0, 0.02, -0.04, 0.04),
    (2 * 65536 + 5, 0.0, 1.0, -2.0, 2.0),  # a last piece under 16: merged into the one before
    (65536 + 16, 0.0, 1.0, -2.0, 2.0),
    (3 * 65536 + 17, 0.0, 1.0, -2.0, 2.0),
    (10_007, 0.1, 0.5, -0.9, 1.1),
    (3_001, 0.0, 1.0, -0.7, 0.9),
    (5, 0.0, 1.0, -0.8, 0.9),
    (4_099, -2.0, 3.0, -5.0, 1.0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "mean", "std", "low", "high"), CASES)
def test_cpu_path_is_bit_identical_to_the_tensor_loop(n, mean, std, low, high, dtype):
    for seed in (0, 1, 7):
        got = _trunc_normal_(torch.empty(n, dtype=dtype), mean, std, low, high,
                             torch.Generator().manual_seed(seed))  # fmt: skip
        assert torch.equal(got, loop_reference(n, mean, std, low, high, seed, dtype)), seed


def test_bound_equal_to_a_value_is_compared_in_the_tensor_dtype():
    """A bound that is not a float32 number: both paths compare after rounding it to float32."""
    low, high = -0.1 - 1e-12, 0.1 + 1e-12
    got = _trunc_normal_(torch.empty(50_000), 0.0, 0.1, low, high, torch.Generator().manual_seed(3))
    assert torch.equal(got, loop_reference(50_000, 0.0, 0.1, low, high, 3))


@pytest.mark.parametrize(("mean", "std", "a", "b"), [(0.0, 0.02, -2.0, 2.0), (0.3, 1.5, -1.0, 2.5)])
def test_block_fill_draws_the_exact_truncated_normal(mean, std, a, b):
    """KS and moments on 4.6 blocks (n = 300 k): tolerances from n, see tests/_stats.py."""
    dist = Distribution("trunc_normal", mean, std, mean + a * std, mean + b * std)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rng, "BLOCK", 1 << 16)
        x = fill_(torch.empty(300_000), dist.sample_, 11, "layer.weight")
    check_sample(x, Reference("trunc_normal", mean, std, mean + a * std, mean + b * std))


def test_public_trunc_normal_on_a_plain_tensor_is_exact():
    w = trunc_normal_(torch.empty(300, 500), mean=0.5, std=2.0, a=-1.5, b=3.0,
                      generator=torch.Generator().manual_seed(5))  # fmt: skip
    check_sample(w, Reference("trunc_normal", 0.5, 2.0, 0.5 - 3.0, 0.5 + 6.0))


def test_shards_equal_the_slices_of_the_full_draw_across_block_edges():
    dist = Distribution("trunc_normal", 0.0, 0.02, -0.04, 0.04)
    total = 2 * BLOCK + 777
    full = fill_(torch.empty(total), dist.sample_, 0, "big")
    for lo, hi in [(BLOCK - 300, BLOCK + 200), (0, 17), (BLOCK, 2 * BLOCK + 777), (5, total)]:
        part = fill_(torch.empty(hi - lo), dist.sample_, 0, "big", offset=lo, total=total)
        assert torch.equal(part, full[lo:hi]), (lo, hi)


def test_values_are_a_function_of_seed_name_and_block():
    """Block b of a parameter draws only from generator(seed, name, b): recompute one by hand."""
    dist = Distribution("trunc_normal", 0.0, 1.0, -2.0, 2.0)
    full = fill_(torch.empty(BLOCK + 1000), dist.sample_, 4, "w")
    tail = loop_reference(1000, 0.0, 1.0, -2.0, 2.0, rng.derive_seed(4, "w", 1))
    assert torch.equal(full[BLOCK:], tail)
    other = fill_(torch.empty(BLOCK + 1000), dist.sample_, 4, "v")
    assert not torch.equal(full[BLOCK:], other[BLOCK:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tensors_take_the_tensor_loop(dtype):
    g = torch.Generator().manual_seed(2)
    got = _trunc_normal_(torch.empty(20_000, dtype=dtype), 0.0, 1.0, -2.0, 2.0, g)
    assert torch.equal(got, loop_reference(20_000, 0.0, 1.0, -2.0, 2.0, 2, dtype))


def test_a_parameter_that_requires_grad_is_filled_in_place():
    p = torch.nn.Parameter(torch.zeros(64, 64))
    with torch.no_grad():
        _trunc_normal_(p, 0.0, 1.0, -2.0, 2.0, torch.Generator().manual_seed(0))
    assert torch.equal(p.detach().flatten(), loop_reference(64 * 64, 0.0, 1.0, -2.0, 2.0, 0))
    assert p.requires_grad


@pytest.mark.parametrize("kind", ["trunc_normal", "normal"])
def test_blocks_drawn_by_several_threads_give_the_same_values(kind):
    dist = Distribution(kind, 0.0, 0.02, -0.04, 0.04)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fill_(torch.empty(3 * BLOCK + 5), dist.sample_, 9, "w")
        torch.set_num_threads(2)
        two = fill_(torch.empty(3 * BLOCK + 5), dist.sample_, 9, "w")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_an_empty_tensor_is_left_alone():
    t = torch.empty(0)
    assert _trunc_normal_(t, 0.0, 1.0, -2.0, 2.0, torch.Generator().manual_seed(0)) is t


def test_without_numpy_the_tensor_loop_gives_the_same_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numpy is optional: without it the sampler takes the tensor loop, bit for bit the same."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a)
    )
    import initlab.schemes.sampling

    def numpy_path(*args: object) -> None:
        raise AssertionError("the numpy path ran without numpy")

    monkeypatch.setattr(initlab.schemes.sampling, "_redraw_outside_cpu", numpy_path)
    n, mean, std, low, high = CASES[0]
    got = torch.empty(n)
    _trunc_normal_(got, mean, std, low, high, torch.Generator().manual_seed(3))
    assert torch.equal(got, loop_reference(n, mean, std, low, high, seed=3))
