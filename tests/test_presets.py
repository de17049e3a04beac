"""Presets reproduce their references' per-parameter std on small models written here.

Tolerance for an empirical std over n i.i.d. draws: |s / sigma - 1| <= k sqrt((kurtosis - 1) / (4 n))
with k = 5 (normal: kurtosis 3; uniform: 1.8; cut normals: less than 3).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.errors import InitlabError
from initlab.graph import trace
from initlab.planning import init
from initlab.presets import (
    PRESETS,
    ForgetGateBias,
    find_blocks,
    initialized_params,
    num_blocks,
    preset_rules,
    skip_initialized_rules,
)
from initlab.schemes import truncated_normal_std

K = 5.0
TN3 = truncated_normal_std(-3, 3)  # 0.9866
TN2 = truncated_normal_std(-2, 2)  # 0.8796


def assert_std(t: torch.Tensor, sigma: float, kurtosis: float = 3.0, name: str = "") -> None:
    s = t.detach().double().std().item()
    tol = K * math.sqrt((kurtosis - 1) / (4 * t.numel()))
    assert abs(s / sigma - 1) <= tol, f"{name}: std {s:.5g}, expected {sigma:.5g} (tol {tol:.3g})"


# ---------------------------------------------------------------------------------------------
# small models in the naming of each codebase


class NanoBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.nh = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """karpathy/nanoGPT model.py's GPT, tiny: wte tied to lm_head."""

    def __init__(self, vocab: int = 96, block: int = 16, n_layer: int = 3, c: int = 64) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, c), wpe=nn.Embedding(block, c),
            h=nn.ModuleList([NanoBlock(c) for _ in range(n_layer)]), ln_f=nn.LayerNorm(c),
        ))  # fmt: skip
        self.lm_head = nn.Linear(c, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.n_layer = n_layer

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for blk in self.transformer.h:
            x = blk(x)
        return self.lm_head(self.transformer.ln_f(x))

    def reference_init(self, gen: torch.Generator) -> None:
        """nanoGPT's ``_init_weights`` + the c_proj loop, verbatim but for the generator."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=gen)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layer), generator=gen)


class LlamaBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.attention_norm, self.ffn_norm = nn.RMSNorm(d), nn.RMSNorm(d)
        self.attention = nn.Module()
        for n in ("wq", "wk", "wv", "wo"):
            setattr(self.attention, n, nn.Linear(d, d, bias=False))
        self.feed_forward = nn.Module()
        ff = self.feed_forward
        ff.w1, ff.w2, ff.w3 = (
            nn.Linear(d, h, bias=False),
            nn.Linear(h, d, bias=False),
            nn.Linear(d, h, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, y = self.attention, self.attention_norm(x)
        att = torch.softmax(a.wq(y) @ a.wk(y).transpose(1, 2) / 8, -1) @ a.wv(y)
        x = x + a.wo(att)
        ff, y = self.feed_forward, self.ffn_norm(x)
        return x + ff.w2(F.silu(ff.w1(y)) * ff.w3(y))


class TitanLlama(nn.Module):
    """torchtitan's llama3 Transformer naming, tiny."""

    def __init__(self, vocab: int = 96, d: int = 64, h: int = 128, n_layers: int = 3) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([LlamaBlock(d, h) for _ in range(n_layers)])
        self.norm = nn.RMSNorm(d)
        self.output = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))


class OlmoBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.attn_norm, self.ff_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att_proj, self.attn_out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.ff_proj, self.ff_out = nn.Linear(d, 2 * h, bias=False), nn.Linear(h, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.att_proj(self.attn_norm(x)).chunk(3, -1)
        x = x + self.attn_out(torch.softmax(q @ k.transpose(1, 2) / 8, -1) @ v)
        a, g = self.ff_proj(self.ff_norm(x)).chunk(2, -1)
        return x + self.ff_out(F.silu(g) * a)


class Olmo(nn.Module):
    """allenai/OLMo olmo/model.py naming, tiny (the head is transformer.ff_out)."""

    def __init__(self, vocab: int = 96, d: int = 64, h: int = 128, n_layers: int = 3) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, d), blocks=nn.ModuleList([OlmoBlock(d, h) for _ in range(n_layers)]),
            ln_f=nn.LayerNorm(d), ff_out=nn.Linear(d, vocab, bias=False),
        ))  # fmt: skip

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.transformer.wte(idx)
        for b in self.transformer.blocks:
            x = b(x)
        return self.transformer.ff_out(self.transformer.ln_f(x))


class ViTBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.qkv(self.norm1(x)).chunk(3, -1)
        x = x + self.attn.proj(torch.softmax(q @ k.transpose(1, 2) / 8, -1) @ v)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ViT(nn.Module):
    """timm VisionTransformer naming, tiny: 16x16 images, 4x4 patches."""

    def __init__(self, d: int = 64, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, d))
        self.blocks = nn.ModuleList([ViTBlock(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """torchvision ResNet naming, tiny (BasicBlock)."""

    def __init__(self, c: int = 32, blocks: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.out = nn.Linear(32, 20)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(self.emb(idx))[0])


TOKENS = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))


def run(model: nn.Module, preset: str, example: object, **options: object):
    graph = trace(model, example)
    rules = preset_rules(preset, model, graph, **options)
    return init(model, example=example, rules=rules, seed=0, graph=graph)


# ---------------------------------------------------------------------------------------------
# per-preset references


def gpt2_reference(model: NanoGPT) -> dict[str, float]:
    L = model.n_layer
    ref = {"transformer.wte.weight": 0.02, "transformer.wpe.weight": 0.02}
    for i in range(L):
        ref[f"transformer.h.{i}.attn.c_attn.weight"] = 0.02
        ref[f"transformer.h.{i}.mlp.c_fc.weight"] = 0.02
        ref[f"transformer.h.{i}.attn.c_proj.weight"] = 0.02 / math.sqrt(2 * L)
        ref[f"transformer.h.{i}.mlp.c_proj.weight"] = 0.02 / math.sqrt(2 * L)
    return ref


@pytest.mark.parametrize("preset", ["gpt2", "megatron"])
def test_gpt2_megatron_reproduce_nanogpt(preset: str) -> None:
    model = NanoGPT()
    p = run(model, preset, TOKENS)
    ref = gpt2_reference(model)
    for name, sigma in ref.items():
        assert p[name].std == pytest.approx(sigma)
        assert_std(model.get_parameter(name), sigma, name=name)
    # the tied head is one tensor, planned and drawn once, with the embedding's std
    assert p["transformer.wte.weight"].tied == ("lm_head.weight",)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" not in p.entries
    for n, t in model.named_parameters():
        if n.endswith("bias") or "ln_" in n:
            expected = 1.0 if (n.endswith("weight") and "ln_" in n) else 0.0
            assert torch.all(t == expected), n
    # and agrees with nanoGPT's own code, drawn independently
    ref_model = NanoGPT()
    ref_model.reference_init(torch.Generator().manual_seed(1))
    for name, sigma in ref.items():
        assert_std(ref_model.get_parameter(name), sigma, name=name)


def test_megatron_sigma_option() -> None:
    model = NanoGPT(n_layer=2)
    rules = preset_rules("megatron", model, sigma=0.01)
    assert rules["transformer.h.1.mlp.c_proj.weight"] == ("normal", {"std": 0.01 / 2})


def test_torchtitan_reproduces_llama3() -> None:
    model = TitanLlama()
    p = run(model, "torchtitan", TOKENS)
    d = 64
    assert_std(model.tok_embeddings.weight, 1.0, name="tok_embeddings")
    assert_std(model.output.weight, d**-0.5 * TN3, kurtosis=2.9, name="output")
    assert p["output.weight"].std == pytest.approx(d**-0.5 * TN3)
    assert model.output.weight.abs().max() <= 3 * d**-0.5 + 1e-7
    for lid, layer in enumerate(model.layers):
        scaled = 0.02 / math.sqrt(2 * (lid + 1))
        for n in ("wq", "wk", "wv"):
            assert_std(getattr(layer.attention, n).weight, 0.02, name=n)
        assert_std(layer.attention.wo.weight, scaled, name=f"{lid} wo")
        assert_std(layer.feed_forward.w1.weight, 0.02, name="w1")
        for n in ("w2", "w3"):
            assert_std(getattr(layer.feed_forward, n).weight, scaled, name=f"{lid} {n}")
        assert torch.all(layer.attention_norm.weight == 1)
    flat = preset_rules("torchtitan", model, depth_init=False)
    assert flat["layers.0.attention.wo.weight"][1]["std"] == pytest.approx(0.02 / math.sqrt(6))


def test_olmo_mitchell_reproduces_olmo() -> None:
    model = Olmo()
    run(model, "olmo-mitchell", TOKENS)
    d, h = 64, 128
    t = model.transformer
    assert_std(t.wte.weight, d**-0.5 * TN3, 2.9, "wte")
    assert_std(t.ff_out.weight, d**-0.5 * TN3, 2.9, "head")
    for lid, b in enumerate(t.blocks):
        assert_std(b.att_proj.weight, d**-0.5 * TN3, 2.9, "att_proj")
        assert_std(b.ff_proj.weight, d**-0.5 * TN3, 2.9, "ff_proj")
        sigma = 1 / math.sqrt(2 * d * (lid + 1))
        assert_std(b.attn_out.weight, sigma * TN3, 2.9, f"{lid} attn_out")
        assert b.attn_out.weight.abs().max() <= 3 * sigma + 1e-7
        assert_std(b.ff_out.weight, TN3 / math.sqrt(2 * h * (lid + 1)), 2.9, f"{lid} ff_out")


def test_olmo2() -> None:
    model = Olmo()
    run(model, "olmo2", TOKENS)
    for n, t in model.named_parameters():
        if t.dim() == 2:
            assert_std(t, 0.02 * TN3, 2.9, n)
            assert t.abs().max() <= 0.06 + 1e-7


IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_vit_default() -> None:
    model = ViT()
    default_conv = model.patch_embed.proj.weight.detach().clone()
    run(model, "vit", IMAGES)
    assert torch.equal(model.patch_embed.proj.weight, default_conv)  # timm leaves it
    for n, t in model.named_parameters():
        if (n.startswith("blocks") and t.dim() == 2) or n == "head.weight":
            assert_std(t, 0.02, name=n)
    assert_std(model.pos_embed, 0.02, name="pos_embed")
    assert_std(model.cls_token, 1e-6, name="cls")  # 64 values: tol 0.44
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)


