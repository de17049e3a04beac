"""Residual-aware init: zero-init via rules, SkipInit/ReZero, Fixup, T-Fixup, ZerO."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import initlab.nn as inn
from initlab.bench.models import char_transformer, residual_mlp, resnet_like
from initlab.errors import InitlabError
from initlab.methods.fixup import fixup, fixup_scale
from initlab.methods.skipinit import skipinit
from initlab.methods.tfixup import tfixup
from initlab.methods.zero import zerO_init
from initlab.planning import apply as planning_apply  # the plan draws through its `draw`
from initlab.planning import init
from initlab.schemes import zero_matrix
from tests.methods._fault import assert_same_state, dirty, state_of

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _plain(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameters of a copy of ``model`` under the plain default plan (same seed): every
    parameter a rule does not decide must come out bit-identical to these (one stream each)."""
    ref = copy.deepcopy(model)
    init(ref, example=example)
    return {n: p.detach().clone() for n, p in ref.named_parameters()}


def _zeroed_and_kept(model: nn.Module, plain: dict[str, torch.Tensor]) -> tuple[set[str], set[str]]:
    """``(names now all zero, names equal to the plain init)``: together they must be all."""
    zero = {n for n, p in model.named_parameters() if not p.detach().any()}
    kept = {n for n, p in model.named_parameters() if torch.equal(p.detach(), plain[n])}
    return zero, kept


