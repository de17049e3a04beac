"""Tests for initlab.bench.data: shapes, determinism, stratification, caching, offline loaders."""

from __future__ import annotations

import importlib.metadata
import math
import pickle
import random
import string
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initlab.bench import data
from initlab.errors import InitlabError


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Cache generated data in a temporary directory, never in the user's home."""
    path = tmp_path_factory.mktemp("initlab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INITLAB_CACHE", str(path))
        yield path


def assert_stratified(y_all: torch.Tensor, y_test: torch.Tensor) -> None:
    """Each class's test count is within one example of its share ``n_c * n_test / n``."""
    n, n_test = len(y_all), len(y_test)
    expected = torch.bincount(y_all).double() * n_test / n
    found = torch.bincount(y_test, minlength=len(expected)).double()
    assert (found - expected).abs().max() < 1.0


def assert_same(a: data.Dataset, b: data.Dataset) -> None:
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# --------------------------------------------------------------------------- split helpers


def test_stratified_split_partitions_and_shuffles() -> None:
    y = torch.arange(10).repeat_interleave(50)  # sorted by class, as mnist5k
    train, test = data.stratified_split(y, 0.2, torch.Generator().manual_seed(0))
    assert len(test) == 100 and len(train) == 400
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(500))
    assert torch.bincount(y[test]).tolist() == [10] * 10
    assert not torch.equal(y[train], y[train].sort().values)  # no class runs left


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=8),
    test_size=st.floats(0.05, 0.6),
    seed=st.integers(0, 2**31 - 1),
)
def test_stratified_split_property(counts: list[int], test_size: float, seed: int) -> None:
    y = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    n_test = math.ceil(test_size * len(y))
    if not 0 < n_test < len(y):
        with pytest.raises(InitlabError):
            data.stratified_split(y, test_size, torch.Generator().manual_seed(seed))
        return
    train, test = data.stratified_split(y, test_size, torch.Generator().manual_seed(seed))
    assert len(test) == n_test
    assert len(set(train.tolist()) | set(test.tolist())) == len(y)
    assert_stratified(y, y[test])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_test_size(bad: float) -> None:
    with pytest.raises(InitlabError, match="test_size"):
        data.stratified_split(torch.zeros(10, dtype=torch.long), bad, torch.Generator())


