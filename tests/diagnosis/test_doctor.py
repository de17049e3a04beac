"""Tests of the doctor: Karpathy's makemore story, depth, non-intrusiveness, per-call statistics."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.diagnosis import Finding, Report, doctor
from initlab.diagnosis.checks import CHECKS
from initlab.diagnosis.probes import Probe, tensor_stats
from initlab.graph import trace

models = pytest.importorskip("initlab.bench.models")


# --------------------------------------------------------------------------- makemore (part 3)


@pytest.fixture(scope="module")
def makemore_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = pytest.importorskip("initlab.bench.data")
    try:
        ds = data.char_dataset(data.names(), block_size=3, seed=42)
    except ModuleNotFoundError:
        pytest.skip("the 'names' package is not installed")
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(ds.x_train), (512,), generator=g)
    return ds.x_train[idx], ds.y_train[idx]


def test_makemore_naive_is_flagged(makemore_batch):
    x, y = makemore_batch
    report = doctor(models.makemore_naive_init_(models.MakemoreMLP()), x, y)
    il = report.measurements["initial_loss"]
    assert 20 < il["observed"] < 32  # the lecture: ~27 (28.49 on its first batch)
    assert il["expected"] == pytest.approx(math.log(27))
    assert report.severity("initial_loss") == "fail"
    assert report.severity("saturation") == "fail"
    sat = report.finding("saturation").value
    # pre-activation std sqrt(30 + 1): 2 Phi(-atanh(0.97) / 5.57) = 0.71
    assert 0.6 < sat < 0.8
    assert "head" in report.finding("initial_loss").message
    assert "expected 3.3" in report.finding("initial_loss").message
    assert not report.ok


def test_makemore_fixed_passes(makemore_batch):
    x, y = makemore_batch
    report = doctor(
        models.makemore_fixed_init_(models.MakemoreMLP()),
        x,
        y,
        steps=20,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
    )
    assert report.measurements["initial_loss"]["observed"] == pytest.approx(math.log(27), abs=0.1)
    assert report.problems == [], str(report)
    assert report.severity("saturation") == "ok"
    assert report.finding("saturation").value < 0.1  # ~5% with W1*0.2


def test_makemore_only_head_fixed_still_saturated(makemore_batch):
    x, y = makemore_batch
    model = models.makemore_fixed_init_(models.MakemoreMLP(), fix_tanh=False)
    report = doctor(model, x, y)
    assert report.severity("initial_loss") == "ok"
    assert report.severity("saturation") == "fail"


# --------------------------------------------------------------------------- depth


def _deep_relu(depth: int = 30, width: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    return models.plain_mlp(32, 10, depth=depth, width=width)


def test_deep_relu_default_init_vanishes_and_kaiming_fixes_it():
    net = _deep_relu()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    report = doctor(net, x, y, jacobian=False)
    assert report.severity("vanishing_gradients") == "fail"
    # the activations settle at a bias-dominated fixed point (ratio ~0.1); the gradients vanish
    assert "kaiming_normal" in report.finding("vanishing_gradients").message
    initlab.init(net, "kaiming_normal", example=x)
    report = doctor(net, x, y, jacobian=False)
    for check in (
        "vanishing_activations",
        "vanishing_gradients",
        "exploding_activations",
        "exploding_gradients",
        "nonfinite",
    ):
        assert report.severity(check) == "ok", str(report)


def test_exploding_is_flagged():
    torch.manual_seed(0)
    net = models.plain_mlp(32, 10, depth=12, width=64)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(5.0)  # RMS x sqrt(25/6) per layer
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    report = doctor(net, x, jacobian=False)
    assert report.severity("exploding_activations") == "fail"


# --------------------------------------------------------------------------- non-intrusive


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.fc2(self.drop(F.relu(self.bn(self.fc1(x))))))


def _state(model: nn.Module) -> dict:
    return {
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {
            n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()
        },
        "grad_ids": {n: id(p.grad) for n, p in model.named_parameters()},
        "param_ids": {n: id(p) for n, p in model.named_parameters()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for n, m in model.named_modules()
        },
    }


def _same(a: dict, b: dict) -> None:
    assert a["values"].keys() == b["values"].keys()
    for k in a["values"]:
        assert torch.equal(a["values"][k], b["values"][k]), k
    for k in a["grads"]:
        assert (a["grads"][k] is None) == (b["grads"][k] is None), k
        if a["grads"][k] is not None:
            assert torch.equal(a["grads"][k], b["grads"][k]), k
    for key in ("grad_ids", "param_ids", "flags", "modes", "hooks"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("train", [True, False])
def test_doctor_leaves_model_exactly_as_it_was(train: bool):
    torch.manual_seed(0)
    net = _Net().train(train)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    F.cross_entropy(net(x), y).backward()  # existing grads must survive
    net.fc2.weight.grad = None  # and a missing one must stay missing
    handle = net.fc1.register_forward_hook(lambda m, i, o: None)
    rng_before = torch.get_rng_state()
    before = _state(net)
    report = doctor(net, x, y, steps=2, data=[(x, y)] * 3, batches=2)
    _same(before, _state(net))
    assert torch.equal(rng_before, torch.get_rng_state())
    assert isinstance(report, Report)
    handle.remove()


def test_doctor_restores_when_deepcopy_fails():
    class NoCopy(nn.Sequential):
        def __deepcopy__(self, memo):
            raise TypeError("no copies")

    torch.manual_seed(0)
    net = NoCopy(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    before = _state(net)
    with pytest.warns(UserWarning, match="deepcopy failed"):
        doctor(net, x, y)
    _same(before, _state(net))


# --------------------------------------------------------------------------- per-call statistics


def _oracle_relu(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(activation, gradient of sum(act**2)/2 w.r.t. the activation) by plain autograd."""
    h = F.relu(x @ w.T + b).detach()
    return h, h


