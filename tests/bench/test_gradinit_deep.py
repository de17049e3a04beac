"""The gradinit-deep suite: its data, its nets in the regime's shape, and every row end to end."""

from __future__ import annotations

import pytest
import torch

from initlab.bench import gradinit_deep
from initlab.bench.run import run_suite, summarize
from initlab.errors import InitlabError

pytest.importorskip("mlxtend")


@pytest.fixture(autouse=True)
def _one_thread():
    """The suite runs pinned to one thread (as ``run_suite``); unpinned it crawls on a busy host."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mnist14_pixels_in_unit_range_and_half_size() -> None:
    ds = gradinit_deep.mnist14(0)
    assert ds.x_train.shape == (4000, 1, 14, 14) and ds.x_test.shape == (1000, 1, 14, 14)
    assert float(ds.x_train.min()) == 0.0 and 0.9 < float(ds.x_train.max()) <= 1.0
    # 160 steps per epoch at the suite's batch: GradInit's budget is hundreds of iterations
    assert -(-len(ds.x_train) // gradinit_deep.BATCH) >= 150
    assert torch.equal(gradinit_deep.mnist14(0).x_train, ds.x_train)  # deterministic per seed


def test_nets_are_the_deep_ones() -> None:
    convs = {
        name: sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in b().modules())
        for name, (b, _) in gradinit_deep.ARCHS.items()
    }
    assert convs == {"resnet56": 55, "vgg19-bn": 16}  # ResNet-56: 6n + 1 3x3 convs + the head
    bns = [
        isinstance(m, torch.nn.BatchNorm2d) for m in gradinit_deep.ARCHS["resnet56"][0]().modules()
    ]
    assert not any(bns)


def test_every_row_runs_end_to_end_on_a_subset() -> None:
    runs = gradinit_deep.run(1, 1, lambda s: None, subset=50)
    rows = {(r.model, r.method): r for r in runs}
    assert ("resnet56", "fixup") in rows and ("vgg19-bn", "fixup") not in rows
    assert ("vgg19-bn", "initlab + gradinit") in rows
    assert len(runs) == 2 * len(gradinit_deep.ROWS) - 1
    failed = [f"{r.model} {r.method}: {r.error}" for r in runs if r.error]
    assert not failed
    for r in runs:
        assert len(r.losses) == 1 + r.method.startswith("kaiming +1") or r.diverged
        assert r.diverged or 0.0 <= r.acc_1 <= 1.0
    assert len(summarize(runs)) == len(runs)


def test_suite_registered_and_checks_models() -> None:
    with pytest.raises(InitlabError, match="does not use models"):
        run_suite("gradinit-deep", models=["resnet56"])
    with pytest.raises(InitlabError, match="resnet56"):
        gradinit_deep.run(1, 1, lambda s: None, archs=["resnet57"])