def _encoder(norm_first: bool = False, layers: int = 2) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class Bottleneck(nn.Module):
    """x + fc3(relu(fc2(relu(fc1(x))))): m = 3."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(w, w), nn.Linear(w, w), nn.Linear(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class OneLayer(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.fc = nn.Linear(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


def _stack(block: type[nn.Module], n: int, w: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, w), nn.ReLU(), nn.Sequential(*(block(w) for _ in range(n))), nn.Linear(w, 3)
    )


# --------------------------------------------------------------------------- zero-init via rules


def test_residual_out_rule_zeroes_branch_ends_of_residual_mlp() -> None:
    net = residual_mlp(8, 3, blocks=3, width=16)
    plain = _plain(net, _x(4, 8))
    init(net, example=_x(4, 8), rules={"residual_out": "zeros"})
    ends = {f"blocks.{i}.fc2.weight" for i in range(3)}
    zero, kept = _zeroed_and_kept(net, plain)
    biases = {n for n, _ in net.named_parameters() if n.endswith("bias")}  # zero in both
    assert zero == ends | biases
    # the rest is the default's (whose own branch ends are 0 too when the net has no norm)
    assert kept - ends == {n for n, _ in net.named_parameters()} - ends


@pytest.mark.parametrize("batchnorm", [True, False])
def test_residual_out_rule_on_resnet(batchnorm: bool) -> None:
    net = resnet_like(1, 10, 2, batchnorm=batchnorm, width=8)
    plain = _plain(net, _x(2, 1, 8, 8))
    init(net, example=_x(2, 1, 8, 8), rules={"residual_out": "zeros"})
    # torchvision's zero_init_residual with norms: gamma of the branch's last BN; else its conv
    end = "bn2.weight" if batchnorm else "conv2.weight"
    ends = {n for n, _ in net.named_parameters() if n.startswith("stages.") and n.endswith(end)}
    assert len(ends) == sum(len(stage) for stage in net.stages)
    zero, kept = _zeroed_and_kept(net, plain)
    assert ends <= zero
    # projections included; the head is measured after drawing (`init`'s calibration), on
    # features the zeroed ends change: the same draw at another gain
    head = {"fc.weight"}
    assert kept - ends - head == {n for n, _ in net.named_parameters()} - ends - head
    ratio = net.fc.weight.detach() / plain["fc.weight"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_residual_out_rule_on_transformer_encoder() -> None:
    enc = _encoder()
    plain = _plain(enc, _x(2, 5, 16))
    init(enc, example=_x(2, 5, 16), rules={"residual_out": "zeros"})
    ends = {
        f"layers.{i}.{n}" for i in range(2) for n in ("self_attn.out_proj.weight", "linear2.weight")
    }
    zero, kept = _zeroed_and_kept(enc, plain)
    assert ends <= zero
    assert kept == {n for n, _ in enc.named_parameters()} - ends


# --------------------------------------------------------------------------- SkipInit / ReZero


def test_skipinit_wraps_branch_ends_and_output_equals_skip_path() -> None:
    net = residual_mlp(8, 3, blocks=4, width=16)
    x = _x(5, 8)
    r = skipinit(net, x)
    assert r.branches == 4 and r.layers_per_branch == 2
    assert sorted(r.wrapped) == [f"blocks.{i}.fc2" for i in range(4)]
    keys = set(net.state_dict())
    assert {
        "blocks.0.fc2.alpha",
        "blocks.0.fc2.module.weight",
    } <= keys and "blocks.0.fc2.weight" not in keys
    with torch.no_grad():
        assert torch.equal(net(x), net.head(net.stem(x)))  # every block is the identity
    net(x).sum().backward()
    assert (
        net.blocks[0].fc2.alpha.grad is not None and float(net.blocks[0].fc2.alpha.grad.abs()) > 0
    )


def test_skipinit_pre_ln_encoder_is_identity_even_on_the_fast_path() -> None:
    enc = _encoder(norm_first=True)
    x = _x(2, 5, 16)
    skipinit(enc, x)
    enc.eval()
    with torch.no_grad():  # eval + no_grad is where torch would take the fused path
        assert torch.allclose(enc(x), x, atol=0, rtol=0)


def test_rezero_shares_one_alpha_per_layer() -> None:
    enc = _encoder()
    r = skipinit(enc, _x(2, 5, 16), variant="rezero", alpha=0.0)
    assert r.branches == 4 and len(r.wrapped) == 4
    for layer in enc.layers:
        assert layer.self_attn.alpha is layer.linear2.alpha
    assert enc.layers[0].linear2.alpha is not enc.layers[1].linear2.alpha
    assert sum(1 for n, _ in enc.named_parameters() if n.endswith("alpha")) == 2


def test_skipinit_rejects_model_without_branches_and_double_wrapping() -> None:
    with pytest.raises(InitlabError, match="no residual branch"):
        skipinit(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), _x(2, 4))
    net = residual_mlp(8, 3, blocks=2, width=16)
    skipinit(net, _x(2, 8))
    with pytest.raises(InitlabError, match="already"):
        skipinit(net, _x(2, 8))
    with pytest.raises(InitlabError, match="variant"):
        skipinit(residual_mlp(8, 3, blocks=2, width=16), _x(2, 8), variant="rezer0")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Fixup


@pytest.mark.parametrize(
    ("block", "n", "m"), [(OneLayer, 5, 1), (residual_mlp, 4, 2), (Bottleneck, 16, 3)]
)
def test_fixup_scale_is_L_to_minus_one_over_2m_minus_2(block: object, n: int, m: int) -> None:
    net = residual_mlp(8, 3, blocks=n, width=32) if block is residual_mlp else _stack(block, n)  # type: ignore[arg-type]
    r = fixup(net, _x(4, 8), add_scalars=False)
    assert (r.branches, r.layers_per_branch) == (n, m)
    expected = 1.0 if m == 1 else n ** (-1.0 / (2 * m - 2))
    assert fixup_scale(n, m) == pytest.approx(expected)
    if m == 1:
        assert r.factors == {} and any("m=1" in note for note in r.notes)
    else:
        assert all(v == pytest.approx(expected) for v in r.factors.values())
        assert len(r.factors) == n * (m - 1)
        for name in r.factors:  # He normal, fan_out, ReLU gain, times the factor
            e = r.plan[name]
            assert e.std == pytest.approx(math.sqrt(2.0) / math.sqrt(e.fan_out) * expected)
            w = net.get_parameter(name).detach()
            k = 5 * math.sqrt(2 / (2 * w.numel()))  # |s/sigma - 1| bound for a normal
            assert abs(float(w.std()) / e.std - 1) < k


def test_fixup_zeroes_head_and_branch_ends_and_model_output_equals_skip_path() -> None:
    net = residual_mlp(8, 3, blocks=4, width=32)
    x = _x(6, 8)
    r = fixup(net, x)
    assert (
        float(net.head.module.weight.abs().sum()) == 0
        and float(net.head.module.bias.abs().sum()) == 0
    )
    for blk in net.blocks:
        assert (
            float(blk.fc2.module.weight.abs().sum()) == 0
            and float(blk.fc2.module.bias.abs().sum()) == 0
        )
        assert isinstance(blk.fc1, inn.ScalarAffine) and blk.fc1.scale is None
        assert blk.fc2.scale is not None and float(blk.fc2.scale) == 1.0
    assert (
        r.wrapped["stem"] == "ScalarAffine"
        and net.stem.bias_in is None
        and net.stem.bias_out is not None
    )
    assert net.head.bias_in is not None and net.head.bias_out is None
    feats = {}
    net.blocks.register_forward_hook(lambda m, i, o: feats.update(inp=i[0], out=o))
    with torch.no_grad():
        out = net(x)
    assert torch.equal(feats["out"], feats["inp"])  # the residual stack is the identity
    assert float(out.abs().sum()) == 0.0  # zero head
    # and it trains: one SGD step moves the head, the next the branch ends
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert float(net.blocks[-1].fc2.module.weight.abs().sum()) > 0


@pytest.mark.parametrize("batchnorm", [True, False])
def test_fixup_on_resnet_keeps_or_removes_norms(batchnorm: bool) -> None:
    net = resnet_like(1, 10, 2, batchnorm=batchnorm, width=8)
    x = _x(3, 1, 8, 8)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    r = fixup(net, x, norms="remove")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert len(r.removed) == n_bn == (15 if batchnorm else 0)
    assert (r.branches, r.layers_per_branch) == (6, 2)
    blk = net.stages[1][0]
    assert (
        isinstance(blk.conv2, inn.ScalarAffine) and float(blk.conv2.module.weight.abs().sum()) == 0
    )
    assert not inn.is_wrapper(blk.shortcut[0])  # shortcuts are not scaled and get no scalars
    assert "stages.1.0.shortcut.0.weight" not in r.factors
    with torch.no_grad():
        h = net.act(net.bn(net.conv(x)))
        assert torch.equal(blk(net.stages[0](h)), blk.act2(blk.shortcut(net.stages[0](h))))


def test_fixup_can_be_undone_by_unwrap_with_exact_fold() -> None:
    net = residual_mlp(8, 3, blocks=2, width=16)
    x = _x(4, 8)
    fixup(net, x)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if (
                n.endswith(("bias_in", "bias_out", "scale"))
                or "fc2.module" in n
                or "head.module" in n
            ):
                p.add_(0.1 * _x(*p.shape, seed=len(n)))
        y = net(x)
    inn.unwrap(net)
    assert not any(inn.is_wrapper(m) for m in net.modules())
    assert set(net.state_dict()) == set(residual_mlp(8, 3, blocks=2, width=16).state_dict())
    with torch.no_grad():
        assert torch.allclose(net(x), y, atol=1e-5)


# --------------------------------------------------------------------------- T-Fixup


def _uniform_bound_ok(w: torch.Tensor, bound: float) -> bool:
    a = float(w.abs().max())
    return a <= bound * (1 + 1e-6) and a >= 0.95 * bound  # n >= 256 draws: the max nears the bound


def test_tfixup_encoder_scales_v_out_fc_only() -> None:
    enc = _encoder(layers=4)
    r = tfixup(enc)
    d, c = 16, 0.67 * 4**-0.25
    assert len(r.removed) == 8 and not any(isinstance(m, nn.LayerNorm) for m in enc.modules())
    for i, layer in enumerate(enc.layers):
        q, k, v = layer.self_attn.in_proj_weight.detach().chunk(3)
        base = math.sqrt(6 / (2 * d))  # Xavier gain 1 on (d, d)
        assert _uniform_bound_ok(q, base / math.sqrt(2)) and _uniform_bound_ok(
            k, base / math.sqrt(2)
        )
        assert _uniform_bound_ok(v, base * c)
        assert _uniform_bound_ok(layer.self_attn.out_proj.weight.detach(), base * c)
        assert _uniform_bound_ok(layer.linear1.weight.detach(), math.sqrt(6 / (16 + 32)) * c)
        assert r.factors[f"layers.{i}.linear2.weight"] == pytest.approx(c)
        assert float(layer.linear1.bias.abs().sum()) == 0
    x = _x(2, 5, 16)
    with torch.no_grad():
        enc.eval()
        y_eval = enc(x)
    enc.train()
    assert torch.allclose(enc(x), y_eval, atol=1e-5) and torch.isfinite(y_eval).all()


def test_tfixup_decoder_uses_9N() -> None:
    layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    dec = nn.TransformerDecoder(layer, 3)
    r = tfixup(dec, norms="keep")
    c = (9 * 3) ** -0.25
    assert r.factors["layers.0.multihead_attn.out_proj.weight"] == pytest.approx(c)
    assert r.factors["layers.2.linear1.weight"] == pytest.approx(c)
    assert r.branches == 9 and not r.removed
    assert torch.equal(dec.layers[0].norm1.weight, torch.ones(16))


def test_tfixup_gpt_style_blocks_and_embeddings() -> None:
    net = char_transformer(vocab=27, block=8, d_model=32, n_head=4, n_layer=3)
    idx = torch.randint(0, 27, (4, 8), generator=torch.Generator().manual_seed(0))
    r = tfixup(net, idx)
    c, ce = 0.67 * 3**-0.25, (9 * 3) ** -0.25
    assert r.factors["blocks.2.mlp.fc2.weight"] == pytest.approx(c)
    assert r.factors["tok.weight"] == pytest.approx(ce) and "pos.weight" not in r.factors
    # the model feeds its rows unscaled: the table carries fairseq's effective std (9N)^-1/4
    assert r.plan["tok.weight"].std == pytest.approx(ce)
    w = net.tok.weight.detach()
    assert abs(float(w.std()) / ce - 1) < 5 * math.sqrt(2 / (2 * w.numel()))
    fair = char_transformer(vocab=27, block=8, d_model=32, n_head=4, n_layer=3)
    r2 = tfixup(fair, idx, embed_scale=math.sqrt(32))  # fairseq's x = sqrt(d) * E[idx]
    assert r2.plan["tok.weight"].std == pytest.approx(32**-0.5 * ce)
    with pytest.raises(InitlabError, match="embed_scale"):
        tfixup(char_transformer(n_layer=1), idx, embed_scale=0.0)
    assert not any(isinstance(m, nn.LayerNorm) for m in net.modules())
    assert torch.isfinite(net(idx)).all()


# --------------------------------------------------------------------------- ZerO


def test_zero_init_exact_matrices() -> None:
    net = residual_mlp(8, 3, blocks=2, width=16)
    r = zerO_init(net, _x(4, 8))
    assert torch.equal(net.stem.weight.detach(), zero_matrix(16, 8))  # widening: Hadamard block
    for blk in net.blocks:
        assert torch.equal(blk.fc1.weight.detach(), torch.eye(16))
        assert float(blk.fc2.weight.abs().sum()) == 0
    assert float(net.head.weight.abs().sum()) == 0 and "head.bias" in r.zeroed
    net2 = residual_mlp(8, 3, blocks=2, width=16)
    zerO_init(net2, _x(4, 8), head="ZerO")
    assert torch.equal(net2.head.weight.detach(), torch.eye(3, 16))


# --------------------------------------------------------------------------- transactions


def test_fixup_is_transactional_on_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    net = resnet_like(1, 10, 2, batchnorm=True, width=8)
    before, modules = _state(net), [type(m) for m in net.modules()]
    real, calls = inn.ScalarAffine, {"n": 0}

    def flaky(*a: object, **k: object) -> nn.Module:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(inn, "ScalarAffine", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        fixup(net, _x(2, 1, 8, 8), norms="remove")
    assert [type(m) for m in net.modules()] == modules
    assert _same(_state(net), before)


def test_skipinit_and_tfixup_are_transactional(monkeypatch: pytest.MonkeyPatch) -> None:
    net = residual_mlp(8, 3, blocks=3, width=16)
    before = _state(net)
    real, calls = inn.ScalarGate, {"n": 0}

    def flaky(*a: object, **k: object) -> nn.Module:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(inn, "ScalarGate", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        skipinit(net, _x(2, 8))
    assert not any(inn.is_wrapper(m) for m in net.modules()) and _same(_state(net), before)

    enc = _encoder()
    before = _state(enc)
    P = planning_apply

    real_draw, n = P.draw, {"n": 0}

    def flaky_draw(*a: object, **k: object) -> torch.Tensor:
        n["n"] += 1
        if n["n"] == 6:
            raise RuntimeError("injected fault")
        return real_draw(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(P, "draw", flaky_draw)
    with pytest.raises(RuntimeError, match="injected"):
        tfixup(enc)
    assert any(isinstance(m, nn.LayerNorm) for m in enc.modules()) and _same(_state(enc), before)


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: object, attr: str, call: int) -> dict:
    """Make ``owner.attr`` raise on its ``call``-th call (1-based); return the call counter."""
    real, calls = getattr(owner, attr), {"n": 0}

    def flaky(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(owner, attr, flaky)
    return calls


@pytest.mark.parametrize("method", ["skipinit", "rezero", "fixup", "tfixup", "zerO_init"])
def test_a_fault_late_in_any_residual_method_leaves_the_model_exactly_as_before(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """One undo (the transaction): after norms were removed, weights drawn and wrappers placed,
    a fault at the last step leaves weights, grads, modules, hooks, modes and flags as they were."""
    if method == "tfixup":
        net: nn.Module = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), 2
        )
        x = _x(2, 5, 16)
        nested = net.use_nested_tensor
    else:
        net, x, nested = residual_mlp(8, 3, blocks=3, width=16), _x(4, 8), None
    dirty(net)
    before, modules = state_of(net), [(n, type(m)) for n, m in net.named_modules()]
    run = {
        "skipinit": lambda m: skipinit(m, x),
        "rezero": lambda m: skipinit(m, x, variant="rezero"),
        "fixup": lambda m: fixup(m, x, norms="remove"),
        "tfixup": lambda m: tfixup(m, x),
        "zerO_init": lambda m: zerO_init(m, x),
    }[method]
    # the last step: the last wrapper (SkipInit, Fixup) or the plan's last draw (T-Fixup, ZerO)
    owner, attr = {"skipinit": (inn, "ScalarGate"), "rezero": (inn, "ScalarGate"),
                   "fixup": (inn, "ScalarAffine")}.get(method, (planning_apply, "draw"))  # fmt: skip
    counted = _fail_on_call(monkeypatch, owner, attr, 0)
    run(copy.deepcopy(net))
    last = counted["n"]
    monkeypatch.undo()
    calls = _fail_on_call(monkeypatch, owner, attr, last)
    with pytest.raises(RuntimeError, match="injected fault"):
        run(net)
    assert calls["n"] == last >= 3  # the fault came late, not at the first step
    assert [(n, type(m)) for n, m in net.named_modules()] == modules  # no wrapper, no NoNorm left
    assert_same_state(state_of(net), before)
    if nested is not None:
        assert net.use_nested_tensor == nested
    monkeypatch.undo()
    assert run(net).branches >= 2  # and the model still takes the method


def test_fixup_on_attention_zeroes_out_proj_only_and_encoder_is_identity() -> None:
    enc = _encoder(norm_first=True, layers=3)
    x = _x(2, 5, 16)
    r = fixup(enc, x)
    assert (r.branches, r.layers_per_branch) == (6, 2)
    for layer in enc.layers:
        attn = layer.self_attn.module
        assert float(attn.out_proj.weight.detach().abs().sum()) == 0
        assert float(attn.in_proj_weight.detach().abs().sum()) > 0
        assert float(layer.linear2.module.weight.detach().abs().sum()) == 0
    assert r.factors["layers.0.self_attn.in_proj_weight"] == pytest.approx(6**-0.5)
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(x), x)


class FixupBlock(nn.Module):
    """The official block, written by a user with initlab.nn scalars."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.b1a, self.b1b, self.b2a, self.b2b = inn.Bias(), inn.Bias(), inn.Bias(), inn.Bias()
        self.fc1, self.fc2, self.scale = nn.Linear(w, w), nn.Linear(w, w), inn.Scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.b1b(self.fc1(self.b1a(x))))
        return x + self.b2b(self.scale(self.fc2(self.b2a(out))))