def test_inplace_relu_statistics_match_plain_autograd():
    torch.manual_seed(0)
    lin = nn.Linear(6, 20)
    net = nn.Sequential(lin, nn.ReLU(inplace=True))
    x = torch.randn(50, 6)
    with Probe(net, trace(net, x)) as probe:
        out = net(x)
        (out.pow(2).sum() / 2).backward()
    layer, act = probe.records
    pre = (x @ lin.weight.T + lin.bias).detach()
    h, grad = _oracle_relu(x, lin.weight, lin.bias)
    assert layer.out.mean == pytest.approx(float(pre.mean()), rel=1e-5)  # measured before relu_
    assert layer.out.std == pytest.approx(float(pre.std()), rel=1e-5)
    assert act.out.mean == pytest.approx(float(h.mean()), rel=1e-5)
    assert act.out.std == pytest.approx(float(h.std()), rel=1e-5)
    assert act.grad is not None and act.grad.rms == pytest.approx(
        float(grad.pow(2).mean().sqrt()), rel=1e-5
    )
    dead = float((h <= 0).all(dim=0).float().mean())
    assert act.out.dead_frac == dead


class _Reuse(nn.Module):
    """One ReLU module used twice, and a functional tanh: three activation calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.a(x))
        h = self.act(self.b(h) * 10.0)
        return self.head(torch.tanh(h))


def test_reused_module_and_functional_activation_get_one_record_per_call():
    torch.manual_seed(0)
    net = _Reuse()
    x = torch.randn(40, 4)
    report = doctor(net, x, jacobian=False)
    acts = report.measurements["activations"]
    assert [(r["name"], r["act"]) for r in acts] == [
        ("act#0", "relu"),
        ("act#1", "relu"),
        ("b/tanh", "tanh"),
    ]
    with torch.no_grad():
        h1 = F.relu(net.a(x))
        h2 = F.relu(net.b(h1) * 10.0)
    assert acts[0]["std"] == pytest.approx(float(h1.std()), rel=1e-5)
    assert acts[1]["std"] == pytest.approx(float(h2.std()), rel=1e-5)
    assert acts[2]["mean"] == pytest.approx(float(torch.tanh(h2).mean()), rel=1e-5)
    assert acts[0]["after"] == "a" and acts[1]["after"] == "b"
    assert all(r.get("grad_rms") is not None for r in acts)


def test_no_full_backward_hooks_and_hooks_removed():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    x = torch.randn(8, 4)
    with Probe(net, trace(net, x)):
        assert all(not m._backward_hooks for m in net.modules())
        net(x).sum().backward()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_nonfinite_is_reported_not_dropped():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    report = doctor(net, x, y, jacobian=False)
    assert report.severity("nonfinite") == "fail"
    s = tensor_stats(torch.tensor([1.0, float("inf"), float("nan"), 3.0]))
    assert s.nonfinite == 2 and s.mean == 2.0


def test_sigmoid_saturation_uses_distance_from_bounds():
    s = tensor_stats(torch.tensor([0.001, 0.5, 0.999, 0.2]), act="sigmoid")
    assert s.saturated_frac == 0.5


# --------------------------------------------------------------------------- report


def test_report_dict_json_text_plots_html(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5))
    x, y = torch.randn(64, 8), torch.randint(0, 5, (64,))
    data = [(torch.randn(64, 8), torch.randint(0, 5, (64,))) for _ in range(3)]
    report = doctor(net, x, y, data=data, steps=3, batches=3)
    d = report.to_dict()
    json.dumps(d)  # JSON-safe
    assert set(d["initial_loss"]) >= {"observed", "expected"}
    for row in d["layers"]:
        assert set(row) >= {
            "name",
            "act_mean",
            "act_std",
            "saturated_frac",
            "dead_frac",
            "grad_norm",
            "grad_to_data",
            "update_to_data",
        }
    assert {f["check"] for f in d["findings"]} <= set(CHECKS)
    assert all(set(f) >= {"check", "severity", "message", "layer"} for f in d["findings"])
    assert d["initial_loss"]["observed_se"] is not None  # a band over the batches
    assert d["jacobian"]["mean_sq"] > 0
    assert all(len(p["update_to_data"]) == 3 for p in d["params"])
    text = str(report)
    assert "initial loss" in text and "tanh" in text and "grad:data" in text
    pytest.importorskip("matplotlib")
    paths = report.plot(tmp_path)
    assert {p.name for p in paths} == {
        "doctor_activations.png",
        "doctor_gradients.png",
        "doctor_grad_data.png",
        "doctor_update_data.png",
        "doctor_loss.png",
    }
    assert all(p.stat().st_size > 1000 for p in paths)
    page = report.save_html(tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "<table class='grid'>" in page


def test_update_ratio_is_the_true_update_with_adam():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    w0 = net[0].weight.detach().clone()
    report = doctor(
        net, x, y, steps=1, optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-3), jacobian=False
    )
    # Adam's first step moves every element by lr (m/sqrt(v) = sign(g)): ||dW|| = lr sqrt(n)
    row = next(p for p in report.measurements["params"] if p["name"] == "0.weight")
    expected = 1e-3 * math.sqrt(w0.numel()) / float(w0.norm())
    assert row["update_to_data"][0] == pytest.approx(expected, rel=1e-3)


def test_jacobian_of_an_orthogonal_linear_map_is_isometric():
    net = nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        net.weight.copy_(
            torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0]
        )
    report = doctor(net, torch.randn(8, 16), None)
    jac = report.measurements["jacobian"]
    # ||Q v||^2 = ||v||^2 exactly, so the Hutchinson estimate is exact; sigma_max = 1
    assert jac["mean_sq"] == pytest.approx(1.0, rel=1e-5)
    assert jac["sigma_max"] == pytest.approx(1.0, rel=1e-4)
    assert report.severity("isometry") == "ok"


def test_jacobian_of_a_fresh_batchnorm_net_reads_the_batch_not_the_placeholders():
    """A conv before a BatchNorm computes the same function at any scale; before training, eval
    mode would divide by the placeholder variance 1 and shrink the signal by the conv's scale.
    The doctor fills those statistics from the example on its copy: the Jacobian does not move
    with the scale, and the user's running statistics stay untouched."""

    def net(scale: float) -> nn.Sequential:
        torch.manual_seed(0)
        m = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
                            for _ in range(4)], nn.Flatten())  # fmt: skip
        with torch.no_grad():
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    conv.weight.mul_(scale)
        return m

    x = torch.randn(32, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    small, plain = net(0.25), net(1.0)  # eval mode with placeholders: 0.25^8 = 1.5e-5 apart
    means = [doctor(m, x, None, seed=0).measurements["jacobian"]["mean_sq"] for m in (small, plain)]
    assert means[0] == pytest.approx(means[1], rel=0.02)  # BN eps: ~1e-2 relative at 0.25x
    for bn in small.modules():
        if isinstance(bn, nn.BatchNorm2d):
            assert int(bn.num_batches_tracked) == 0 and float(bn.running_var.sum()) == 4.0


def test_residual_signal_propagation():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(F.relu(self.fc1(x)))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), Block(), Block(), nn.Linear(16, 3))
    report = doctor(net, torch.randn(64, 8), jacobian=False)
    res = report.measurements["residual"]
    assert [r["name"] for r in res] == ["1.fc2/+skip", "2.fc2/+skip"]
    x = torch.randn(64, 8)
    report = doctor(net, x, jacobian=False)
    out = net[1](net[0](x)).detach()
    assert report.measurements["residual"][0]["avg_channel_var"] == pytest.approx(
        float(out.var(dim=0, unbiased=False).mean()), rel=1e-5
    )


