"""The bench runner: one small suite end to end, and the failure reporting."""

from __future__ import annotations

import json
import math

import pytest

from initlab.bench import models
from initlab.bench.data import digits
from initlab.bench.methods import Recipe
from initlab.bench.run import Run, markdown, summarize, train_classifier, write_outputs


@pytest.fixture(scope="module")
def ds():
    return digits(seed=0)


def test_training_is_reproducible_and_learns(ds):
    recipe = Recipe(lr=0.05, epochs=2)
    build = lambda: models.plain_mlp(64, 10, 3, 64, "relu")  # noqa: E731
    a = train_classifier(build, "initlab", ds, recipe, 0, Run("t", "mlp3", "initlab", 0, 0.05))
    b = train_classifier(build, "initlab", ds, recipe, 0, Run("t", "mlp3", "initlab", 0, 0.05))
    assert a.losses == b.losses  # bit-reproducible at a fixed thread count
    assert a.acc_best > 0.8 and not a.diverged
    assert abs(a.init_loss - math.log(10)) < 1.0


def test_divergence_is_reported_not_dropped(ds):
    recipe = Recipe(lr=1e4, epochs=1)
    build = lambda: models.plain_mlp(64, 10, 3, 64, "relu")  # noqa: E731
    run = train_classifier(build, "kaiming", ds, recipe, 0, Run("t", "mlp3", "kaiming", 0, 1e4))
    assert run.diverged
    assert summarize([run])[0]["diverged"] == "1/1"


def test_outputs_written(ds, tmp_path):
    recipe = Recipe(lr=0.05, epochs=1)
    build = lambda: models.plain_mlp(64, 10, 2, 32, "tanh")  # noqa: E731
    runs = [train_classifier(build, m, ds, recipe, s, Run("depth", "mlp2-tanh", m, s, 0.05))
            for m in ("kaiming", "initlab") for s in (0, 1)]  # fmt: skip
    write_outputs(runs, tmp_path, "depth", 2, 1)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["environment"]["threads"] == 1 and len(payload["runs"]) == 4
    assert "±" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").exists()
    assert (tmp_path / "accuracy_vs_depth.png").exists()
    assert (tmp_path / "act_std_depth_mlp2-tanh.png").exists()
    assert len(runs[0].extra["act_std"]) == 2  # one std per Linear layer
    assert "| model |" in markdown(summarize(runs))