def test_fixup_on_user_built_scalars_counts_only_real_layers() -> None:
    net = _stack(FixupBlock, 9)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (inn.Scale, inn.Bias)):
                next(mod.parameters()).fill_(0.3)
    r = fixup(net, _x(4, 8), add_scalars=False)
    assert (r.branches, r.layers_per_branch) == (9, 2)
    assert r.factors["2.0.fc1.weight"] == pytest.approx(1 / 3)
    blk = net[2][0]
    assert float(blk.scale.scale) == 1.0 and float(blk.b1a.bias) == 0.0
    assert float(blk.fc2.weight.detach().abs().sum()) == 0


def test_added_scalars_follow_the_wrapped_layer_dtype() -> None:
    """Fixup's and SkipInit's scalars are made where the layer lives (dtype here; device on GPU)."""

    net = residual_mlp(8, 3, blocks=2, width=16).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    fixup(net, x)
    scalars = [p for n, p in net.named_parameters() if n.endswith(("bias_in", "bias_out", "scale"))]
    assert scalars and all(p.dtype == torch.float64 for p in scalars)
    net2 = residual_mlp(8, 3, blocks=2, width=16).double()
    skipinit(net2, x, variant="rezero")
    alphas = [p for n, p in net2.named_parameters() if n.endswith("alpha")]
    assert alphas and all(p.dtype == torch.float64 for p in alphas)
    assert net2(x).dtype == torch.float64