def test_finding_is_frozen_and_exported():
    f = Finding("saturation", "warn", "m")
    with pytest.raises(AttributeError):
        f.severity = "ok"  # type: ignore[misc]


def test_suggested_fix_clears_makemore(makemore_batch):
    x, y = makemore_batch
    model = models.makemore_naive_init_(models.MakemoreMLP())
    initlab.init(model, "kaiming_normal", example=x, head_scale=0.01)  # the finding's fix
    report = doctor(model, x, y, jacobian=False)
    assert report.severity("initial_loss") == "ok"
    assert report.severity("saturation") == "ok"  # ~19%: Kaiming's tanh gain 5/3


def test_attention_entropy_and_logit_scale_match_torch():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    q = torch.randn(3, 7, 16)
    with torch.no_grad():
        _, w = mha(q, q, q, need_weights=True, average_attn_weights=False)
    from initlab.diagnosis.probes import attention_stats

    stats = attention_stats(mha, q, q)
    entropy = float(-(w * w.log()).sum(-1).mean())
    assert stats["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert stats["max_entropy"] == pytest.approx(math.log(7))
    u = F.normalize(q, dim=-1)
    cos = u @ u.transpose(1, 2)
    off = (cos.sum() - cos.diagonal(dim1=1, dim2=2).sum()) / (3 * 7 * 6)
    assert stats["token_cosine"] == pytest.approx(float(off), rel=1e-4, abs=1e-6)


def test_transformer_report_has_attention_rows():
    class T(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(11, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(16, 11)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.emb(x)))

    torch.manual_seed(0)
    x, y = torch.randint(0, 11, (8, 6)), torch.randint(0, 11, (8, 6))
    report = doctor(T(), x, y)
    att = report.to_dict()["attention"]
    assert [a["name"] for a in att] == ["enc.layers.0.self_attn", "enc.layers.1.self_attn"]
    assert all(0 < a["entropy"] <= a["max_entropy"] + 1e-6 for a in att)
    assert len(report.measurements["residual"]) == 4  # attention and MLP branch per layer


def test_update_ratio_flags_a_huge_learning_rate():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)
    )
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    report = doctor(
        net, x, y, steps=2, optimizer=lambda ps: torch.optim.Adam(ps, lr=1.0), jacobian=False
    )
    assert report.severity("update_ratio") == "fail"
    assert "lower the learning rate" in report.finding("update_ratio").message


