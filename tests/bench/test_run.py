"""The bench runner: one small suite end to end, and the failure reporting."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from initlab.bench import models
from initlab.bench.data import digits
from initlab.bench.methods import Recipe
from initlab.bench.run import markdown, summarize, write_outputs
from initlab.bench.training import Run, accuracy, activation_stds, train_classifier


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


# --------------------------------------------------------------------------- progress and plots


def test_suite_size_counts_the_runs_of_a_suite():
    from initlab.bench.run import suite_size

    assert suite_size("quick") == 17  # 6 makemore inits + 2 activations x 3 depth methods + 5
    assert suite_size("quick", seeds=3) == 3 * 17
    assert suite_size("models", models=["gpt2", "vit"], seeds=2) == 2 * 3 * 2  # 3 starts each
    assert suite_size("gradinit-deep") == 9 + 8  # every row on the no-BN ResNet, no Fixup with BN
    assert suite_size("depth", seeds=3) == 3 * suite_size("depth")
    assert suite_size("cifar10", models=["resnet20"]) == 15  # 8 rows without BN (Fixup), 7 with


def _fake_runs() -> list[Run]:
    ok = Run("residual", "resmlp4", "skipinit", 0, 0.1, init_loss=2.3, losses=[1.0, 0.5])
    bad = Run("residual", "resmlp4", "torch-default", 0, 0.1, init_loss=2.4, diverged=True)
    failed = Run("residual", "resmlp4", "fixup", 0, 0.1, error="RuntimeError: boom")
    ok.extra["act_std"] = [("a", 1.0), ("b", 0.0), ("c", 0.5)]
    bad.extra["act_std"] = [("a", 1.2), ("b", 0.9), ("c", 0.8)]
    depth = [Run("depth", f"mlp30-{a}", m, 0, 0.01, acc_final=acc, diverged=acc == 0)
             for a in ("tanh", "relu") for m, acc in (("kaiming", 0.9), ("torch-default", 0.0))]  # fmt: skip
    return [ok, bad, failed, *depth]


def test_loss_plot_marks_diverged_and_failed_runs():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from initlab.bench.run import _loss_curve

    ok, bad, failed = _fake_runs()[:3]
    ax = Figure().subplots()
    assert _loss_curve(ax, ok, "C0") == [2.3, 1.0, 0.5]
    _loss_curve(ax, bad, "C1")
    _loss_curve(ax, failed, "C2")
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["skipinit", "torch-default (diverged in epoch 1)",
                      "fixup: failed (RuntimeError: boom)"]  # fmt: skip
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [1]


def test_plots_mask_zeroed_layers_and_bar_one_depth(tmp_path):
    pytest.importorskip("matplotlib")
    from initlab.bench.run import plot

    paths = {p.name for p in plot(_fake_runs(), tmp_path)}
    assert {"loss_residual_resmlp4_lr0.1.png", "act_std_residual_resmlp4.png",
            "accuracy_vs_depth.png"} <= paths  # fmt: skip
    assert all((tmp_path / p).stat().st_size > 5000 for p in paths)


def test_activation_stds_and_accuracy_leave_hooks_and_modes_as_they_were() -> None:
    """The plots' per-layer stds equal the layers' outputs in eval mode; nothing stays attached."""
    torch.manual_seed(0)  # test fixture only
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3))
    net.train()
    net[1].eval()  # mixed modes come back as they were
    modes = [m.training for m in net.modules()]
    x = torch.randn(32, 4)
    stds = activation_stds(net, x)
    h = net[0](x).detach()
    assert [n for n, _ in stds] == ["0", "3"]
    assert stds[0][1] == pytest.approx(float(h.std()), rel=1e-6)
    assert stds[1][1] == pytest.approx(float(net[3](h.relu()).detach().std()), rel=1e-6)
    y = net.eval()(x).argmax(-1)
    for m, t in zip(net.modules(), modes, strict=True):
        m.training = t
    assert accuracy(net, x, y, batch=5) == 1.0  # eval mode: the same predictions, chunked
    assert [m.training for m in net.modules()] == modes
    assert not any(m._forward_hooks for m in net.modules())