def test_fixup_keeps_layers_outside_the_branches_as_the_official_code() -> None:
    """Official Fixup re-initializes only the branches and the classifier; the stem is kept."""
    net = residual_mlp(8, 3, blocks=3, width=16)
    stem = {k: v.detach().clone() for k, v in net.stem.named_parameters()}
    r = fixup(net, _x(4, 8))
    assert torch.equal(net.stem.module.weight, stem["weight"])
    assert torch.equal(net.stem.module.bias, stem["bias"])
    assert set(r.kept) == {"stem.weight", "stem.bias"}
    assert r.plan["stem.weight"].scheme == "keep"
    assert any("kept 2 parameters" in n for n in r.notes)
    assert float(net.head.module.weight.abs().sum()) == 0.0
    net2 = residual_mlp(8, 3, blocks=3, width=16)
    before = net2.stem.weight.detach().clone()
    r2 = fixup(net2, _x(4, 8), outside="init")
    assert r2.kept == () and not torch.equal(net2.stem.module.weight, before)
    with pytest.raises(InitlabError, match="outside"):
        fixup(residual_mlp(8, 3, blocks=2, width=16), _x(4, 8), outside="redraw")


def test_fixup_draws_projection_shortcuts_unscaled_and_keeps_the_stem() -> None:
    net = resnet_like(1, 10, 2, batchnorm=False, width=8)
    stem = net.conv.weight.detach().clone()
    r = fixup(net, _x(3, 1, 8, 8))
    assert torch.equal(
        net.conv.module.weight if inn.is_wrapper(net.conv) else net.conv.weight, stem
    )
    sc = "stages.1.0.shortcut.0.weight"
    assert r.plan[sc].scheme != "keep" and sc not in r.factors