# --------------------------------------------------------------------------- bad data, names, set-up


@pytest.mark.parametrize("where", ["input", "target", "weight"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_targets_and_weights_are_named_not_crashed(where, bad):
    """NaN/inf in the data or the weights: a ``nonfinite`` finding naming which, with the
    Jacobian on (its NaN figures used to crash the isometry check's formatting)."""
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    if where == "input":
        x[3, 1] = bad
    elif where == "target":
        y[5, 0] = bad
    else:
        with torch.no_grad():
            net[2].weight[1, 1] = bad
    report = doctor(net, x, y, steps=2)
    f = report.finding("nonfinite")
    assert f is not None and f.severity == "fail" and not report.ok
    expected = {"input": "the inputs hold 1", "target": "the targets hold 1",
                "weight": "the weights hold NaN/inf before any step (2.weight)"}[where]  # fmt: skip
    assert expected in f.message
    assert ("re-initialize" in f.message) == (where == "weight")
    json.loads(report.to_json())  # NaN figures stay JSON-safe
    assert "verdict: unhealthy" in report.text()


def test_activation_modules_are_named_as_the_graph_names_them():
    """A module computing GELU with a tanh inside (transformers' NewGELUActivation) is one
    ``gelu_tanh`` activation, not a ``tanh`` that saturates."""

    class NewGELUActivation(nn.Module):  # transformers' code, verbatim
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = math.sqrt(2.0 / math.pi)
            return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0))))

    net = nn.Sequential(nn.Linear(16, 64), NewGELUActivation(), nn.Linear(64, 4))
    with torch.no_grad():
        net[0].weight.mul_(20.0)  # large pre-activations: the inner tanh sits at +-1
    report = doctor(net, torch.randn(64, 16), torch.randint(0, 4, (64,)), jacobian=False)
    acts = report.measurements["activations"]
    assert [r["act"] for r in acts] == ["gelu_tanh"]
    assert report.severity("saturation") == "ok"


