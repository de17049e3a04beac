"""``benchmarks/heldout_training.py`` (issue #14's held-out training checks): its table marks a
row where the default is not the best of the three, and one tiny run goes end to end."""

from __future__ import annotations

import math

import pytest
import torch

from tests._benchmarks import load_benchmark

ht = load_benchmark("heldout_training")


def test_table_marks_a_row_where_the_default_is_not_best() -> None:
    rows = {
        "a": {"torch-default": [(0.1, 0.2, 2.3)], "kaiming": [(0.9, 0.95, 2.9)],
              "initlab": [(0.95, 0.96, 2.31)]},
        "b": {"torch-default": [(0.1, 0.2, 2.3)], "kaiming": [(0.93, 0.97, 2.7)],
              "initlab": [(0.88, 0.95, 2.30)]},
    }  # fmt: skip
    lines = ht.table(rows).splitlines()
    assert lines[2].startswith("| a |") and lines[2].endswith("| yes |")
    assert lines[3].startswith("| b |") and lines[3].endswith("| **no** |")
    assert "0.88 / 0.95 (2.30)" in lines[3]


def test_a_diverged_run_scores_zero_accuracy() -> None:
    from initlab.bench.training import Run

    run = Run("heldout", "m", "kaiming", 0, 0.1, init_loss=9.0, diverged=True)
    assert ht._score(run) == (0.0, 0.0, 9.0)


def test_one_tiny_plain_run_end_to_end() -> None:
    rows = ht.plain([2], ["relu"], seeds=1)
    ((model, by_method),) = rows.items()
    assert model == "mlp2-relu" and set(by_method) == set(ht.METHODS)
    for scores in by_method.values():
        acc1, best, _ = scores[0]
        assert 0.0 <= acc1 <= best <= 1.0
    assert abs(by_method["initlab"][0][2] - math.log(10)) < 0.05  # the default's head: near log 10


def test_zoo_training_verdict_is_paired_and_fails_a_diverged_default() -> None:
    pytest.importorskip("transformers")
    zt = load_benchmark("zoo_training")
    assert zt.verdict([2.20, 2.30], [2.25, 2.28])  # mean difference -0.015 <= its s.e. 0.035
    assert not zt.verdict([2.30, 2.31], [2.20, 2.22])  # 0.095 above, s.e. 0.005
    assert not zt.verdict([math.nan, 2.2], [2.2, 2.2])  # the default diverged
    assert zt.verdict([2.2, 2.2], [math.nan, 2.2])  # the own init diverged
    arch = zt.architecture("gpt_neo")
    assert arch.kind == "lm" and arch.build(28).config.vocab_size == 28


def test_zoo_training_builds_the_torchvision_style_classifiers() -> None:
    pytest.importorskip("transformers")  # zoo_training imports zoo.py's transformers specs
    zt = load_benchmark("zoo_training")
    arch = zt.vision_zoo_architecture("resnext")
    model = arch.build(10)
    assert arch.kind == "vision" and not arch.needs_hf
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="10 classes"):
        arch.build(28)
    for name in ("unet", "no_such_model"):  # a segmentation net, an unknown name
        with pytest.raises(SystemExit, match="no classifier"):
            zt.vision_zoo_architecture(name)