def test_fixup_param_groups_follow_the_official_script() -> None:
    net = residual_mlp(8, 3, blocks=2, width=16)
    net.stem.weight.requires_grad_(False)
    r = fixup(net, _x(4, 8))
    groups = r.param_groups(0.2, weight_decay=5e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    slow, fast = ({names[id(p)] for p in g["params"]} for g in groups)
    assert groups[0]["lr"] == pytest.approx(0.02) and groups[1]["lr"] == pytest.approx(0.2)
    assert all(g["weight_decay"] == 5e-4 for g in groups)  # one decay for all, as the script
    assert all(n.rsplit(".", 1)[-1] in ("bias_in", "bias_out", "scale", "bias") for n in slow)
    assert "blocks.0.fc2.scale" in slow and "head.module.bias" in slow
    assert fast == {n for n, p in net.named_parameters() if p.requires_grad} - slow
    assert "stem.module.weight" not in fast  # frozen: left out
    torch.optim.Adam(groups)  # any optimizer takes them
    with pytest.raises(InitlabError, match="lr"):
        r.param_groups(0.0)
    with pytest.raises(InitlabError, match="param_groups"):
        skipinit(residual_mlp(8, 3, blocks=2, width=16), _x(4, 8)).param_groups(0.1)


def test_fixup_with_its_param_groups_trains_a_deep_unnormalized_residual_mlp() -> None:
    """50 blocks, no normalization, standardized digits, SGD momentum 0.9 at lr 0.1, one epoch."""
    from initlab.bench.data import digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest, and results do not vary
    try:
        ds = digits(seed=0)
        torch.manual_seed(0)  # the stem keeps PyTorch's default init, drawn here
        net = residual_mlp(64, 10, blocks=50, width=64)
        res = fixup(net, ds.x_train[:8], seed=0)
        opt = torch.optim.SGD(res.param_groups(0.1), momentum=0.9)
        order = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(net(ds.x_train[idx]), ds.y_train[idx])
            assert torch.isfinite(loss), f"diverged at step {i // 64}"
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(ds.x_test).argmax(1) == ds.y_test).float().mean())
    finally:
        torch.set_num_threads(threads)
    # chance is 0.10; with 360 test examples the std of an accuracy near 0.9 is 0.016
    assert acc > 0.75, acc