def test_gpt2_is_not_reported_saturated():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    report = doctor(model, {"input_ids": ids}, ids, jacobian=False,
                    loss_fn=lambda out, y: F.cross_entropy(out.reshape(-1, 97), y.reshape(-1)))  # fmt: skip
    acts = {r["act"] for r in report.measurements["activations"]}
    assert "tanh" not in acts and "gelu_tanh" in acts
    assert report.severity("saturation") == "ok"


def test_setup_is_first_in_text_json_and_html():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    report = doctor(net, x, y, steps=2, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-4),
                    setup={"data": "random"}, seed=5)  # fmt: skip
    setup = report.to_dict()["setup"]
    assert setup["optimizer"] == "AdamW(lr=0.0003)" and setup["steps"] == 2
    assert setup["seed"] == 5 and setup["data"] == "random"
    assert f"torch {torch.__version__}" in setup["versions"] and "python" in setup["versions"]
    text = report.text().splitlines()
    assert text[0] == "initlab doctor: Sequential" and "Sequential (" in text[1]
    page = report.html("t")
    assert page.index("Verdict") < page.index("Run details") < page.index("Findings")
    assert "AdamW(lr=0.0003)" in page


def test_progress_counts_every_unit_of_work():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    calls = []
    doctor(net, x, y, data=[(x, y)] * 3, batches=3, steps=4,
           progress=lambda desc, done, total: calls.append((done, total)))  # fmt: skip
    assert [c[0] for c in calls] == list(range(3 + 1 + 4 + 1))
    assert {c[1] for c in calls} == {3 + 1 + 4}


@pytest.mark.parametrize("entry", ["doctor", "lsuv", "gradinit", "metainit"])
def test_meta_models_are_named_as_such(entry):
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    call = {
        "doctor": lambda: doctor(net, x, y),
        "lsuv": lambda: initlab.lsuv(net, x),
        "gradinit": lambda: initlab.gradinit(net, F.cross_entropy, [(x, y)], lr=0.1),
        "metainit": lambda: initlab.metainit(net, F.cross_entropy, data=[(x, y)]),
    }[entry]
    with pytest.raises(
        initlab.InitlabError, match=f"initlab.{entry}: the model is on the meta device"
    ):
        call()


def test_dtype_mismatches_are_named():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for call in (lambda: doctor(net, x, y), lambda: initlab.plan(net, example=x)):
        with pytest.raises(
            initlab.InitlabError, match=r"dtype mismatch: the example is torch\.float32"
        ):
            call()


def test_diverging_steps_are_a_finding_and_marked_in_the_plots(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    report = doctor(net, x, y, steps=8, optimizer=lambda p: torch.optim.SGD(p, lr=1e6))
    f = report.finding("nonfinite")
    assert f.severity == "fail" and f.message.startswith(
        "training diverged: NaN/inf at optimizer step"
    )
    assert f.cli == "--lr 100000"
    assert "NaN/inf" in report.text()  # the update:data column says so instead of "1enan"
    pytest.importorskip("matplotlib")
    names = {p.name for p in report.plot(tmp_path)}
    assert {"doctor_update_data.png", "doctor_loss.png"} <= names


@pytest.mark.slow
def test_html_report_renders_in_a_real_browser(tmp_path):
    """The HTML report as a picture: headless Chromium's screenshot is a full, non-blank page.
    (Look at it too: README, Development.)"""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    pytest.importorskip("matplotlib")
    from PIL import Image

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3))
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    page = doctor(net, x, y, steps=3).save_html(tmp_path / "r.html")
    shot = tmp_path / "r.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,2400", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    im = Image.open(shot).convert("L")
    assert im.size == (1280, 2400)
    top = im.crop((0, 0, 1280, 800))
    assert top.getextrema()[0] < 60  # dark text drawn in the first screen (verdict, details)
