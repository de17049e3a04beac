"""A meta-device model runs after init: buffers and kept parameters get their values, or an error
names each one before anything is allocated."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from initlab.errors import InitlabError
from initlab.planning import init, plan
from tests.models import cnn_bn
from tests.test_graph_streams import PatchViT


def _on_meta(t: torch.Tensor) -> bool:
    return t.device.type == "meta"


def _builds(build: Callable[[], nn.Module], meta: bool) -> list[nn.Module]:
    """``build()`` under two different global seeds (the constructor's own draws differ), and
    once on the meta device when ``meta``: an init from one seed must make them all equal."""
    models = []
    for seed in (0, 1):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            models.append(build())
    if meta:
        with torch.device("meta"):
            models.append(build())
    return models


def _assert_same_state(models: list[nn.Module]) -> None:
    for name, t in models[0].state_dict().items():
        assert all(torch.equal(t, m.state_dict()[name]) for m in models[1:]), name


def test_batchnorm_cnn_built_on_meta_runs_like_the_one_built_on_cpu():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = cnn_bn()
    init(ref, example=x, seed=3)
    with torch.device("meta"):
        model = cnn_bn()
    init(model, example=x, seed=3, device="cpu")
    assert not any(_on_meta(t) for t in [*model.parameters(), *model.buffers()])
    for (name, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # weights drawn alike; running stats 0 / 1, counter 0
    assert torch.equal(model(x), ref(x))  # train mode: batch statistics, then updated stats
    assert torch.equal(model[1].running_mean, ref[1].running_mean)
    model.eval(), ref.eval()
    assert torch.equal(model(x), ref(x))


def test_kept_parameters_without_a_source_are_named_before_anything_is_allocated():
    x = torch.randn(2, 3, 8, 8)
    with torch.device("meta"):
        model = PatchViT()
    with pytest.raises(
        InitlabError, match=r"cls_token.*pos_embed.*Nothing was allocated.*meta_state"
    ):
        init(model, example=x, device="cpu")
    assert all(_on_meta(p) for p in model.parameters())  # nothing allocated, nothing swapped

    pos = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(0)) * 0.02
    init(
        model,
        example=x,
        device="cpu",
        meta_state={"pos_embed": pos, "cls_token": torch.zeros(1, 1, 16)},
    )
    assert torch.equal(model.pos_embed, pos) and not model.cls_token.any()
    assert model(x).shape == (2, 3)


def test_empty_kept_tensors_need_no_source():
    class WithEmpty(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.nothing = nn.Parameter(torch.empty(0))
            self.register_buffer("none_yet", torch.empty(0, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.nothing.sum()

    with torch.device("meta"):
        model = WithEmpty()
    init(model, example=torch.randn(2, 4), device="cpu")
    assert model.nothing.device.type == "cpu" and model.none_yet.shape == (0, 4)
    assert model(torch.randn(2, 4)).isfinite().all()


def test_meta_state_callable_and_rules_are_sources_too():
    x = torch.randn(2, 3, 8, 8)
    with torch.device("meta"):
        model = PatchViT()

    def fill(name: str, meta: torch.Tensor) -> torch.Tensor | None:
        return torch.full(meta.shape, 0.5) if name == "cls_token" else None

    init(
        model,
        example=x,
        device="cpu",
        meta_state=fill,
        rules={"pos_embed": ("normal", {"std": 0.02})},
    )
    assert torch.equal(model.cls_token, torch.full((1, 1, 16), 0.5))
    with pytest.raises(InitlabError, match=r"shape \(1, 1, 16\)"):
        with torch.device("meta"):
            other = PatchViT()
        init(
            other,
            example=x,
            device="cpu",
            meta_state={"cls_token": torch.zeros(3), "pos_embed": torch.zeros(1, 5, 16)},
        )


def test_torch_modules_reset_their_kept_parameters():
    """A frozen Linear (kept) gets its constructor's init from torch's own reset_parameters."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    model[0].requires_grad_(False)
    init(model, example=torch.randn(2, 64), device="cpu")
    w = model[0].weight
    assert not _on_meta(w) and not w.requires_grad
    bound = 1 / 64**0.5  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


transformers = pytest.importorskip("transformers")
SMALL = dict(vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
IDS = {"input_ids": torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(0))}


def _llama():
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=16, **SMALL)  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.hf
def test_llama_built_on_meta_equals_the_one_built_on_cpu():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = _llama()
    init(ref, example=IDS, seed=5)
    with torch.device("meta"):
        model = _llama()
    rng_before = torch.get_rng_state()
    init(model, example=IDS, seed=5, device="cpu")
    assert torch.equal(rng_before, torch.get_rng_state())
    assert not any(_on_meta(t) for t in [*model.parameters(), *model.buffers()])
    inv = dict(model.named_buffers())["model.rotary_emb.inv_freq"]
    assert torch.equal(inv, dict(ref.named_buffers())["model.rotary_emb.inv_freq"])
    ref.eval(), model.eval()
    assert torch.equal(model(**IDS).logits, ref(**IDS).logits)