def test_vit_jax() -> None:
    model = ViT()
    run(model, "vit-jax", IMAGES)
    d = 64
    b0 = model.blocks[0]
    # one Xavier over the whole fused qkv matrix
    assert_std(b0.attn.qkv.weight, math.sqrt(2 / (d + 3 * d)), 1.8, "qkv")
    assert_std(b0.mlp.fc1.weight, math.sqrt(2 / (d + 4 * d)), 1.8, "fc1")
    assert_std(b0.mlp.fc1.bias, 1e-6, name="fc1.bias")
    assert torch.all(b0.attn.qkv.bias == 0)
    assert torch.all(model.head.weight == 0) and torch.all(model.head.bias == 0)
    fan_in = 3 * 4 * 4
    assert_std(model.patch_embed.proj.weight, 1 / math.sqrt(fan_in), 2.9, "patch lecun")
    run(model, "vit-jax", IMAGES, nlhb=True)
    assert torch.allclose(model.head.bias, torch.full((10,), -math.log(10)))


def test_vit_moco() -> None:
    model = ViT()
    run(model, "vit-moco", IMAGES)
    d = 64
    qkv = model.blocks[1].attn.qkv.weight
    bound = math.sqrt(6 / (d + d))  # per Q/K/V slice
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.99 * bound
    assert_std(qkv, bound / math.sqrt(3), 1.8, "qkv")
    assert_std(model.blocks[1].attn.proj.weight, math.sqrt(2 / (2 * d)), 1.8, "proj")
    assert_std(model.head.weight, math.sqrt(2 / (d + 10)), 1.8, "head")