def test_fixup_on_a_meta_model_needs_outside_init() -> None:
    with torch.device("meta"):
        net = residual_mlp(8, 3, blocks=2, width=16)
    with pytest.raises(InitlabError, match="outside='init'"):
        fixup(net, _x(4, 8), add_scalars=False)
    assert all(p.is_meta for p in net.parameters())  # untouched
    fixup(net, _x(4, 8), add_scalars=False, outside="init")
    assert not any(p.is_meta for p in net.parameters())
    assert float(net.head.weight.abs().sum()) == 0.0


def test_the_default_plans_param_groups_put_every_bias_at_lr_over_10() -> None:
    net = residual_mlp(8, 3, blocks=3, width=16)
    plan = init(net, example=_x(4, 8), seed=0)
    assert "plan.param_groups(lr)" in str(plan)  # the Fixup rule's footer points to it
    slow, fast = plan.param_groups(0.3, weight_decay=1e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in slow["params"]} == {
        n for n in names.values() if n.endswith("bias")
    }
    assert slow["lr"] == pytest.approx(0.03) and fast["lr"] == pytest.approx(0.3)
    assert len(slow["params"]) + len(fast["params"]) == len(names)
    with pytest.raises(InitlabError, match="scalar_lr_mult"):
        plan.param_groups(0.1, scalar_lr_mult=0.0)


