"""The command line, driven as a user would (click's runner, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from initlab.cli import load_factory, main, make_example
from initlab.planning import init

EXAMPLES = Path(__file__).parent.parent / "examples" / "models.py"


def test_schemes_lists_registry():
    result = CliRunner().invoke(main, ["schemes"])
    assert result.exit_code == 0
    for name in ("kaiming_normal", "orthogonal", "ZerO", "trunc_normal"):
        assert name in result.output


def test_plan_prints_table_and_json():
    runner = CliRunner()
    result = runner.invoke(main, ["plan", f"{EXAMPLES}:resnet", "--example-shape", "2,3,16,16"])
    assert result.exit_code == 0, result.output
    assert "residual_out" in result.output and "kaiming_normal" in result.output
    result = runner.invoke(main, ["plan", f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--json"])
    data = json.loads(result.output)
    assert data["entries"][0]["activation"] == "tanh"


def test_init_saves_weights(tmp_path):
    out = tmp_path / "w.pt"
    args = ["init", f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--seed", "3", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    state = torch.load(out)
    reference = load_factory(f"{EXAMPLES}:mlp")()  # the library's init, same model and seed
    init(reference, example=make_example("4,64", "float", 2), seed=3)
    expected = reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_bad_factory_and_bad_scheme_are_clear():
    runner = CliRunner()
    result = runner.invoke(main, ["plan", f"{EXAMPLES}:nope", "--example-shape", "4,64"])
    assert result.exit_code != 0 and "has no 'nope'" in result.output
    args = ["plan", f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--scheme", "kaiming_norml"]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "Did you mean 'kaiming_normal'" in result.output
    result = runner.invoke(main, ["plan", f"{EXAMPLES}:mlp", "--example-shape", "4,65"])
    assert result.exit_code == 2 and "example did not fit" in result.output


def test_saved_plan_reproduces_weights(tmp_path):
    runner = CliRunner()
    saved = tmp_path / "init.toml"
    base = [f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--seed", "5"]
    result = runner.invoke(main, ["plan", *base, "--scheme", "orthogonal", "--save", str(saved)])
    assert result.exit_code == 0, result.output
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    runner.invoke(main, ["init", *base, "--scheme", "orthogonal", "--out", str(a)])
    result = runner.invoke(main, ["init", *base, "--rules", str(saved), "--out", str(b)])
    assert result.exit_code == 0, result.output
    sa, sb = torch.load(a), torch.load(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_residual_scale_switch():
    runner = CliRunner()
    base = ["plan", f"{EXAMPLES}:transformer", "--example-shape", "2,16,64", "--json"]
    gains = {}
    for flag in ("--residual-scale", "--no-residual-scale"):
        result = runner.invoke(main, [*base, flag])
        assert result.exit_code == 0, result.output
        entries = {e["name"]: e for e in json.loads(result.output)["entries"]}
        gains[flag] = entries["layers.0.linear2.weight"]["gain"]
    assert gains["--no-residual-scale"] == pytest.approx(1.0)
    assert gains["--residual-scale"] == pytest.approx(0.5)  # 2 layers x 2 branches: L = 4
