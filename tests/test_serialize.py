"""Rule sets and plans round-trip through TOML and JSON."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from initlab.errors import InitlabError
from initlab.planning import init, plan
from initlab.presets import preset_rules
from initlab.serialize import (
    load_init,
    load_rules,
    rules_from_dict,
    rules_to_dict,
    save_plan,
    save_rules,
)

RULES = {
    "*.c_proj.weight": ("normal", {"std": 0.02 / math.sqrt(4)}),
    "bias": "zeros",
    "head": ("kaiming_normal", {"gain": 1.0}),
    "0.weight": "keep",
    nn.Conv2d: ("kaiming_normal_fan_out", {"gain": math.sqrt(2)}),
    nn.Linear: "xavier_uniform",
}


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


@pytest.mark.parametrize("ext", [".toml", ".json"])
def test_rules_round_trip(tmp_path: Path, ext: str) -> None:
    path = save_rules(RULES, tmp_path / f"init{ext}", meta={"seed": 3, "preset": "gpt2"})
    loaded, meta = load_init(path)
    assert loaded == RULES
    assert list(loaded) == list(RULES)  # order kept: within a kind the last rule wins
    assert meta == {"format": 1, "seed": 3, "preset": "gpt2"}
    assert load_rules(path) == RULES


@pytest.mark.parametrize("ext", [".toml", ".json"])
def test_preset_rules_round_trip_and_give_the_same_weights(tmp_path: Path, ext: str) -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 10))
    x = torch.tensor([[1, 2, 3]])
    rules = preset_rules("olmo2", model)
    init(model, example=x, rules=rules, seed=5)
    first = [p.detach().clone() for p in model.parameters()]
    init(model, example=x, rules=load_rules(save_rules(rules, tmp_path / f"r{ext}")), seed=5)
    for a, b in zip(first, model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("ext", [".toml", ".json"])
def test_plan_round_trip_reproduces_weights(tmp_path: Path, ext: str) -> None:
    if ext == ".toml":
        pytest.importorskip("tomli_w", reason="writing a plan as TOML needs the io extra")
    model = net()
    x = torch.randn(2, 8)
    p = init(
        model, "xavier_normal", example=x, seed=7, rules={"2.bias": ("constant", {"val": 0.5})}
    )
    first = [t.detach().clone() for t in model.parameters()]
    rules, meta = load_init(save_plan(p, tmp_path / f"plan{ext}"))
    assert meta["seed"] == 7 and meta["scheme"] == "xavier_normal" and meta["kind"] == "plan"
    assert rules["0.weight"] == ("xavier_normal", {"gain": pytest.approx(5 / 3)})
    assert rules["2.bias"] == ("constant", {"val": 0.5, "gain": 1.0})
    q = init(net(), example=x, rules=rules, seed=meta["seed"])
    again = init(model, meta["scheme"], example=x, rules=rules, seed=meta["seed"])
    for a, b in zip(first, model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [e.std for e in q] == [e.std for e in again]


def test_callables_and_predicates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InitlabError, match="callable"):
        save_rules({"x": lambda t, g: t}, tmp_path / "r.json")
    with pytest.raises(InitlabError, match="predicate"):
        save_rules({lambda m: True: "zeros"}, tmp_path / "r.json")
    lstm = nn.LSTM(4, 8)
    with pytest.raises(InitlabError, match="callable"):
        save_rules(preset_rules("lstm-forget-bias", lstm), tmp_path / "r.json")
    p = init(lstm, example=torch.randn(3, 1, 4), rules=preset_rules("lstm-forget-bias", lstm))
    save_plan(p, tmp_path / "p.json")
    with pytest.raises(InitlabError, match="bias_ih_l0 was drawn by a callable"):
        load_rules(tmp_path / "p.json")


def test_local_class_is_refused(tmp_path: Path) -> None:
    class Local(nn.Module):
        pass

    with pytest.raises(InitlabError, match="inside a function"):
        save_rules({Local: "zeros"}, tmp_path / "r.json")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InitlabError, match="extension"):
        save_rules({"bias": "zeros"}, tmp_path / "r.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InitlabError, match="not valid JSON"):
        load_rules(bad)
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(InitlabError, match="not an initlab rules file"):
        load_rules(other)
    with pytest.raises(InitlabError, match=r"no nn\.Module class"):
        rules_from_dict({"class_rules": {"torch.nn.Nope": "zeros"}})
    with pytest.raises(InitlabError, match="table with 'scheme'"):
        rules_from_dict({"rules": {"bias": {"std": 1}}})


def test_missing_tomli_w_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tomli_w", None)  # import fails
    with pytest.raises(InitlabError, match=r"pip install initlab\[io\]"):
        save_plan(plan(net(), example=torch.randn(2, 8)), tmp_path / "p.toml")
    save_rules({"bias": "zeros"}, tmp_path / "r.toml")  # rule files need no extra


def test_rules_to_dict_class_paths() -> None:
    class_rules = rules_to_dict({nn.Linear: "zeros", nn.modules.conv.Conv2d: "ones"})["class_rules"]
    assert class_rules == {"torch.nn.Linear": "zeros", "torch.nn.Conv2d": "ones"}
    assert rules_from_dict({"class_rules": {"torch.nn.modules.linear.Linear": "zeros"}}) == {
        nn.Linear: "zeros"
    }


def test_plan_toml_has_no_nulls(tmp_path: Path) -> None:
    pytest.importorskip("tomli_w", reason="TOML writing needs the io extra")
    p = plan(net(), example=torch.randn(2, 8))
    text = save_plan(p, tmp_path / "p.toml").read_text()
    assert "[[entries]]" in text and "null" not in text


HAND_WRITTEN = {
    ".toml": """