def test_resnet_zero_residual() -> None:
    model = ResNet()
    fc = model.fc.weight.detach().clone()
    run(model, "resnet-zero-residual", IMAGES)
    for blk in model.layer1:
        assert torch.all(blk.bn2.weight == 0) and torch.all(blk.bn1.weight == 1)
        assert_std(blk.conv1.weight, math.sqrt(2 / (32 * 9)), name="conv1")
    assert torch.all(model.bn1.weight == 1)
    assert_std(model.conv1.weight, math.sqrt(2 / (32 * 9)), name="stem")  # fan_out = 32*3*3
    assert torch.equal(model.fc.weight, fc)  # torchvision leaves fc at PyTorch's default
    x = torch.randn(2, 32, 8, 8).relu()
    model.eval()  # every block starts as relu(x + 0): the identity on non-negative inputs
    assert torch.equal(model.layer1(x), x)


def test_resnet_zero_residual_without_graph_uses_names() -> None:
    rules = preset_rules("resnet-zero-residual", ResNet())
    assert rules["layer1.0.bn2.weight"] == "zeros" and rules["layer1.0.bn1.weight"] == "ones"


def test_lstm_forget_bias() -> None:
    model = LSTMNet()
    run(model, "lstm-forget-bias", torch.randint(0, 20, (2, 5)))
    H = 32
    for layer in range(2):
        b_ih, b_hh = (
            getattr(model.lstm, f"bias_ih_l{layer}"),
            getattr(model.lstm, f"bias_hh_l{layer}"),
        )
        assert (
            torch.all(b_ih[H : 2 * H] == 1)
            and torch.all(b_ih[:H] == 0)
            and torch.all(b_ih[2 * H :] == 0)
        )
        assert torch.all(b_hh == 0)
    cell_rules = preset_rules("lstm-forget-bias", nn.LSTMCell(4, 8))
    assert isinstance(cell_rules["bias_ih"], ForgetGateBias)
    with pytest.raises(InitlabError, match=r"no nn\.LSTM"):
        preset_rules("lstm-forget-bias", nn.GRU(4, 8))


def test_bert_padding_row() -> None:
    model = nn.Sequential(nn.Embedding(50, 32, padding_idx=0), nn.Linear(32, 50))
    run(model, "bert", torch.tensor([[1, 2, 0]]))
    assert torch.all(model[0].weight[0] == 0)
    assert_std(model[0].weight[1:], 0.02, name="emb")


def test_depth_is_read_from_the_model() -> None:
    assert num_blocks(NanoGPT(n_layer=5)) == 5
    seq = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(InitlabError, match="depth"):
        num_blocks(seq)


def test_registry_and_errors() -> None:
    assert set(PRESETS) >= {"gpt2", "megatron", "olmo-mitchell", "olmo2", "torchtitan", "vit-jax",
                            "vit-moco", "vit", "resnet-zero-residual", "lstm-forget-bias"}  # fmt: skip
    for p in PRESETS.values():
        assert p.fn.__doc__ and "Source" in p.fn.__doc__, p.name
    with pytest.raises(InitlabError, match="gpt2"):
        preset_rules("gtp2", NanoGPT())
    with pytest.raises(InitlabError, match="no option"):
        preset_rules("gpt2", NanoGPT(), depth_init=True)


def test_presets_are_reproducible() -> None:
    a, b = NanoGPT(), NanoGPT()
    run(a, "gpt2", TOKENS)
    run(b, "gpt2", TOKENS)
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(x, y), n


