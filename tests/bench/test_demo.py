"""The makemore demo behind ``initlab doctor --demo makemore``: the lecture's two inits, diagnosed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

demo = pytest.importorskip("initlab.bench.demo")
pytest.importorskip("names")


@pytest.mark.slow
def test_naive_init_fails_the_loss_check_and_the_fixed_one_passes(tmp_path: Path) -> None:
    result = demo.main_demo(tmp_path, steps=1, plots=False, batch_size=256, batches=2)
    naive, fixed = result["reports"]["naive"], result["reports"]["fixed"]
    expected = math.log(27)  # uniform predictions over 27 characters
    assert naive.measurements["initial_loss"]["expected"] == pytest.approx(expected)
    # the lecture: ~27 with torch.randn weights, ~3.3 after its fixes
    assert naive.measurements["initial_loss"]["observed"] > 5 * expected
    assert abs(fixed.measurements["initial_loss"]["observed"] - expected) < 0.1
    assert naive.finding("initial_loss").severity == "fail"
    assert fixed.finding("initial_loss").severity == "ok"
    assert sorted(p.name for p in result["files"]) == ["fixed.json", "naive.json"]
    assert "naive" in result["text"] and "fixed" in result["text"]