def test_standardize_leaves_constant_features_finite() -> None:
    x_train = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    x_test = torch.tensor([[5.0, 2.0]])
    a, b = data.standardize(x_train, x_test)
    assert a[:, 0].tolist() == [0.0, 0.0] and b[0, 0] == 5.0  # divided by 1, not by eps
    assert a[:, 1].tolist() == [-1.0, 1.0] and b[0, 1] == 0.0


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_standardization() -> None:
    ds = data.digits(seed=0)
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    std = ds.x_train.std(0, unbiased=False)
    varying = std > 0
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(std[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert_stratified(torch.cat([ds.y_train, ds.y_test]), ds.y_test)
    assert ds.meta["n_train"] == 1437 and ds.meta["seed"] == 0


def test_digits_deterministic_per_seed() -> None:
    assert_same(data.digits(seed=3), data.digits(seed=3))
    assert not torch.equal(data.digits(seed=3).y_train, data.digits(seed=4).y_train)


def test_digits_image_and_raw() -> None:
    ds = data.digits(seed=0, image=True)
    assert ds.input_shape == (1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    raw = data.digits(seed=0, standardize=False)
    assert raw.x_train.min() == 0 and raw.x_train.max() == 16
    assert torch.equal(raw.y_train, ds.y_train)  # the split does not depend on scaling


def test_missing_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INITLAB_CACHE", str(tmp_path))  # nothing cached: must import sklearn
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ModuleNotFoundError, match=r"'sklearn'.*initlab\[data\]"):
        data.digits()

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ModuleNotFoundError, match=r"'mnist1d'.*initlab\[data\]"):
        data.mnist1d()


def test_digits_cache_survives_corruption(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INITLAB_CACHE", str(tmp_path))
    first = data.digits(seed=0)
    (cached,) = tmp_path.glob("digits-*.npz")
    cached.write_bytes(b"not an npz")  # a half-written or foreign file is rebuilt
    assert_same(first, data.digits(seed=0))
    assert cached.stat().st_size > 1000


# --------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k() -> data.Dataset:
    return data.mnist5k(seed=0)


@pytest.mark.slow
def test_mnist5k_split(mnist5k: data.Dataset) -> None:
    assert mnist5k.x_train.shape == (4000, 784) and mnist5k.x_test.shape == (1000, 784)
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10
    assert torch.bincount(mnist5k.y_train).tolist() == [400] * 10
    assert len(torch.unique(mnist5k.y_train[:50])) > 5  # shuffled, not sorted by class
    assert abs(float(mnist5k.x_train.mean())) < 1e-4
    assert abs(float(mnist5k.x_train.std()) - 1) < 1e-3


@pytest.mark.slow
def test_mnist5k_deterministic_and_image(mnist5k: data.Dataset) -> None:
    again = data.mnist5k(seed=0, image=True)  # from the cache
    assert again.x_train.shape == (4000, 1, 28, 28)
    assert torch.equal(again.x_train.flatten(1), mnist5k.x_train)
    assert torch.equal(again.y_test, mnist5k.y_test)
    assert not torch.equal(data.mnist5k(seed=1).y_train, mnist5k.y_train)


# --------------------------------------------------------------------------- mnist1d


def test_mnist1d_small_cached_and_leaves_global_rng(_private_cache: Path) -> None:
    random.seed(123)
    np.random.seed(123)
    ds = data.mnist1d(seed=0, num_samples=200)  # generated: make_dataset seeds both globally
    after = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    assert after == (random.random(), np.random.random())  # ... and initlab restored them
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert list(_private_cache.glob("mnist1d-*.npz"))
    again = data.mnist1d(seed=0, num_samples=200)
    assert_same(ds, again)
    reordered = data.mnist1d(seed=1, num_samples=200)  # seed only orders the train split
    assert torch.equal(reordered.x_test, ds.x_test)
    assert torch.equal(reordered.y_train.sort().values, ds.y_train.sort().values)


@pytest.mark.slow
def test_mnist1d_paper_sizes() -> None:
    ds = data.load("mnist1d")
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.num_classes == 10 and set(ds.y_test.tolist()) == set(range(10))
    assert abs(float(torch.cat([ds.x_train, ds.x_test]).std()) - 1) < 1e-3


# --------------------------------------------------------------------------- names


def test_names_vocab() -> None:
    words = data.names()
    assert len(words) == 5163 and words == sorted(set(words))
    assert all(set(w) <= set(string.ascii_lowercase) for w in words)
    shuffled = data.names(seed=7)
    assert shuffled == data.names(seed=7) and shuffled != words
    assert sorted(shuffled) == words
    with pytest.raises(InitlabError, match="names source"):
        data.names(source="nmaes")


def test_char_dataset_contexts() -> None:
    ds = data.char_dataset(["emma"] * 10, block_size=3)
    assert ds.x_train[:5].tolist() == [[0, 0, 0], [0, 0, 5], [0, 5, 13], [5, 13, 13], [13, 13, 1]]
    assert ds.y_train[:5].tolist() == [5, 13, 13, 1, 0]
    assert ds.x_train.shape == (8 * 5, 3) and ds.x_test.shape == (5, 3)
    assert data.VOCAB[0] == "." and data.VOCAB[1:] == string.ascii_lowercase


def test_char_dataset_split_by_words() -> None:
    words = data.names()
    before = list(words)
    ds = data.char_dataset(words, block_size=4, seed=42)
    assert words == before  # the caller's list is not shuffled
    n = len(words)
    assert ds.meta["n_words"] == [int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n)]
    assert ds.x_val is not None and ds.y_val is not None
    rows = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert rows == sum(len(w) + 1 for w in words)
    assert ds.x_train.shape[1] == 4 and ds.x_train.dtype == torch.int64
    assert int(ds.y_train.max()) == 26 and int((ds.y_train == 0).sum()) == int(0.8 * n)
    # the lecture's split: random.seed(42); random.shuffle(words); cut at 80% and 90%
    lecture = list(words)
    random.Random(42).shuffle(lecture)
    first = lecture[0]
    assert ds.y_train[: len(first) + 1].tolist() == [data.VOCAB.index(c) for c in first + "."]
    assert_same(ds, data.char_dataset(words, block_size=4, seed=42))


@pytest.mark.parametrize("bad", [["Emma"], ["o'neil"], [""], []])
def test_char_dataset_rejects_bad_words(bad: list[str]) -> None:
    with pytest.raises(InitlabError):
        data.char_dataset(bad)


# --------------------------------------------------------------------------- cifar10


def _write_fake_cifar(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [(i + j) % 10 for j in range(n)],
        }
        with (root / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def test_cifar10_from_local_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_fake_cifar(folder)
    ds = data.cifar10(tmp_path)  # finds the subfolder
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10
    mean = ds.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
    raw = data.load("cifar10", path=folder, standardize=False)
    assert float(raw.x_train.min()) >= 0.0 and float(raw.x_train.max()) <= 1.0


def test_cifar10_missing_names_path_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_batch_1") as info:
        data.cifar10(tmp_path)
    assert str(tmp_path) in str(info.value) and "never downloads" in str(info.value)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": _Evil(), b"labels": []}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        data.cifar10(tmp_path)


# --------------------------------------------------------------------------- dispatcher


def test_load_dispatches_and_suggests() -> None:
    ds = data.load("names", block_size=2, seed=1)
    assert ds.name == "names" and ds.num_classes == 27 and ds.input_shape == (2,)
    assert set(data.DATASETS) == {"digits", "mnist1d", "mnist5k", "names", "cifar10"}
    with pytest.raises(InitlabError, match="'mnist1d'"):
        data.load("mnist1")
    with pytest.raises(ValueError):  # InitlabError is a ValueError
        data.load("imagenet")


def test_dataset_repr_and_to() -> None:
    ds = data.load("digits")
    assert repr(ds) == "Dataset('digits', train=(1437, 64), test=(360, 64), num_classes=10)"
    moved = ds.to("cpu")
    assert moved.meta == ds.meta and torch.equal(moved.x_test, ds.x_test)
