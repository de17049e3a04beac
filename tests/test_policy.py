"""The default policy of :func:`initlab.plan.plan`: one test per decision, on hand-written models
and on real architectures built from transformers configs (nothing downloaded).

Initial losses are measured on random inputs and labels; with logits of std ``s`` the expected
excess over ``log(classes)`` is about ``s^2 / 2``, and its sampling noise over ``n`` targets is
about ``s / sqrt(n)``: with ``n >= 512`` and ``s <= 0.3`` the 0.05-nat bounds hold with a margin
of more than 5 standard errors.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.bench.architectures import (
    ARCHITECTURES,
    ResNet50,
    TimmViT,
    inputs,
    logits_and_targets,
    uniform_label_loss,
)
from initlab.bench.models import plain_mlp
from initlab.errors import InitlabError
from initlab.planning import (
    DEEP_PLAIN_DEPTH,
    DEEP_PLAIN_HEAD_GAIN,
    HEAD_GAIN,
    IDENTITY_CHAIN_ACTIVATIONS,
    NORMALIZED,
    NORMALIZED_GAIN,
    RESCALED_TIED_GAIN,
    RESIDUAL_LAYER_SCALED,
    RESIDUAL_SCALED,
    TIED_HEAD_GAIN,
    UNSCALED_QUERY,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _built(factory, *args):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return factory(*args)


def _random_loss(arch_name: str, model: nn.Module, classes: int) -> float:
    arch = ARCHITECTURES[arch_name]
    g = _gen(1)
    if arch.kind == "vision":
        x, y = (
            torch.randn(64, 3, 32, 32, generator=g),
            torch.randint(0, classes, (64,), generator=g),
        )
    else:
        x, y = torch.randint(0, classes, (32, 33 if arch.kind == "lm" else 32), generator=g), None
    model.train()
    with torch.no_grad():  # expected over uniform labels: without their sampling noise
        return float(uniform_label_loss(logits_and_targets(arch, model, x, y, classes)[0]))


def _init_like_suite(arch_name: str, model: nn.Module, classes: int) -> initlab.Plan:
    arch = ARCHITECTURES[arch_name]
    g = _gen(2)
    if arch.kind == "vision":
        x = torch.randn(8, 3, 32, 32, generator=g)
    else:
        x = torch.randint(0, classes, (4, 17 if arch.kind == "lm" else 32), generator=g)
    return initlab.init(model, example=inputs(arch, x, classes), seed=0)


# --------------------------------------------------------------------------- heads


def test_untied_head_starts_near_log_classes() -> None:
    net = plain_mlp(64, 10, 4, 256, "relu")  # shallow: Kaiming with traced gains, small head
    p = initlab.init(net, example=torch.randn(8, 64), seed=0)
    assert p["6.weight"].role == "head" and p["6.weight"].gain == HEAD_GAIN
    g = _gen(3)
    x, y = torch.randn(1024, 64, generator=g), torch.randint(0, 10, (1024,), generator=g)
    with torch.no_grad():
        loss = float(F.cross_entropy(net(x), y))
    assert abs(loss - math.log(10)) < 0.05


def test_resnet50_in_train_mode_starts_near_log_classes() -> None:
    model = _built(ResNet50, 10)
    _init_like_suite("resnet50", model, 10)
    assert abs(_random_loss("resnet50", model, 10) - math.log(10)) < 0.05
    # a norm that ends a branch keeps gamma 1 (zero gamma measured no better: README)
    assert all(bool((b.bn3.weight == 1).all()) for b in model.layers)


def test_head_scale_is_the_heads_gain_and_raises_without_a_head() -> None:
    net = plain_mlp(64, 10, 2, 32, "tanh")
    p = initlab.plan(net, example=torch.randn(4, 64), head_scale=1.0)
    assert p["2.weight"].gain == 1.0
    table = nn.Embedding(10, 4)  # an embedding alone is no head
    ids = torch.tensor([[1, 2]])
    with pytest.raises(InitlabError, match="found no output head"):
        initlab.plan(table, example=ids, head_scale=0.5)
    assert initlab.plan(table, example=ids)["weight"].role == "embedding"


# --------------------------------------------------------------------------- deep plain chains


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_deep_plain_chains_are_isometric_shallow_ones_keep_kaiming(act: str) -> None:
    deep = initlab.plan(plain_mlp(64, 10, DEEP_PLAIN_DEPTH, 128, act), example=torch.randn(4, 64))
    assert deep["0.weight"].scheme == "orthogonal"  # widens 64 -> 128: random isometry
    assert deep["2.weight"].scheme == "ZerO" and deep["2.weight"].gain == 1.0
    head = deep[f"{2 * (DEEP_PLAIN_DEPTH - 1)}.weight"]
    assert head.role == "head" and head.gain == (1.0 if act == "tanh" else DEEP_PLAIN_HEAD_GAIN)
    shallow = initlab.plan(
        plain_mlp(64, 10, DEEP_PLAIN_DEPTH - 1, 128, act), example=torch.randn(4, 64)
    )
    assert shallow["2.weight"].scheme == "kaiming_normal"
    assert shallow["2.weight"].gain == pytest.approx(initlab.gain(act))


@pytest.mark.parametrize("scheme", ["kaiming_normal", "xavier_uniform", "trunc_normal"])
def test_a_scheme_the_user_names_is_used_in_a_deep_plain_chain(scheme: str) -> None:
    net = plain_mlp(64, 10, DEEP_PLAIN_DEPTH + 5, 128, "relu")
    p = initlab.plan(net, scheme, example=torch.randn(4, 64))
    hidden = [e for e in p if e.role == "weight"]
    assert len(hidden) == DEEP_PLAIN_DEPTH + 4 and {e.scheme for e in hidden} == {scheme}
    assert p[f"{2 * (DEEP_PLAIN_DEPTH + 4)}.weight"].gain == DEEP_PLAIN_HEAD_GAIN  # ReLU: no fading
    assert {e.scheme for e in initlab.plan(net, example=torch.randn(4, 64)) if e.role == "weight"} == {
        "orthogonal", "ZerO"}  # unnamed: the isometric default  # fmt: skip


@pytest.mark.parametrize(("act", "scheme", "head_gain"), [
    ("selu", "orthogonal", DEEP_PLAIN_HEAD_GAIN),  # contracting: a random isometry at its gain
    ("elu", "orthogonal", DEEP_PLAIN_HEAD_GAIN),
    ("gelu", "kaiming_normal", None),  # expanding: no init is critical, the shallow default, the
    ("silu", "kaiming_normal", None),  # head divided by its input's predicted rms (> 1)
])  # fmt: skip
def test_deep_chains_whose_identity_chain_drifts_are_not_zero(
    act: str, scheme: str, head_gain: float | None
) -> None:
    # a ZerO chain of SELU grows the signal 1.05x per layer, of GELU halves it
    assert act not in IDENTITY_CHAIN_ACTIVATIONS
    dims = [64] + [128] * (DEEP_PLAIN_DEPTH + 1)
    acts = {"selu": nn.SELU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), acts[act]()]
    p = initlab.plan(nn.Sequential(*layers, nn.Linear(128, 10)), example=torch.randn(4, 64))
    hidden = [e for e in p if e.role == "weight"]
    assert {e.scheme for e in hidden} == {scheme}
    assert hidden[1].gain == pytest.approx(initlab.gain(act))
    head = p[f"{2 * len(hidden)}.weight"]
    if head_gain is not None:
        assert head.gain == head_gain
    else:
        assert 0.2 * HEAD_GAIN < head.gain < HEAD_GAIN and "mean-field" in head.note


def _excess_on_random_inputs(net: nn.Module, d_in: int, classes: int, seed: int) -> float:
    x = torch.randn(2048, d_in, generator=_gen(seed))
    y = torch.randint(classes, (2048,), generator=_gen(seed + 1))
    with torch.no_grad():
        return float(F.cross_entropy(net(x), y)) - math.log(classes)


_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity, "gelu": nn.GELU,
         "selu": nn.SELU, "hardtanh": nn.Hardtanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
         "softplus": nn.Softplus, "silu": nn.SiLU, "hardswish": nn.Hardswish, "mish": nn.Mish}  # fmt: skip


@pytest.mark.parametrize(
    ("act", "d_in", "width", "depth"),
    [("relu", 784, 512, 12), ("relu", 64, 256, 30), ("tanh", 64, 256, 10), ("tanh", 784, 512, 30),
     ("identity", 100, 128, 16), ("gelu", 64, 128, 12), ("selu", 64, 128, 12),
     ("hardtanh", 784, 256, 12), ("sigmoid", 64, 256, 12), ("leaky_relu", 784, 256, 20),
     ("softplus", 784, 256, 12),
     # expanding activations: the second moment grows from the first layer (gain^2 > 1) on, and
     # the head is divided by its input's predicted rms (SiLU depth 20: rms 16, 0.53 nats above
     # at HEAD_GAIN; hardswish depth 8: 0.06)
     ("silu", 64, 256, 10), ("silu", 64, 256, 20), ("hardswish", 64, 256, 8),
     ("hardswish", 784, 256, 16), ("gelu", 64, 256, 30), ("mish", 64, 128, 30)],
)  # fmt: skip
def test_deep_plain_chains_start_within_005_nats_of_log_classes(
    act: str, d_in: int, width: int, depth: int
) -> None:
    # 2048 samples: the loss's standard error is about 0.01 nats, below the 0.05 margin
    dims = [d_in] + [width] * (depth - 1)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), _ACTS[act]()]
    net = nn.Sequential(*layers, nn.Linear(width, 10))
    initlab.init(net, example=torch.randn(4, d_in), seed=0)
    assert abs(_excess_on_random_inputs(net, d_in, 10, seed=7)) < 0.05


def test_deep_plain_chain_keeps_the_signal() -> None:
    net = plain_mlp(64, 10, 50, 128, "tanh")
    initlab.init(net, example=torch.randn(4, 64), seed=0)
    x = torch.randn(512, 64, generator=_gen(4))
    with torch.no_grad():
        h = net[:-1](x)
    # identity layers: tanh iterated shrinks the signal only polynomially (q_l ~ 3 / (2 l)),
    # where Kaiming at gain 5/3 is chaotic (Poole et al. 2016) and saturates the units
    assert 0.1 < float(h.std()) / float(x.std()) < 1.0
    assert float((h.abs() > 0.99).float().mean()) < 0.01


# --------------------------------------------------------------------------- kept choices


def test_zero_head_zero_gamma_and_layer_scale_are_kept() -> None:
    vit = _built(TimmViT, 10)
    p = initlab.init(vit, example=torch.randn(2, 3, 32, 32), seed=0)
    assert p["head.weight"].scheme == "keep" and "constant 0" in p["head.weight"].note
    assert float(vit.head.weight.detach().abs().sum()) == 0.0
    assert p["blocks.0.ls1"].scheme == "keep" and float(
        vit.blocks[0].ls1.detach()[0]
    ) == pytest.approx(1e-5)
    res = _built(ResNet50, 10, 16, True)
    p = initlab.init(res, example=torch.randn(2, 3, 32, 32), seed=0)
    assert p["layers.0.bn3.weight"].scheme == "keep"
    assert float(res.layers[0].bn3.weight.detach().abs().sum()) == 0.0
    assert p["layers.0.bn2.weight"].scheme == "ones"  # a gamma of 1 is the default: planned
    ruled = initlab.plan(vit, example=torch.randn(2, 3, 32, 32), rules={"head": "zeros"})
    assert ruled["head.weight"].scheme == "zeros"  # a rule overrides


def test_flags_and_out_of_range_biases_are_kept_meta_is_not_read() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    net[0].weight._no_reinit = True  # type: ignore[attr-defined]
    with torch.no_grad():
        net[2].bias.copy_(-3.0 - torch.rand(8, generator=_gen(5)))  # all below -1/sqrt(8)
    before = [p.detach().clone() for p in net.parameters()]
    p = initlab.init(net, example=torch.randn(2, 8), seed=0)
    assert p["0.weight"].scheme == "keep" and "_no_reinit" in p["0.weight"].note
    assert p["2.bias"].scheme == "keep" and torch.equal(net[2].bias, before[3])
    assert p["0.bias"].scheme == "zeros" and p["4.weight"].scheme == "kaiming_normal"
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    assert all(e.scheme != "keep" for e in initlab.plan(meta, example=torch.randn(2, 8)))


# --------------------------------------------------------------------------- layer scale


class _LayerScale(nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.gamma = nn.Parameter(scale.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _ScaledBlock(nn.Module):
    """A ConvNeXt block: depthwise 7x7, LayerNorm, 4x MLP, ``gamma * branch`` (channels first);
    ``gamma`` a parameter, a buffer (``how="buffer"``) or a module's (``how="module"``)."""

    def __init__(self, c: int, gamma: float, how: str = "parameter") -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        scale = torch.full((c,), gamma)
        if how == "module":
            self.ls = _LayerScale(scale)
        elif how == "buffer":
            self.register_buffer("gamma", scale)
        else:
            self.gamma = nn.Parameter(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.fc2(F.gelu(self.fc1(h))).permute(0, 3, 1, 2)
        return x + (self.ls(h) if hasattr(self, "ls") else self.gamma.view(1, -1, 1, 1) * h)


def _convnext_like(blocks: int, gamma: float, how: str = "parameter") -> nn.Module:
    stem, head = nn.Conv2d(3, 16, 4, stride=4), nn.Sequential(nn.Flatten(), nn.Linear(16 * 4, 10))
    return nn.Sequential(stem, *[_ScaledBlock(16, gamma, how) for _ in range(blocks)], head)


def test_branch_end_behind_a_small_layer_scale_keeps_its_plain_gain() -> None:
    x = torch.randn(2, 3, 8, 8, generator=_gen(3))
    L = 4
    model = _built(_convnext_like, L, 1e-6)
    p = initlab.init(model, example=x, seed=0)
    assert p.graph.layers["1.fc2"].multiplier == "1.gamma"
    for i in range(1, L + 1):
        end = p[f"{i}.fc2.weight"]
        assert end.source == RESIDUAL_LAYER_SCALED and end.gain == pytest.approx(1.0)
        assert end.std == pytest.approx(1 / math.sqrt(64))  # linear gain, fan_in 4c
        assert p[f"{i}.gamma"].scheme == "keep"
        assert torch.equal(model[i].gamma.detach(), torch.full((16,), 1e-6))
    assert p["1.fc1.weight"].source == "default"  # only the branch end is affected
    # a layer scale larger than L^-1/2 does not shrink the branch enough: the factor stays
    big = initlab.plan(_built(_convnext_like, L, 0.6), example=x)
    assert big["1.fc2.weight"].source == RESIDUAL_SCALED
    assert big["1.fc2.weight"].gain == pytest.approx(L**-0.5)
    # a fixed multiplier (a buffer) is no learned layer scale
    fixed = initlab.plan(_built(_convnext_like, L, 1e-6, "buffer"), example=x)
    assert fixed["1.fc2.weight"].source == RESIDUAL_SCALED
    # a layer-scale module of its own (timm's LayerScale) is the branch end, kept: same gains
    module = initlab.plan(_built(_convnext_like, L, 1e-6, "module"), example=x)
    assert module["1.ls.gamma"].scheme == "keep"
    assert module["1.fc2.weight"].gain == pytest.approx(1.0)
    # residual_scale=False: the plain gain everywhere, as before
    plain = initlab.plan(model, example=x, residual_scale=False)
    assert plain["1.fc2.weight"].source == "default"


@pytest.mark.hf
def test_transformers_convnext_branch_ends_keep_their_plain_gain() -> None:
    pytest.importorskip("transformers", reason="needs the optional extra: pip install transformers")
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(hidden_sizes=[16, 32], depths=[2, 2], num_stages=2, num_labels=10)
    model = _built(ConvNextForImageClassification, config)
    p = initlab.init(model, example=torch.randn(2, 3, 32, 32, generator=_gen(3)), seed=0)
    ends = [e for e in p if e.name.endswith("pwconv2.weight")]
    assert len(ends) == 4 and all(e.source == RESIDUAL_LAYER_SCALED for e in ends)
    assert all(e.gain == pytest.approx(1.0) for e in ends)
    scale = "convnext.encoder.stages.1.layers.1.layer_scale_parameter"
    assert p[scale].scheme == "keep"
    assert float(model.get_parameter(scale).detach().max()) == pytest.approx(1e-6)


# --------------------------------------------------------------------------- real architectures


def _needs_hf(name: str = "gpt2") -> None:
    if ARCHITECTURES[name].needs_hf:
        pytest.importorskip(
            "transformers", reason="needs the optional extra: pip install transformers"
        )


@pytest.mark.hf
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tiny_lms_start_at_least_as_well_as_their_own_init(name: str) -> None:
    _needs_hf(name)
    own = _built(ARCHITECTURES[name].build, 500)
    ours = _built(ARCHITECTURES[name].build, 500)
    _init_like_suite(name, ours, 500)
    own_loss, our_loss = _random_loss(name, own, 500), _random_loss(name, ours, 500)
    assert our_loss <= own_loss + 0.02 and abs(our_loss - math.log(500)) < 0.05


@pytest.mark.hf
def test_tied_table_and_summed_embeddings_share_one_scale() -> None:
    _needs_hf()
    model = _built(ARCHITECTURES["gpt2"].build, 500)
    p = _init_like_suite("gpt2", model, 500)
    d = model.config.n_embd
    assert p["transformer.wte.weight"].tied == ("lm_head.weight",)
    assert p["transformer.wte.weight"].std == pytest.approx(TIED_HEAD_GAIN / math.sqrt(d))
    assert p["transformer.wpe.weight"].std == p["transformer.wte.weight"].std
    bert = _built(ARCHITECTURES["bert"].build, 500)
    q = _init_like_suite("bert", bert, 500)
    emb = "bert.embeddings."
    stds = {
        q[emb + k + ".weight"].std
        for k in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    assert len(stds) == 1
    scaled = initlab.plan(model, example={"input_ids": torch.zeros(1, 4, dtype=torch.long)},
                          head_scale=1.0)  # fmt: skip
    assert scaled["transformer.wte.weight"].std == pytest.approx(1 / math.sqrt(d))


@pytest.mark.hf
def test_mamba_time_step_bias_is_kept() -> None:
    _needs_hf()
    model = _built(ARCHITECTURES["mamba"].build, 500)
    bias = model.backbone.layers[0].mixer.dt_proj.bias.detach().clone()
    p = _init_like_suite("mamba", model, 500)
    assert p["backbone.layers.0.mixer.dt_proj.bias"].scheme == "keep"
    assert torch.equal(model.backbone.layers[0].mixer.dt_proj.bias, bias)


@pytest.mark.hf
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_starts_no_worse_than_its_own_init(name: str) -> None:
    _needs_hf(name)
    classes = 10 if ARCHITECTURES[name].kind == "vision" else 500
    own = _built(ARCHITECTURES[name].build, classes)
    ours = _built(ARCHITECTURES[name].build, classes)
    p = _init_like_suite(name, ours, classes)
    own_loss, our_loss = _random_loss(name, own, classes), _random_loss(name, ours, classes)
    tied = any(e.tied and "head" in e.roles for e in p.entries.values())
    bound = 0.15 if tied else 0.05  # README: a tied table within 0.15 of log(vocab)
    assert our_loss <= own_loss + 0.02 and our_loss < math.log(classes) + bound


class _Attention(nn.Module):
    """One head of self-attention written out: ``softmax(q k^T * factor) v``, or through
    ``scaled_dot_product_attention`` with ``scale`` (``None``: its ``1/sqrt(d)``)."""

    def __init__(self, d: int, factor: float | None, sdpa: bool = False) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.factor, self.sdpa = factor, sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa:
            return self.o(F.scaled_dot_product_attention(q, k, v, scale=self.factor))
        scores = q @ k.transpose(-1, -2)
        if self.factor is not None:
            scores = scores * self.factor
        return self.o(torch.softmax(scores, dim=-1) @ v)


@pytest.mark.parametrize(
    ("factor", "sdpa", "expected"),
    [(None, False, 1 / 4), (1 / 4, False, 1.0), (1.0, True, 1 / 4), (None, True, 1.0),
     (1 / 16, False, 1.0)],
)  # fmt: skip
def test_attention_without_its_scaling_gets_a_smaller_query(factor, sdpa, expected) -> None:
    model = _Attention(16, factor, sdpa)
    p = initlab.plan(model, example=torch.randn(2, 5, 16))
    base = initlab.plan(_Attention(16, 1 / 4), example=torch.randn(2, 5, 16))
    assert p["q.weight"].std == pytest.approx(expected * base["q.weight"].std)
    assert p["k.weight"].std == pytest.approx(base["k.weight"].std)
    assert (p["q.weight"].source == UNSCALED_QUERY) == (expected != 1.0)


@pytest.mark.hf
def test_t5_query_and_rescaled_tied_table() -> None:
    _needs_hf("t5")
    model = _built(ARCHITECTURES["t5"].build, 500)
    p = _init_like_suite("t5", model, 500)
    d, d_kv = model.config.d_model, model.config.d_kv
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert p[q].std == pytest.approx((d * d_kv) ** -0.5)  # T5's own query std
    assert p["decoder.block.0.layer.1.EncDecAttention.q.weight"].std == pytest.approx(p[q].std)
    c = d**-0.5  # T5 scales the decoder output before its tied head
    assert p["shared.weight"].std == pytest.approx(
        min(1.0, RESCALED_TIED_GAIN / (c * math.sqrt(d)))
    )
    for name in ("gpt2", "llama", "bart"):  # scaled attention, plain tied head: unchanged
        other = _built(ARCHITECTURES[name].build, 500)
        entries = _init_like_suite(name, other, 500).entries.values()
        assert all(e.source != UNSCALED_QUERY for e in entries)


def test_models_suite_smoke() -> None:
    from initlab.bench.run import _models, summarize

    runs = _models(1, 2, lambda s: None, ["vit-timm"])
    assert [r.method for r in runs] == ["initlab", "own", "kaiming_normal_"]
    assert all(math.isfinite(r.extra["val_loss"]) and r.extra["act_std"] for r in runs)
    rows = summarize(runs)
    assert rows[0]["log classes"] == f"{math.log(10):.3f}" and "held-out loss, 200 steps" in rows[0]


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 0.999])
def test_dropout_before_the_head_scales_its_gain_for_train_mode(p: float) -> None:
    # in train mode dropout multiplies the head input's second moment by 1 / (1 - p): the head
    # starts at gain HEAD_GAIN sqrt(1 - p), so the train-mode initial loss stays at log(classes)
    net = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Dropout(p), nn.Flatten(), nn.Linear(256, 10)
    )
    plan = initlab.init(net, example=torch.randn(8, 64), seed=0)
    head = plan["4.weight"]
    assert head.gain == pytest.approx(HEAD_GAIN * math.sqrt(1 - p))
    assert ("dropout" in head.note) == (p > 0)
    net.train()
    torch.manual_seed(0)
    # 2048 samples: the loss's standard error is about 0.01 nats, below the 0.05 margin
    assert abs(_excess_on_random_inputs(net, 64, 10, seed=3)) < 0.05


