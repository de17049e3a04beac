"""The GPU recipe's pieces, checked on the CPU: augmentation, schedule, groups, the cifar10 suite."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from initlab.bench import models
from initlab.bench.methods import Recipe
from initlab.bench.run import run_suite, summarize
from initlab.bench.training import _lr_factor, _param_groups, augment
from initlab.errors import InitlabError


def test_augment_crops_flips_and_cuts_out() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(64, 3, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0), pad=2, cutout=0)
    assert out.shape == x.shape
    # every output is a shifted (and maybe mirrored) window of the zero-padded image
    padded = torch.nn.functional.pad(x[0, 0], (2, 2, 2, 2))
    windows = [padded[i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
    windows += [w.flip(1) for w in windows]
    for img in out[:, 0]:
        assert any(torch.equal(img, w) for w in windows)
    assert not all(torch.equal(o, x[0]) for o in out)  # something moved
    assert torch.equal(out[:, 0], out[:, 1])  # the channels move together
    holes = augment(torch.ones(256, 1, 8, 8), torch.Generator().manual_seed(1), pad=0, cutout=4)
    zeros = (holes == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border


def test_same_generator_same_augmentation() -> None:
    x = torch.randn(8, 3, 8, 8)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_schedule_extra_epochs_then_cosine() -> None:
    r = Recipe(lr=0.1, epochs=2, extra_epochs=1, warmup_epochs=1, cosine=True)
    spe = 10
    f = [_lr_factor(s, r, spe) for s in range(30)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup
    assert f[10] == pytest.approx(1.0)  # the cosine starts after the extra epoch
    assert f[20] == pytest.approx(0.5)  # half-way through the cosine
    assert f[29] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(_lr_factor(s, Recipe(), spe) == 1.0 for s in range(30))  # constant by default


def test_param_groups_bias_lr_and_no_decay_on_norms() -> None:
    net = models.resnet_like(1, 10, 1, batchnorm=True)
    groups = _param_groups(net, Recipe(lr=0.1, weight_decay=1e-4, bias_lr_mult=0.1))
    ids = {id(p): g for g in groups for p in g["params"]}
    assert ids[id(net.fc.bias)]["mult"] == 0.1 and ids[id(net.fc.weight)]["mult"] == 1.0
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert ids[id(bn.weight)]["weight_decay"] == 0.0
    assert ids[id(net.fc.weight)]["weight_decay"] == 1e-4
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def _fake_cifar(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": labels}
        with (root / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)


@pytest.mark.slow
def test_cifar10_suite_runs_every_row_on_cpu(tmp_path: Path) -> None:
    _fake_cifar(tmp_path, 8)
    runs = run_suite("cifar10", data=tmp_path, epochs=1, models=["resnet20"], subset=16,
                     out=tmp_path / "out")  # fmt: skip
    rows = {(r.model, r.method): r for r in runs}
    assert ("resnet20", "fixup") in rows and ("resnet20-bn", "fixup") not in rows
    assert ("resnet20-bn", "gradinit") in rows and ("resnet20", "kaiming +1 epoch warmup") in rows
    failed = [f"{r.model} {r.method}: {r.error}" for r in runs if r.error]
    assert not failed
    assert all(len(r.losses) == 1 + (r.method.startswith("kaiming +1")) for r in runs)
    assert all(r.extra["device"] == "cpu" for r in runs)
    assert (tmp_path / "out" / "results.md").exists()
    assert len(summarize(runs)) == len(runs)  # one seed: one row per run


def test_cifar10_suite_needs_data_and_known_models(tmp_path: Path) -> None:
    with pytest.raises(InitlabError, match="--data"):
        run_suite("cifar10")
    _fake_cifar(tmp_path, 2)
    with pytest.raises(InitlabError, match="resnet110"):
        run_suite("cifar10", data=tmp_path, models=["resnet111"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(InitlabError, match="CUDA is not available"):
        run_suite("quick", device="cuda")
    with pytest.raises(InitlabError, match="not a torch device"):
        run_suite("quick", device="gpu")


def test_options_a_suite_does_not_use_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InitlabError, match="does not use models"):
        run_suite("quick", models=["resnet20"])
    with pytest.raises(InitlabError, match="does not use epochs"):
        run_suite("makemore", epochs=3)
