"""The command line, driven as a user would (click's runner, in process)."""

from __future__ import annotations

import json
import sys
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
    assert result.exit_code == 2 and "shapes cannot be multiplied" in result.stderr
    assert "in module '0' (Linear)" in result.stderr and "--example-shape" in result.stderr


@pytest.mark.parametrize(
    ("factory", "shape", "scheme", "measured"),
    [("mlp", "4,64", ["--scheme", "orthogonal"], set()),  # no norm, head input at the bound
     ("resnet", "2,3,16,16", [], {"8.weight"})],  # convs read only by a BN at a smaller gain
)  # fmt: skip
def test_saved_plan_reproduces_weights(tmp_path, factory, shape, scheme, measured):
    runner = CliRunner()
    saved = tmp_path / "init.toml"
    base = [f"{EXAMPLES}:{factory}", "--example-shape", shape, "--seed", "5"]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    result = runner.invoke(main, ["init", *base, *scheme, "--out", str(a), "--save", str(saved)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["init", *base, "--rules", str(saved), "--out", str(b)])
    assert result.exit_code == 0, result.output
    sa, sb = torch.load(a), torch.load(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # `plan --save` saves the plan as planned: the same but for init's measured head
    result = runner.invoke(main, ["plan", *base, *scheme, "--save", str(saved)])
    assert result.exit_code == 0, result.output
    runner.invoke(main, ["init", *base, "--rules", str(saved), "--out", str(b)])
    sb = torch.load(b)
    assert {k for k in sa if not torch.equal(sa[k], sb[k])} == measured


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


def test_normalized_scale_option():
    runner = CliRunner()
    base = ["plan", f"{EXAMPLES}:resnet", "--example-shape", "2,3,16,16", "--json"]
    gains = {}
    for extra in ([], ["--normalized-scale", "1"]):
        result = runner.invoke(main, [*base, *extra])
        assert result.exit_code == 0, result.output
        entries = {e["name"]: e for e in json.loads(result.output)["entries"]}
        gains[len(extra)] = entries["0.weight"]["gain"]  # the stem conv, read only by its BN
    assert gains[2] == pytest.approx(2**0.5) and gains[0] == pytest.approx(2**0.5 / 4)
    result = runner.invoke(main, [*base, "--normalized-scale", "0"])
    assert result.exit_code == 2 and "normalized-scale" in result.output


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr naming the problem and the fix, exit code 2, no traceback

USER_FILE = """
import torch
from torch import nn


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(4, width)


class Inner(nn.Module):
    def forward(self, x):
        raise RuntimeError("the user's own bug")


def raising():
    return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Tanh(), Inner()))


def double():
    return nn.Sequential(nn.Linear(4, 4)).double()


def meta():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))


def not_a_model():
    return 3


def hot():
    net = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 3))
    with torch.no_grad():
        net[0].weight.mul_(40.0)
        net[2].weight.mul_(40.0)
    return net


WIDTH = 3
"""


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "helper_mod_initlab_test.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 3))\n"
    )
    (folder / "sibling.py").write_text(
        "from helper_mod_initlab_test import build\n\ndef make():\n    return build()\n"
    )
    path = folder / "user_models.py"
    path.write_text(USER_FILE)
    return path


def _bad_cases(f: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    plan = ["plan", "--example-shape", "2,4"]
    return [
        ("missing file", [*plan, "nope.py:mlp"], "no such file 'nope.py'"),
        (
            "missing module",
            [*plan, "no_such_module_xyz:mlp"],
            "no module named 'no_such_module_xyz'",
        ),
        ("no colon", [*plan, str(f)], "expected FILE.py:FUNC or MODULE:FUNC"),
        ("missing attribute", [*plan, f"{f}:nope"], "has no 'nope'; callables there:"),
        ("class needs arguments", [*plan, f"{f}:NeedsArgs"], "needs arguments (width)"),
        ("non-callable attribute", [*plan, f"{f}:WIDTH"], "WIDTH is an int, not a function"),
        (
            "factory returns no module",
            [*plan, f"{f}:not_a_model"],
            "returned an int, not an nn.Module",
        ),
        ("bad shape", ["plan", f"{f}:double", "--example-shape", "abc"], "--example-shape 'abc'"),
        (
            "forward raises",
            [*plan, f"{f}:raising"],
            "RuntimeError in module '1.1' (Inner) at user_models.py:",
        ),
        ("dtype mismatch", [*plan, f"{f}:double"], "dtype mismatch"),
        (
            "meta device",
            ["doctor", f"{f}:meta", "--data", "random", "--example-shape", "8,4", "--classes", "3"],
            "meta device",
        ),
        (
            "--out into a missing folder",
            ["init", *plan[1:], f"{f}:double", "--out", str(tmp / "missing" / "w.pt")],
            "does not exist; create it",
        ),
        (
            "--out unknown format",
            ["init", *plan[1:], f"{f}:double", "--out", str(tmp / "w.txt")],
            ".safetensors, .pt, .pth",
        ),
        (
            "--save unknown format",
            [*plan, f"{f}:double", "--save", str(tmp / "p.yaml")],
            ".toml, .json",
        ),
        ("bench --seeds 0", ["bench", "--seeds", "0"], "--seeds"),
        (
            "bench --models empty",
            ["bench", "--suite", "cifar10", "--models", ","],
            "--models is empty",
        ),
        ("doctor without FACTORY", ["doctor"], "give FACTORY"),
        (
            "doctor --data random without shape",
            ["doctor", f"{f}:hot", "--data", "random"],
            "--data random needs --example-shape",
        ),
        ("doctor --lr 0", ["doctor", f"{f}:hot", "--lr", "0"], "--lr"),
        (
            "unknown scheme",
            [*plan, f"{EXAMPLES}:mlp", "--scheme", "kaiming_norml"],
            "Did you mean 'kaiming_normal'",
        ),
    ]


def test_bad_inputs_are_one_line_on_stderr_with_exit_2(user_file: Path, tmp_path: Path):
    runner = CliRunner()
    for case, args, needle in _bad_cases(user_file, tmp_path):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (case, result.output)
        assert result.stdout == "", (case, result.stdout)
        err = result.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err, (case, err)
        assert needle in err, (case, err)
        assert "Traceback" not in result.output, case


def test_sibling_import_in_the_users_file_works(user_file: Path):
    result = CliRunner().invoke(
        main, ["plan", f"{user_file.parent / 'sibling.py'}:make", "--example-shape", "2,4"]
    )
    assert result.exit_code == 0, result.output


def test_rules_file_errors_keep_their_brackets(tmp_path: Path):
    flat = tmp_path / "flat.toml"
    flat.write_text('bias = "zeros"\n')
    result = CliRunner().invoke(
        main, ["plan", f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--rules", str(flat)]
    )
    assert result.exit_code == 2
    assert "a [rules] table" in result.stderr and "a [class_rules] table" in result.stderr


def test_internal_error_exits_3_and_debug_shows_the_traceback(monkeypatch):
    import initlab.cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(initlab.cli, "make_example", broken)
    args = ["plan", f"{EXAMPLES}:mlp", "--example-shape", "4,64"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    assert "internal error: ZeroDivisionError: a bug" in result.stderr
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, [*args, "--debug"])
    assert result.exit_code == 3 and "Traceback" in result.stderr


def test_exit_codes_are_documented():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "Exit codes: 0 success" in result.output and "3 internal error" in result.output


def test_json_writes_only_json_on_stdout(tmp_path: Path):
    out = tmp_path / "w.safetensors"
    args = ["init", f"{EXAMPLES}:mlp", "--example-shape", "4,64", "--out", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"]
    assert "saved" in result.stderr and out.is_file()


def test_doctor_examines_initlabs_init_with_the_given_optimizer(user_file: Path):
    base = ["doctor", f"{user_file}:hot", "--data", "random", "--example-shape", "64,4",
            "--classes", "3", "--steps", "2", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 1, result.output  # the factory's hot init fails a check
    d = json.loads(result.stdout)
    assert d["setup"]["optimizer"] == "SGD(lr=0.1)" and d["setup"]["steps"] == 2
    assert d["setup"]["init"].startswith("as FACTORY built it")
    assert {"model", "data", "batch", "seed", "versions"} <= set(d["setup"])
    sat = next(f for f in d["findings"] if f["check"] == "saturation")
    assert sat["severity"] == "fail" and sat["cli"] == "--scheme xavier_normal"
    result = CliRunner().invoke(
        main, [*base, "--scheme", "xavier_normal", "--optimizer", "adam", "--lr", "0.002"]
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["setup"]["optimizer"] == "Adam(lr=0.002)"
    assert d["setup"]["init"].startswith("initlab (scheme xavier_normal")
    assert next(f for f in d["findings"] if f["check"] == "saturation")["severity"] == "ok"


def test_doctor_text_shows_setup_and_the_flags_that_fix(user_file: Path):
    args = ["doctor", f"{user_file}:hot", "--data", "random", "--example-shape", "64,4",
            "--classes", "3"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "initlab doctor: Sequential" and "factory" in lines[2]
    assert "verdict: unhealthy" in result.stdout
    assert "fix with: --scheme xavier_normal" in result.stdout


def test_doctor_html_without_matplotlib_degrades(user_file: Path, tmp_path: Path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = tmp_path / "r.html"
    args = ["doctor", f"{user_file}:hot", "--data", "random", "--example-shape", "64,4",
            "--classes", "3", "--html", str(page), "--plots", str(tmp_path / "plots")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output  # the report's own verdict, not a crash
    assert "pip install initlab[plot]" in result.stderr
    text = page.read_text()
    assert "Plots left out" in text and "Run details" in text and "data:image/png" not in text
    assert "initlab doctor: Sequential" in result.stdout