def test_skip_initialized() -> None:
    model = NanoGPT(n_layer=2)
    loaded = model.transformer.h[0].attn.c_attn.weight
    loaded._is_hf_initialized = True  # transformers >= 5 marks each loaded tensor
    # a module flag only means "HF's _init_weights visited it": ignored
    model.transformer.h[1].mlp.c_fc._is_hf_initialized = True
    before = loaded.detach().clone()
    assert initialized_params(model) == ["transformer.h.0.attn.c_attn.weight"]
    rules = {**preset_rules("gpt2", model), **skip_initialized_rules(model)}
    p = init(model, example=TOKENS, rules=rules)
    assert p["transformer.h.0.attn.c_attn.weight"].scheme == "keep"
    assert p["transformer.h.1.mlp.c_fc.weight"].scheme == "normal"
    assert torch.equal(loaded, before)
    # transformers < 5: from the loading report's missing keys
    everything = [n for n, _ in model.named_parameters()]
    assert initialized_params(model, missing_keys=["lm_head.weight", "transformer.wpe.weight"]) == [
        n for n in everything if n != "transformer.wpe.weight"
    ]


# ---------------------------------------------------------------------------------------------
# low precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_presets(dtype: torch.dtype) -> None:
    model = Olmo().to(dtype)
    run(model, "olmo2", TOKENS)
    w = model.transformer.blocks[0].att_proj.weight
    assert w.dtype == dtype and torch.isfinite(w).all()
    assert_std(w.float(), 0.02 * TN3, 2.9, "att_proj")
    assert w.float().abs().max() <= 0.06 * 1.01  # the cut survives the cast
    fp32 = Olmo()
    run(fp32, "olmo2", TOKENS)  # same stream: the low-precision draw is the fp32 draw, rounded
    ref = fp32.transformer.blocks[0].att_proj.weight.to(dtype)
    assert torch.equal(w, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_orthogonal(dtype: torch.dtype) -> None:
    model = LSTMNet().to(dtype)
    run(model, "lstm-forget-bias", torch.randint(0, 20, (2, 5)))
    w = model.lstm.weight_hh_l0  # orthogonal per gate (QR in fp32, then cast)
    assert w.dtype == dtype
    eps = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for gate in w.float().chunk(4, 0):
        assert torch.allclose(gate @ gate.T, torch.eye(32), atol=8 * eps)
    assert torch.all(model.lstm.bias_ih_l0[32:64] == 1)


def test_preset_argument_ranks_below_user_rules() -> None:
    from initlab.planning import plan as make_plan

    model = NanoGPT()
    x = torch.randint(0, 96, (2, 8))
    p = make_plan(model, example=x, preset="gpt2", rules={"head": "zeros", "weight": "orthogonal"})
    proj = [e for e in p if e.name.endswith("c_proj.weight")]
    assert proj and all(e.scheme == "orthogonal" for e in proj)  # a user role rule beats the preset
    assert p["transformer.wte.weight"].scheme == "zeros"  # tied head: role rule beats the preset
    q = make_plan(model, example=x, preset="gpt2")
    assert all(e.scheme == "normal" for e in q if e.name.endswith("c_proj.weight"))


# ---------------------------------------------------------------------------------------------
# blocks however the model holds them


class TitanAnyLayout(nn.Module):
    """torchtitan's llama3 model with its blocks held in one of several containers.

    ``moduledict`` is torchtitan's own: ``self.layers = nn.ModuleDict({str(i): Block(...)})``.
    """

    def __init__(self, layout: str, n_layers: int = 4, d: int = 32, h: int = 64) -> None:
        super().__init__()
        self.layout = layout
        self.tok_embeddings = nn.Embedding(96, d)
        blocks = [LlamaBlock(d, h) for _ in range(n_layers)]
        if layout == "moduledict":
            self.layers = nn.ModuleDict({str(i): b for i, b in enumerate(blocks)})
        elif layout == "moduledict-named":  # keys that are not numbers: order from the trace
            self.layers = nn.ModuleDict({f"block_{'abcdefgh'[i]}": b for i, b in enumerate(blocks)})
        elif layout == "modulelist":
            self.layers = nn.ModuleList(blocks)
        elif layout == "sequential":
            self.layers = nn.Sequential(*blocks)
        else:  # numbered attributes, e.g. layer0, layer1 or h_0, h_1
            for i, b in enumerate(blocks):
                setattr(self, f"{layout}{i}", b)
        self.n_layers = n_layers
        self.norm = nn.RMSNorm(d)
        self.output = nn.Linear(d, 96, bias=False)

    def blocks(self) -> list[nn.Module]:
        if self.layout.startswith("moduledict"):
            return list(self.layers.values())
        if self.layout in ("modulelist", "sequential"):
            return list(self.layers)
        return [getattr(self, f"{self.layout}{i}") for i in range(self.n_layers)]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(idx)
        for b in self.blocks():
            x = b(x)
        return self.output(self.norm(x))


LAYOUTS = ["moduledict", "moduledict-named", "modulelist", "sequential", "layer", "h_"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("traced", [True, False])
def test_torchtitan_finds_blocks_in_any_container(layout: str, traced: bool) -> None:
    if layout == "moduledict-named" and not traced:
        pytest.skip("keys that are not numbers need the trace to order the blocks")
    model = TitanAnyLayout(layout)
    graph = trace(model, TOKENS) if traced else None
    rules = preset_rules("torchtitan", model, graph)
    names = {id(m): n for n, m in model.named_modules()}
    assert num_blocks(model, graph) == 4
    for l, block in enumerate(model.blocks()):
        prefix = names[id(block)]
        scaled = 0.02 / math.sqrt(2 * (l + 1))
        for leaf in ("attention.wo", "feed_forward.w2", "feed_forward.w3"):
            assert rules[f"{prefix}.{leaf}.weight"][1]["std"] == pytest.approx(scaled), leaf
        for leaf in ("attention.wq", "feed_forward.w1"):
            assert rules[f"{prefix}.{leaf}.weight"][1]["std"] == pytest.approx(0.02), leaf
    assert rules["output.weight"][1]["std"] == pytest.approx(32**-0.5)


@pytest.mark.parametrize("layout", ["moduledict", "sequential", "h_"])
def test_torchtitan_draws_depth_scaled_stds_on_any_layout(layout: str) -> None:
    model = TitanAnyLayout(layout, n_layers=3, d=64, h=128)
    run(model, "torchtitan", TOKENS)
    for l, block in enumerate(model.blocks()):
        scaled = 0.02 / math.sqrt(2 * (l + 1))
        assert_std(block.attention.wo.weight, scaled, name=f"{l} wo")
        assert_std(block.feed_forward.w2.weight, scaled, name=f"{l} w2")


@pytest.mark.parametrize("layout", ["moduledict", "sequential", "layer"])
def test_gpt2_and_olmo_read_depth_from_any_container(layout: str) -> None:
    model = TitanAnyLayout(layout, n_layers=5)
    rules = preset_rules("gpt2", model, trace(model, TOKENS))
    prefix = {id(m): n for n, m in model.named_modules()}[id(model.blocks()[2])]
    assert rules[f"{prefix}.attention.wo.weight"] == ("normal", {"std": 0.02 / math.sqrt(10)})
    mitchell = preset_rules("olmo-mitchell", model)
    fan_in = 32
    assert mitchell[f"{prefix}.attention.wo.weight"][1]["std"] == pytest.approx(
        1 / math.sqrt(2 * fan_in * 3)
    )


def test_a_plain_sequential_of_layers_is_not_a_stack_of_blocks() -> None:
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(InitlabError, match="depth"):
        num_blocks(seq)


class SeqBlock(nn.Module):
    """A pre-LN block with GPT-2's names, for a model that is one nn.Sequential."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln(x))))


@pytest.mark.parametrize("traced", [True, False])
def test_blocks_inside_a_mixed_sequential(traced: bool) -> None:
    model = nn.Sequential(
        nn.Embedding(96, 16), *[SeqBlock(16) for _ in range(4)], nn.Linear(16, 96)
    )
    graph = trace(model, TOKENS) if traced else None
    assert find_blocks(model, graph).names == ("1", "2", "3", "4")
    rules = preset_rules("gpt2", model, graph)
    assert rules["3.mlp.c_proj.weight"] == ("normal", {"std": 0.02 / math.sqrt(8)})
    assert rules["3.mlp.c_fc.weight"] == ("normal", {"std": 0.02})