@pytest.mark.hf
def test_kept_parameters_get_the_models_own_init_reproducibly():
    """Mamba's A_log and D (constants) equal the CPU-built model's; a ViT's class token and
    position table come from its own init code, the same for the same seed."""
    cfg = transformers.MambaConfig(hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                   conv_kernel=3, **SMALL)  # fmt: skip
    ref = transformers.MambaForCausalLM(cfg)
    with torch.device("meta"):
        model = transformers.MambaForCausalLM(cfg)
    init(model, example=IDS, device="cpu")
    for name in ("backbone.layers.0.mixer.A_log", "backbone.layers.1.mixer.D"):
        assert torch.equal(model.get_parameter(name), ref.get_parameter(name)), name
    assert model(**IDS).logits.isfinite().all()

    vcfg = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, image_size=16, patch_size=4, num_labels=3)  # fmt: skip
    px = {"pixel_values": torch.randn(2, 3, 16, 16)}
    kept = []
    for _ in range(2):
        with torch.device("meta"):
            vit = transformers.ViTForImageClassification(vcfg)
        init(vit, example=px, device="cpu", seed=1)
        kept.append(vit.vit.embeddings.position_embeddings.detach().clone())
        assert vit(**px).logits.isfinite().all()
    assert torch.equal(kept[0], kept[1])
    n = kept[0].numel()  # its init: N(0, 0.02) (truncated at +-2, i.e. never): std within 5 sigma
    assert abs(kept[0].std().item() / 0.02 - 1) <= 5 * (2 / (4 * n)) ** 0.5


class _LegacyParam(nn.Module):
    """A parameter made by a constructor that ignores ``torch.device("meta")``: under a meta
    build it is a CPU tensor of uninitialized memory, which the model's own init would set."""

    def __init__(self) -> None:
        super().__init__()
        self.config = {"std": 0.02}  # duck-typed as a transformers model: config + _init_weights
        self.lin = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.FloatTensor(4, 4).fill_(float("nan")))  # garbage, made NaN
        self.scale = nn.Parameter(torch.tensor([0.5], device="cpu"))  # set on purpose, on CPU

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, _LegacyParam):
            module.w.data.normal_(0.0, module.config["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) @ self.w * self.scale


def test_stray_cpu_parameters_of_a_meta_build_get_the_models_own_init():
    x = torch.randn(3, 4)
    with torch.device("meta"):
        model = _LegacyParam()
    assert not _on_meta(model.w) and _on_meta(model.lin.weight)
    p = init(model, example=x, device="cpu", seed=2)
    assert p["w"].scheme == "keep" and not torch.isnan(model.w).any()
    assert 0 < model.w.std().item() < 0.1  # N(0, 0.02) from its own init, not the NaN it held
    assert model.scale.item() == 0.5  # no source sets it: its own value stays
    assert model(x).isfinite().all()


def test_stray_cpu_parameters_kept_by_a_rule_or_a_flag_keep_their_values():
    x = torch.randn(3, 4)
    for how in ("rule", "flag"):
        with torch.device("meta"):
            model = _LegacyParam()
        model.w.data.fill_(3.0)  # as if loaded with load_state_dict(..., assign=True)
        if how == "flag":
            model.w._no_reinit = True
        init(model, example=x, device="cpu", seed=2, rules={"w": "keep"} if how == "rule" else None)
        assert torch.equal(model.w, torch.full((4, 4), 3.0)), how


def test_stray_cpu_parameters_are_left_alone_in_a_model_built_on_cpu():
    model = _LegacyParam()
    model.w.data.fill_(3.0)  # as if set by the user: a CPU build has no strays
    init(model, example=torch.randn(3, 4), seed=2)
    assert torch.equal(model.w, torch.full((4, 4), 3.0))


@pytest.mark.hf
def test_xlnet_built_on_meta_runs_after_init():
    """XLNet's attention weights are ``nn.Parameter(torch.FloatTensor(...))``: on a meta build
    they held uninitialized memory (NaN logits); they now get its ``_init_weights``."""
    cfg = transformers.XLNetConfig(d_model=16, n_layer=2, n_head=2, d_inner=32, **SMALL)
    with torch.device("meta"):
        model = transformers.XLNetLMHeadModel(cfg)
    init(model, example=IDS, device="cpu", seed=0)
    q = model.transformer.layer[0].rel_attn.q
    tol = 5 * (2 * q.numel()) ** -0.5  # 5 standard errors of a std estimated from n draws
    assert q.isfinite().all() and abs(q.std().item() / cfg.initializer_range - 1) < tol
    assert model(**IDS).logits.isfinite().all()


def _weight_normed() -> nn.Module:
    return nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3)), nn.ReLU(),
        nn.Flatten(), nn.utils.parametrizations.weight_norm(nn.Linear(8 * 36, 32)), nn.Tanh(),
        nn.Linear(32, 5),
    )  # fmt: skip


