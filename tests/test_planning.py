"""Plans: defaults, rules and precedence, seeding, tied/frozen/meta parameters, transactions."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn

import initlab
from initlab.errors import InitlabError
from initlab.planning import HEAD_GAIN, TIED_HEAD_GAIN, init, plan
from tests.models import (
    Frozen,
    FunctionalMLP,
    ResNet,
    TiedLM,
    cnn_bn,
    encoder,
    module_mlp,  # fmt: skip
)

X16 = torch.randn(4, 16)


def test_defaults_gains_from_activations():
    p = plan(FunctionalMLP(), example=X16)
    assert p["fc1.weight"].gain == pytest.approx(5 / 3)
    assert p["fc2.weight"].gain == pytest.approx(initlab.gain("gelu"))
    assert p["fc3.weight"].gain == pytest.approx(math.sqrt(2))
    assert p["out.weight"].role == "head" and p["out.weight"].gain == HEAD_GAIN
    assert p["fc1.bias"].scheme == "zeros"
    assert p["fc1.weight"].std == pytest.approx(5 / 3 / 4)  # fan_in 16


def test_norms_and_grouped_conv_fans():
    p = plan(cnn_bn(), example=torch.randn(2, 3, 8, 8))
    assert (p["1.weight"].scheme, p["1.bias"].scheme) == ("ones", "zeros")
    e = p["3.weight"]  # Conv2d(8, 16, 3, groups=2)
    assert (e.fan_in, e.fan_out) == (36, 72) and e.gain == pytest.approx(
        math.sqrt(2) / 4
    )  # ReLU, BN reads it
    assert plan(cnn_bn(), example=torch.randn(2, 3, 8, 8), normalized_scale=1)[
        "3.weight"
    ].gain == pytest.approx(math.sqrt(2))


def test_attention_chunks_and_residual_roles():
    p = plan(encoder(), "xavier_uniform", example=torch.randn(2, 5, 16))
    e = p["layers.0.self_attn.in_proj_weight"]
    assert (e.fan_in, e.fan_out, e.chunks) == (16, 16, 3)
    assert p["layers.0.self_attn.out_proj.weight"].role == "residual_out"
    assert p["layers.0.linear2.weight"].role == "residual_out"
    assert p["layers.0.linear1.weight"].activation == "relu"


def test_apply_matches_plan_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10))
    p = init(model, example=torch.randn(2, 400), seed=1)
    w = model[0].weight.detach()
    n = w.numel()
    target = p["0.weight"].std
    assert abs(w.std().item() / target - 1) <= 5 * math.sqrt(2 / (4 * n))  # normal kurtosis 3
    assert torch.count_nonzero(model[0].bias) == 0


def test_rules_precedence_and_values():
    model = FunctionalMLP()
    model.fc2.special_init = True
    rules = {
        "head": "zeros",  # role
        nn.Linear: ("normal", {"std": 0.5}),  # class beats role
        (lambda m: getattr(m, "special_init", False)): "orthogonal",  # predicate
        "fc3.w*": "xavier_normal",  # name beats everything
        "bias": ("constant", {"val": 0.1}),
    }
    p = plan(model, example=X16, rules=rules)
    assert p["out.weight"].scheme == "normal"  # class rule (kind 2) beats role rule (kind 4)
    assert p["fc2.weight"].scheme == "normal"  # class beats predicate
    assert p["fc3.weight"].scheme == "xavier_normal" and p["fc3.bias"].scheme == "constant"
    assert p["fc2.bias"].scheme == "constant"  # module rules skip biases
    p2 = plan(
        model,
        example=X16,
        rules={"head": "zeros", (lambda m: getattr(m, "special_init", False)): "orthogonal"},
    )
    assert p2["out.weight"].scheme == "zeros" and p2["fc2.weight"].scheme == "orthogonal"
    assert p2["fc2.weight"].source.startswith("rule")


def test_callable_rule_and_gain_override():
    def fill(t, g):
        t.fill_(0.25)

    model = FunctionalMLP()
    p = init(
        model,
        example=X16,
        rules={"fc1.weight": fill, "fc2.weight": ("kaiming_normal", {"gain": 3.0})},
    )
    assert torch.all(model.fc1.weight == 0.25)
    assert p["fc2.weight"].gain == 3.0


def test_rule_matching_nothing_warns_and_bad_rules_raise():
    with pytest.warns(UserWarning, match="matched no parameter"):
        plan(FunctionalMLP(), example=X16, rules={"nothing.*": "zeros"})
    with pytest.raises(InitlabError, match="Did you mean 'xavier_uniform'"):
        plan(FunctionalMLP(), example=X16, rules={"head": "xavier_unifrom"})
    with pytest.raises(InitlabError, match="Did you mean 'kaiming_normal'"):
        plan(FunctionalMLP(), "kaiming_norml", example=X16)
    with pytest.raises(InitlabError, match="no option"):
        plan(FunctionalMLP(), example=X16, rules={"head": ("normal", {"sd": 1})})
    with pytest.raises(InitlabError, match="needs fans"):
        plan(FunctionalMLP(), example=X16, rules={"bias": "kaiming_normal"})


def test_head_scale_brings_initial_loss_near_log_classes():
    torch.manual_seed(0)
    model = module_mlp()
    x = torch.randn(256, 16)
    y = torch.randint(0, 5, (256,))
    init(model, example=x, head_scale=0.01)
    loss = nn.functional.cross_entropy(model(x), y).item()
    assert abs(loss - math.log(5)) < 0.01


def test_same_seed_same_weights_whatever_creation_order():
    class A(nn.Module):
        def __init__(self, flip: bool) -> None:
            super().__init__()
            if flip:  # create (and so draw torch's defaults) in the other order
                self.b = nn.Linear(8, 8)
                self.a = nn.Linear(4, 8)
            else:
                self.a = nn.Linear(4, 8)
                self.b = nn.Linear(8, 8)

        def forward(self, x):
            return self.b(self.a(x).relu())

    x = torch.randn(2, 4)
    m1, m2 = A(False), A(True)
    init(m1, example=x, seed=7)
    init(m2, example=x, seed=7)
    assert torch.equal(m1.a.weight, m2.a.weight) and torch.equal(m1.b.weight, m2.b.weight)
    m3 = A(False)
    init(m3, example=x, seed=8)
    assert not torch.equal(m1.a.weight, m3.a.weight)


def test_no_global_rng_use():
    model = FunctionalMLP()
    state = torch.get_rng_state()
    init(model, example=X16)
    assert torch.equal(state, torch.get_rng_state())


def test_tied_parameters_drawn_once():
    model = TiedLM()
    p = init(model, example=torch.randint(0, 20, (2, 5)))
    names = [e.name for e in p]
    assert "head.weight" not in names and p["emb.weight"].tied == ("head.weight",)
    assert set(p["emb.weight"].roles) >= {"head", "embedding"}
    assert model.head.weight is model.emb.weight
    assert p["emb.weight"].std == pytest.approx(TIED_HEAD_GAIN * 16**-0.5)
    assert p["lstm.weight_hh_l0"].scheme == "orthogonal" and p["lstm.weight_ih_l0"].chunks == 4


def test_frozen_left_alone_unless_asked():
    model = Frozen()
    before = model.backbone[0].weight.detach().clone()
    p = init(model, example=torch.randn(2, 8))
    assert torch.equal(before, model.backbone[0].weight) and p["backbone.0.weight"].scheme == "keep"
    init(model, example=torch.randn(2, 8), include_frozen=True)
    assert not torch.equal(before, model.backbone[0].weight)
    assert not model.backbone[0].weight.requires_grad


def test_meta_model_materialized_bit_identical():
    with torch.device("meta"):
        meta = TiedLM()
    real = TiedLM()
    x = torch.randint(0, 20, (2, 5))
    init(meta, example=x, seed=3)
    init(real, example=x, seed=3)
    for (n, a), (_, b) in zip(meta.named_parameters(), real.named_parameters(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b), n
    assert meta.head.weight is meta.emb.weight  # still tied after materializing


def test_transactional_on_fault():
    model = ResNet()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def boom(t, g):
        raise RuntimeError("injected")

    p = plan(model, example=torch.randn(2, 3, 8, 8), rules={"fc.weight": boom})
    with pytest.raises(RuntimeError, match="injected"):
        p.apply()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training


def test_transactional_meta_fault_restores_meta():
    with torch.device("meta"):
        model = FunctionalMLP()
    p = plan(model, example=X16, rules={"out.weight": lambda t, g: 1 / 0})
    with pytest.raises(ZeroDivisionError):
        p.apply()
    assert all(q.device.type == "meta" for q in model.parameters())


def test_to_dict_is_json_and_str_is_a_table():
    p = plan(ResNet(), example=torch.randn(2, 3, 8, 8))
    d = json.loads(json.dumps(p.to_dict()))
    assert d["residual"] == {"branches": 3, "layers_per_branch": 2}
    assert {
        "name",
        "shape",
        "role",
        "activation",
        "fan_in",
        "fan_out",
        "scheme",
        "gain",
        "std",
    } <= set(d["entries"][0])
    text = str(p)
    assert "blocks.0.conv2.weight" in text and "residual_out" in text


def test_residual_out_zeros_rule():
    model = ResNet()
    plain = init(copy.deepcopy(model), example=torch.randn(2, 3, 8, 8)).model  # same seed
    init(model, example=torch.randn(2, 3, 8, 8), rules={"residual_out": "zeros"})
    assert all(torch.count_nonzero(model.blocks[i].conv2.weight) == 0 for i in range(3))
    # the projection shortcut is no branch end: it keeps the plain plan's draw, bit for bit
    assert torch.equal(model.blocks[2].shortcut.weight, plain.blocks[2].shortcut.weight)


def test_plan_replace_recomputes_std():
    p = plan(FunctionalMLP(), example=X16)
    q = p.replace("fc1.weight", gain=1.0)
    assert q["fc1.weight"].std == pytest.approx(0.25) and p["fc1.weight"].gain == pytest.approx(
        5 / 3
    )


def test_unknown_option_is_clear():
    with pytest.raises(InitlabError, match="unknown option"):
        plan(FunctionalMLP(), example=X16, sed=1)


def test_bf16_model():
    model = FunctionalMLP().to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init(model, "orthogonal", example=X16.to(torch.bfloat16))
    w = model.fc2.weight.float()
    assert torch.allclose(w @ w.T, torch.eye(32) * initlab.gain("gelu") ** 2, atol=0.1)


def test_structured_schemes_work_per_group_through_the_plan() -> None:
    conv = nn.Conv2d(4, 8, 1, groups=2)  # two (4 out x 2 in) matrices
    p = initlab.init(conv, scheme="orthogonal", example=torch.zeros(1, 4, 5, 5), head_scale=1.0)
    assert p["weight"].receptive_field == 1 and p["weight"].fans.fan_in == 2
    w = conv.weight.detach().reshape(8, 2)
    for g in range(2):  # each group's block has orthonormal columns (one (8 x 2) would not)
        block = w[4 * g : 4 * g + 4]
        assert torch.allclose(block.T @ block, torch.eye(2), atol=1e-5)
    conv3 = nn.Conv2d(4, 8, 3, groups=4)
    assert (
        initlab.plan(conv3, scheme="orthogonal", example=torch.zeros(1, 4, 5, 5))[
            "weight"
        ].receptive_field
        == 9
    )
    depthwise = nn.Conv2d(4, 4, 3, groups=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1 -> 1 per group: no tied-units warning
        initlab.init(depthwise, scheme="ZerO", example=torch.zeros(1, 4, 5, 5), head_scale=1.0)
    expected = torch.zeros(4, 1, 3, 3)
    expected[:, 0, 1, 1] = 1.0
    assert torch.equal(depthwise.weight.detach(), expected)


def test_zero_warns_when_it_widens_one_channel() -> None:
    stem = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    with pytest.warns(UserWarning, match="widens 1 input to 8 outputs"):
        initlab.init(stem, scheme="ZerO", example=torch.zeros(1, 1, 5, 5))


class _PreNormBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = (
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


def _prenorm_mlp(blocks: int, width: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), *[_PreNormBlock(width) for _ in range(blocks)],
                         nn.LayerNorm(width), nn.Linear(width, 10))  # fmt: skip


def test_residual_branch_ends_are_scaled_by_inverse_sqrt_depth_with_norms() -> None:
    x = torch.rand(256, 64)
    net = _prenorm_mlp(20)
    p = initlab.plan(net, example=x[:8])
    assert p.graph.residual_depth == (20, 2)
    assert p["3.fc2.weight"].gain == pytest.approx(20**-0.5)
    assert p["3.fc1.weight"].gain == pytest.approx(math.sqrt(2))  # inside: unchanged
    assert "20 residual branch ends at gain x L^-1/2 = 0.2236" in str(p)
    plain = initlab.plan(net, example=x[:8], residual_scale=False)
    assert plain["3.fc2.weight"].gain == pytest.approx(1.0)
    assert plain["3.fc2.weight"].source == "default" and "L^-1/2" not in str(plain)
    # the stream stays bounded: (1 + 1/L)^L < e, against 1 + L without the scaling
    p.apply()
    with torch.no_grad():
        scaled = net[:-2](x).std()
    plain.apply()
    with torch.no_grad():
        unscaled = net[:-2](x).std()
        stem_out = net[0](x).std()
    assert float(scaled) < 3 * float(stem_out) < float(unscaled)
    rule = initlab.plan(net, example=x[:8], rules={"residual_out": "kaiming_normal"})
    assert rule["3.fc2.weight"].gain == pytest.approx(1.0)  # a rule takes the plain gain


def test_residual_without_norms_takes_fixups_rule() -> None:
    from initlab.bench.models import residual_mlp

    x = torch.rand(256, 64)
    net = residual_mlp(64, 10, blocks=20, width=128)
    p = initlab.plan(net, example=x[:8])
    assert p["blocks.3.fc2.weight"].scheme == "zeros"  # branch end: zero
    assert p["blocks.3.fc1.weight"].gain == pytest.approx(math.sqrt(2) * 20**-0.5)  # L^-1/(2m-2)
    assert p["stem.weight"].gain == pytest.approx(1.0)
    assert p["head.weight"].gain == pytest.approx(HEAD_GAIN)
    plain = initlab.plan(net, example=x[:8], residual_scale=False)
    assert plain["blocks.3.fc2.weight"].scheme == "kaiming_normal"
    assert plain["blocks.3.fc1.weight"].gain == pytest.approx(math.sqrt(2))
    p.apply()
    with torch.no_grad():  # every branch starts at zero: the net is head(stem(x))
        assert torch.allclose(net(x), net.head(net.stem(x)), atol=1e-6)


def _zero_width_net() -> nn.Sequential:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own init warns on the empty layers
        return nn.Sequential(
            nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 0), nn.ReLU(), nn.Linear(0, 3)
        )


@pytest.mark.parametrize("scheme", ["kaiming_normal", "orthogonal", "xavier_uniform", "ZerO"])
def test_zero_width_layers_are_skipped_with_a_note(scheme: str) -> None:
    net = _zero_width_net()
    p = init(net, scheme, example=torch.randn(2, 4), seed=0)
    for name in ("2.weight", "2.bias", "4.weight"):
        assert p[name].scheme == "keep" and "zero elements" in p[name].note, name
    assert p["0.weight"].scheme != "keep"
    assert "zero elements" in str(p)
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_zero_width_layers_of_a_meta_model_are_materialized() -> None:
    with torch.device("meta"):
        net = _zero_width_net()
    init(net, example=torch.randn(2, 4), seed=0, device="cpu")
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_structured_schemes_through_the_plan_keep_float64_precision() -> None:
    net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16)).double()
    init(net, "orthogonal", example=torch.randn(2, 32, dtype=torch.float64), seed=0)
    w = net[0].weight.detach()
    gram = w.T @ w / w.T.matmul(w).diagonal().mean()
    assert (gram - torch.eye(32, dtype=torch.float64)).abs().max().item() < 1e-13


def test_lazy_modules_get_a_clear_error_and_the_model_is_left_as_it_was():
    model = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 3))
    before = {k: v.clone() for k, v in model[2].state_dict().items()}
    x = torch.randn(4, 10)
    for call in (lambda: initlab.init(model, example=x), lambda: initlab.lsuv(model, x)):
        with pytest.raises(InitlabError, match=r"lazy.*run one forward pass first"):
            call()
    assert all(torch.equal(before[k], v) for k, v in model[2].state_dict().items())
    assert nn.parameter.is_lazy(model[0].weight)  # nothing shaped it behind the user's back
    model(x)
    assert initlab.init(model, example=x)["0.weight"].fan_in == 10


def test_torch_style_kaiming_options_get_the_initlab_way_in_the_error():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(InitlabError, match=r"unknown option.*'kaiming_normal_fan_out'"):
        initlab.init(net, "kaiming_normal", example=torch.randn(2, 4), mode="fan_out")
    with pytest.raises(InitlabError, match=r"unknown option") as info:
        initlab.init(net, "normal", example=torch.randn(2, 4), mode="fan_out")
    assert "kaiming_normal_fan_out" not in str(info.value)  # the hint is for Kaiming only
    p = initlab.init(net, "kaiming_normal_fan_out", example=torch.randn(2, 4))
    assert p["0.weight"].std == pytest.approx(2**0.5 / 8**0.5)  # ReLU gain / sqrt(fan_out)