def _train_digits(net: nn.Module, groups: list[dict], epochs: int) -> float:
    """SGD momentum 0.9, batch 64, on digits in [0, 1]; NaN when the loss stops being finite."""
    from initlab.bench.data import digits

    ds = digits(seed=0, unit=True)
    opt = torch.optim.SGD(groups, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(ds.x_train), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(net(ds.x_train[idx]), ds.y_train[idx])
            if not torch.isfinite(loss):
                return math.nan
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((net(ds.x_test).argmax(1) == ds.y_test).float().mean())


@pytest.mark.slow
def test_a_100_block_net_without_norm_trains_at_lr_0_1_with_the_plans_param_groups() -> None:
    """The default's Fixup rule zeroes 100 branch ends; their biases all get the stream's
    gradient. One lr for all: diverges within 3 epochs; biases at lr/10: trains (~25 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from initlab.bench.data import digits

        x = digits(seed=0, unit=True).x_train[:64]
        one = residual_mlp(64, 10, blocks=100, width=128)
        init(one, example=x, seed=0)
        diverged = _train_digits(one, [{"params": list(one.parameters()), "lr": 0.1}], epochs=3)
        split = residual_mlp(64, 10, blocks=100, width=128)
        plan = init(split, example=x, seed=0)
        acc = _train_digits(split, plan.param_groups(0.1), epochs=3)
    finally:
        torch.set_num_threads(threads)
    assert math.isnan(diverged)
    assert acc > 0.85, acc  # 360 test digits: the std of an accuracy near 0.93 is 0.013