def test_weight_norm_layers_are_drawn_through_their_parametrization():
    """The parametrized layer is the layer (its bias a bias, its fans its own); the drawn weight
    is the effective one: g = ||v|| row by row, so g v / ||v|| is v as the scheme drew it."""
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a, b = _weight_normed(), _weight_normed()
        torch.manual_seed(1)
        c = _weight_normed()  # another construction: the init must not depend on it
    for m in (a, c):
        init(m, example=x, seed=4)
    p = init(b, example=x, seed=4)
    for (name, ta), tc in zip(a.state_dict().items(), c.state_dict().values(), strict=True):
        assert torch.equal(ta, tc), name
    assert (
        p["0.bias"].scheme == "zeros" and p["0.parametrizations.weight.original0"].scheme == "keep"
    )
    for i, fan_in, gain in ((0, 27, 2**0.5), (3, 288, 5 / 3)):
        w, v = a[i].weight, a[i].parametrizations.weight.original1
        assert torch.allclose(w, v, atol=1e-6)
        assert p[f"{i}.parametrizations.weight.original1"].fan_in == fan_in
        n = w.numel()  # the std of n draws: within 5 standard errors
        assert abs(w.std().item() / (gain / fan_in**0.5) - 1) < 5 * (2 * n) ** -0.5
    with torch.device("meta"):
        m = _weight_normed()
    init(m, example=x, seed=4, device="cpu")
    for (name, ta), tm in zip(a.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(ta, tm), name


def test_planning_a_spectral_norm_layer_runs_no_power_iteration():
    x = torch.randn(4, 10)
    m = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(10, 20)), nn.ReLU(),
                      nn.Linear(20, 4))  # fmt: skip
    before = {k: v.clone() for k, v in m.state_dict().items()}
    p = plan(m, example=x)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert p["0.parametrizations.weight.original"].fan_in == 10 and p["0.bias"].scheme == "zeros"


def test_spectral_norm_vectors_are_estimated_for_the_drawn_weight():
    """``_u``/``_v`` come from the seed and 15 power iterations on the weight initlab drew (the
    constructor's were for its own weight), so any construction, and a meta build, give the same
    model, whose normalized weight has spectral norm ~1 in eval mode."""
    x = torch.randn(4, 10)

    def build() -> nn.Module:
        return nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(10, 20)),
                             nn.ReLU(), nn.Linear(20, 4))  # fmt: skip

    models = _builds(build, meta=True)
    for m in models:
        init(m, example=x, seed=7, device="cpu")
    _assert_same_state(models)
    m = models[0].eval()
    assert abs(torch.linalg.matrix_norm(m[0].weight, 2).item() - 1) < 0.1
    assert m(x).isfinite().all()


@pytest.mark.parametrize("out_features, in_features", [(10, 10), (10, 6), (6, 10)])
def test_orthogonal_parametrization_is_set_to_the_draw_made_orthogonal(out_features, in_features):
    """Its ``base`` (the constructor's orthogonal matrix) is replaced by the draw made orthogonal
    through ``right_inverse``: any construction gives the same weight for the same seed, and the
    global RNG (which that ``right_inverse`` reads for a wide matrix) is left as it was."""
    x = torch.randn(4, in_features)

    def build() -> nn.Module:
        lin = nn.Linear(in_features, out_features)
        return nn.Sequential(nn.utils.parametrizations.orthogonal(lin), nn.Tanh(),
                             nn.Linear(out_features, 3))  # fmt: skip

    models = _builds(build, meta=False)
    state = torch.get_rng_state()
    for m in models:
        init(m, example=x, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    _assert_same_state(models)
    w = models[0][0].weight
    gram = w @ w.T if out_features <= in_features else w.T @ w
    assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)


def test_hook_based_weight_norm_sets_g_to_the_drawn_directions_norm():
    """``torch.nn.utils.weight_norm`` (the older API: ``weight_g``, ``weight_v`` and a forward
    pre-hook): ``v`` is drawn as the weight, ``g = ||v||``, so the layer computes ``v``; before,
    ``g`` was drawn as a Kaiming ``(out, 1)`` matrix (random signs, rows 3x too small)."""
    import warnings

    x = torch.randn(4, 10)

    def build() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notice
            return nn.Sequential(nn.utils.weight_norm(nn.Linear(10, 20)), nn.ReLU(),
                                 nn.Linear(20, 3))  # fmt: skip

    models = _builds(build, meta=True)
    plans = [init(m, example=x, seed=2, device="cpu") for m in models]
    assert plans[0]["0.weight_g"].scheme == "keep" and plans[0]["0.weight_v"].fan_in == 10
    _assert_same_state(models)
    lin = models[0][0]
    assert torch.allclose(lin.weight, lin.weight_v, atol=1e-6)
    assert torch.allclose(lin.weight_g.flatten(), lin.weight_v.norm(dim=1))
    assert models[2](x).isfinite().all()