[rules]
"*.0.weight" = "xavier_normal"
bias = "zeros"
head = ["normal", {std = 0.01}]
"2.bias" = "keep"
"1.*" = ["orthogonal"]

[class_rules]
Conv2d = { scheme = "kaiming_normal_fan_out", gain = 1.5 }
"torch.nn.Embedding" = ["normal", { std = 0.02 }]
""",
    ".json": """
{"rules": {"*.0.weight": "xavier_normal", "bias": "zeros", "head": ["normal", {"std": 0.01}],
           "2.bias": "keep", "1.*": ["orthogonal"]},
 "class_rules": {"Conv2d": {"scheme": "kaiming_normal_fan_out", "gain": 1.5},
                 "torch.nn.Embedding": ["normal", {"std": 0.02}]}}
""",
}
HAND_WRITTEN_RULES = {
    "*.0.weight": "xavier_normal",
    "bias": "zeros",
    "head": ("normal", {"std": 0.01}),
    "2.bias": "keep",
    "1.*": "orthogonal",
    nn.Conv2d: ("kaiming_normal_fan_out", {"gain": 1.5}),
    nn.Embedding: ("normal", {"std": 0.02}),
}


@pytest.mark.parametrize("ext", [".toml", ".json"])
@pytest.mark.filterwarnings("ignore:initlab. rule")
def test_every_documented_value_form_loads_and_round_trips(tmp_path: Path, ext: str) -> None:
    """README's rules-file forms: a name, "keep", a table with 'scheme', the (name, kwargs) pair
    as a 2-item list (and a 1-item list), a bare torch.nn class name or a dotted class path."""
    path = tmp_path / f"hand{ext}"
    path.write_text(HAND_WRITTEN[ext])
    loaded = load_rules(path)
    assert loaded == HAND_WRITTEN_RULES
    again = load_rules(save_rules(loaded, tmp_path / f"again{ext}"))
    assert again == HAND_WRITTEN_RULES
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    p = plan(model, example=torch.randn(2, 8), rules=loaded)
    assert p["2.weight"].scheme == "normal" and p["2.bias"].scheme == "keep"


def test_bad_rule_values_say_which_forms_exist(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\nbias = ["normal", {scheme = "x"}]\n')
    with pytest.raises(InitlabError, match="reserved"):
        load_rules(bad)
    bad.write_text("[rules]\nbias = 3\n")
    with pytest.raises(InitlabError, match=r"\[name, options\] list"):
        load_rules(bad)
    bad.write_text('[class_rules]\nNope = "zeros"\n')
    with pytest.raises(InitlabError, match=r"torch\.nn has no module class"):
        load_rules(bad)