def test_layers_side_by_side_are_no_deep_chain() -> None:
    """SqueezeNet's Fire modules (a squeeze conv, then a 1x1 and a 3x3 expand concatenated): 26
    weight layers but 18 on the longest path. ZerO and orthogonal maps on the two expands kept
    the digits' held-out loss at chance (2.285 after 200 Adam steps, 3 seeds; 1.57 with Kaiming)."""

    class Fire(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.squeeze = nn.Conv2d(c, c // 2, 1)
            self.e1, self.e3 = nn.Conv2d(c // 2, c // 2, 1), nn.Conv2d(c // 2, c // 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = F.relu(self.squeeze(x))
            return torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), *[Fire(8) for _ in range(5)],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    g = initlab.trace(net, x)
    assert g.longest_path == 1 + 5 * 2 + 1 < 1 + 5 * 3 + 1
    p = initlab.plan(net, example=x)
    assert {e.scheme for e in p if e.role == "weight"} == {"kaiming_normal"}
    assert p["9.weight"].gain == HEAD_GAIN
    chain = plain_mlp(64, 10, 16, 32, "relu")
    assert initlab.trace(chain, torch.randn(2, 64)).longest_path == 16


# --------------------------------------------------------------------------- layers a norm reads


def _bn_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def test_layers_only_a_norm_reads_start_smaller_and_compute_the_same() -> None:
    """A conv before its BatchNorm is drawn at NORMALIZED_GAIN of its Kaiming gain: the network
    computes the same function in train mode (BN divides the scale out), only Adam's and SGD's
    relative steps on those weights are larger."""
    x = torch.randn(64, 3, 8, 8, generator=_gen())
    small, plain = _built(_bn_cnn), _built(_bn_cnn)
    p = initlab.init(small, example=x, seed=3)
    q = initlab.init(plain, example=x, seed=3, normalized_scale=1.0)
    for name in ("0.weight", "3.weight", "6.weight"):
        assert p[name].source == NORMALIZED and q[name].source != NORMALIZED
        assert p[name].std == pytest.approx(NORMALIZED_GAIN * q[name].std)
        assert p[name].gain == pytest.approx(NORMALIZED_GAIN * q[name].gain)
        ratio = small.get_parameter(name) / plain.get_parameter(name)
        torch.testing.assert_close(ratio, torch.full_like(ratio, NORMALIZED_GAIN))  # same draws
    # the head, measured on the example, sees the same features (up to BN's eps)
    assert p["11.weight"].source != NORMALIZED
    assert p["11.weight"].std == pytest.approx(q["11.weight"].std, rel=1e-3)
    assert "3 weight layer(s) that only a norm reads at gain x normalized_scale" in str(
        p
    ) and "only a norm" not in str(q)
    small.train(), plain.train()
    with torch.no_grad():
        # BN's eps (1e-5) weighs 16x more against the smaller variance: ~1e-4 relative
        torch.testing.assert_close(small(x), plain(x), rtol=2e-3, atol=2e-4)
    named = initlab.plan(_built(_bn_cnn), "kaiming_normal", example=x)  # a scheme as named
    assert all(e.source != NORMALIZED for e in named)
    assert initlab.plan(_built(_bn_cnn), "kaiming_normal", example=x,
                        normalized_scale=0.5)["0.weight"].source == NORMALIZED  # fmt: skip
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(InitlabError, match="normalized_scale"):
            initlab.plan(_built(_bn_cnn), example=x, normalized_scale=bad)
