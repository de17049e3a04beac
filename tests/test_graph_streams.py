"""Residual branches are only ``x + f(x)`` on one stream; summed embeddings are found as such.

Each expected count is the number of residual additions in the model's source, read by hand:
masks and position biases added to attention scores, sums of embeddings, two inputs added, and a
selective scan's ``y + D x`` inside one layer are none.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.graph import trace
from initlab.planning import plan

# ---------------------------------------------------------------------------------------------
# hand-written models


class ShiftedWindowBlock(nn.Module):
    """torchvision's Swin block, reduced: the shift mask is built with ``x.new_zeros`` and added
    to the attention scores, and a relative position bias (a gathered table) is added too."""

    def __init__(self, d: int = 8, window: int = 2, shift: int = 1) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.table = nn.Parameter(torch.zeros(window**4))
        self.window, self.shift = window, shift

    def attention(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        b, h, w, c = x.shape
        x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        win = x.reshape(b, h // self.window, self.window, w // self.window, self.window, c)
        win = win.permute(0, 1, 3, 2, 4, 5).reshape(-1, self.window**2, c)
        q, k, v = self.qkv(win).chunk(3, -1)
        attn = q @ k.transpose(-2, -1) / math.sqrt(c)
        n = self.window**2
        attn = attn + self.table[: n * n].view(n, n)  # relative position bias
        mask = x.new_zeros((h, w))  # torchvision: attn_mask = x.new_zeros((pad_H, pad_W))
        mask[-self.shift :, :] = 1.0
        mask = mask.reshape(h // self.window, self.window, w // self.window, self.window)
        mask = mask.permute(0, 2, 1, 3).reshape(-1, n)
        mask = (mask.unsqueeze(1) - mask.unsqueeze(2)).masked_fill(
            (mask.unsqueeze(1) - mask.unsqueeze(2)) != 0, -100.0
        )
        attn = attn.view(b, -1, n, n) + mask.unsqueeze(0)
        out = attn.softmax(-1).view(-1, n, n) @ v
        out = self.proj(out).reshape(b, h // self.window, w // self.window, self.window,
                                     self.window, c)  # fmt: skip
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return torch.roll(out, (self.shift, self.shift), (1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinySwin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.blocks = nn.Sequential(ShiftedWindowBlock(), ShiftedWindowBlock())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch(x).permute(0, 2, 3, 1))
        return self.head(x.mean((1, 2)))


class MaskedLM(nn.Module):
    """Tokens + positions + segments; eager attention with a padding mask from the ids."""

    def __init__(self, vocab: int = 20, d: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.tok, self.pos, self.seg = (
            nn.Embedding(vocab, d),
            nn.Embedding(8, d),
            nn.Embedding(2, d),
        )
        self.qkv = nn.ModuleList(nn.Linear(d, 3 * d) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(d, d) for _ in range(layers))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])
        x = self.tok(ids) + self.pos(positions) + self.seg(segments)
        bias = (1.0 - (ids != 0).float())[:, None, :] * -1e4  # built from the ids
        for qkv, out in zip(self.qkv, self.out, strict=True):
            q, k, v = qkv(x).chunk(3, -1)
            scores = q @ k.transpose(-2, -1) + bias
            x = x + out(scores.softmax(-1) @ v)
        return self.head(x)


class PatchViT(nn.Module):
    """timm-style: class token concatenated, position parameter added, blocks with layer scale."""

    def __init__(self, d: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, d) * 0.02)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(depth))
        self.fcs = nn.ModuleList(nn.Linear(d, d) for _ in range(depth))
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for norm, fc in zip(self.norms, self.fcs, strict=True):
            x = x + fc(F.gelu(norm(x)))
        return self.head(x[:, 0])


class ScanMixer(nn.Module):
    """Mamba's mixer, reduced: a selective scan ``h_t = a_t h_{t-1} + b_t x_t``, ``y = C h + D x``
    inside one layer, then gated and projected; the block adds it to its input (one residual)."""

    def __init__(self, d: int = 8, inner: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.in_proj = nn.Linear(d, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, 3, padding=2, groups=inner)
        self.dt_proj = nn.Linear(inner, inner)
        self.out_proj = nn.Linear(inner, d)
        self.A_log = nn.Parameter(torch.zeros(inner))
        self.D = nn.Parameter(torch.ones(inner))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        x, gate = self.in_proj(self.norm(h)).chunk(2, -1)
        x = F.silu(self.conv(x.transpose(1, 2))[..., : h.shape[1]]).transpose(1, 2)
        dt = F.softplus(self.dt_proj(x))
        a = torch.exp(-torch.exp(self.A_log) * dt)
        state = torch.zeros_like(x[:, 0])
        ys = []
        for t in range(x.shape[1]):
            state = a[:, t] * state + dt[:, t] * x[:, t]
            ys.append(state)
        y = torch.stack(ys, 1) + x * self.D
        return h + self.out_proj(y * F.silu(gate))


class Latents(nn.Module):
    """A stream that starts at a parameter (learned queries): ``q + f(q)`` is a residual."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(4, d))
        self.ff = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.latents.expand(x.shape[0], -1, -1)
        return q + self.ff(F.relu(q))


def _ends(g) -> list[str]:
    return [b.last for b in g.branches]


def test_shifted_window_mask_and_position_bias_are_no_branches():
    g = trace(TinySwin(), torch.randn(2, 3, 8, 8))
    assert _ends(g) == ["blocks.0.proj", "blocks.0.fc2", "blocks.1.proj", "blocks.1.fc2"]
    assert g.embedding_sums == ()


def test_summed_embeddings_and_a_mask_from_ids():
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    g = trace(MaskedLM(), (ids, torch.zeros_like(ids)))
    assert _ends(g) == ["out.0", "out.1"]
    assert g.embedding_sums == (("tok", "pos", "seg"),)
    assert "residual_out" not in g.layers["tok"].roles | g.layers["pos"].roles


def test_patch_embedding_plus_position_parameter():
    g = trace(PatchViT(), torch.randn(2, 3, 8, 8))
    assert _ends(g) == ["fcs.0", "fcs.1", "fcs.2"]
    assert g.embedding_sums == (("patch", "cls_token", "pos_embed"),)
    assert "residual_out" not in g.layers["patch"].roles


def test_fixed_sinusoidal_positions_are_a_member_by_their_buffer_name():
    class SinusoidLM(nn.Module):
        def __init__(self, vocab: int = 20, d: int = 8) -> None:
            super().__init__()
            self.emb, self.fc, self.head = (
                nn.Embedding(vocab, d),
                nn.Linear(d, d),
                nn.Linear(d, vocab),
            )
            pos = torch.arange(16.0)[:, None] / 10 ** (torch.arange(0, d, 2) / d)
            self.register_buffer("pe", torch.cat([pos.sin(), pos.cos()], -1))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.emb(ids) * math.sqrt(self.emb.embedding_dim) + self.pe[: ids.shape[1]]
            return self.head(x + self.fc(F.relu(x)))

    g = trace(SinusoidLM(), torch.randint(0, 20, (2, 5)))
    assert g.embedding_sums == (("emb", "pe"),)
    assert _ends(g) == ["fc"]


def test_scan_recurrence_inside_one_layer_is_no_branch():
    model = nn.Sequential(ScanMixer(), ScanMixer())
    g = trace(model, torch.randn(2, 5, 8))
    assert _ends(g) == ["0.out_proj", "1.out_proj"]
    assert [b.m for b in g.branches] == [4, 4]  # in_proj, conv, dt_proj, out_proj


def test_two_inputs_added_are_no_branch_but_a_stream_from_a_parameter_has_one():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(5, 4)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    g = trace(Two(), (torch.randn(2, 3), torch.randn(2, 5)))
    assert g.branches == [] and g.embedding_sums == ()
    g = trace(Latents(), torch.randn(2, 3, 8))
    assert _ends(g) == ["ff"]
    assert g.embedding_sums == ()


def test_parallel_branches_summed_before_the_skip_are_one_branch_each():
    """GPT-J / Falcon / GPT-NeoX: ``x + attn(ln(x)) + mlp(ln(x))``: two branches, no shortcut."""

    class Parallel(nn.Module):
        def __init__(self, d: int = 8) -> None:
            super().__init__()
            self.ln, self.attn, self.fc1, self.fc2 = (
                nn.LayerNorm(d),
                nn.Linear(d, d),
                nn.Linear(d, 2 * d),
                nn.Linear(2 * d, d),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.ln(x)
            return self.fc2(F.gelu(self.fc1(h))) + self.attn(h) + x  # the MLP first, as in NeoX

    g = trace(nn.Sequential(Parallel(), Parallel()), torch.randn(2, 8))
    assert sorted(_ends(g)) == ["0.attn", "0.fc2", "1.attn", "1.fc2"]
    assert all(b.skip_layers == () for b in g.branches)
    assert sorted(b.m for b in g.branches) == [1, 1, 2, 2]


def test_cross_attention_counts_on_the_stream_it_is_added_to():
    """A decoder's first cross-attention: its keys and values come through the whole encoder,
    its queries from the decoder's stream, to which it is added."""

    class EncDec(nn.Module):
        def __init__(self, d: int = 8) -> None:
            super().__init__()
            self.enc = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
            self.emb = nn.Embedding(10, d)
            self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            for fc in self.enc:
                x = x + fc(torch.tanh(x))
            y = self.emb(ids)
            k, v = self.kv(x).chunk(2, -1)
            a = (self.q(y) @ k.transpose(-2, -1)).softmax(-1) @ v
            return y + self.o(a)

    g = trace(EncDec(), (torch.randn(2, 5, 8), torch.randint(0, 10, (2, 3))))
    assert _ends(g) == ["enc.0", "enc.1", "enc.2", "o"]
    assert g.branches[-1].layers == ("q", "o") and g.branches[-1].skip_layers == ()


def test_residual_on_the_input_itself():
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    assert _ends(trace(Res(), torch.randn(2, 4))) == ["fc"]


class HandRNN(nn.Module):
    """A recurrent cell written as a loop: ``h_t = tanh(W x_t + U h_{t-1})``; ``U`` shares a
    fork with ``W`` only through ``W``'s *earlier* call, so the sum has no skip connection."""

    def __init__(self, vocab: int = 12, d: int = 8, lstm: bool = False) -> None:
        super().__init__()
        self.lstm, self.d = lstm, d
        gates = 4 * d if lstm else d
        self.emb, self.w, self.u = nn.Embedding(vocab, d), nn.Linear(d, gates), nn.Linear(d, gates)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = c = x.new_zeros(x.shape[0], self.d)
        outs = []
        for t in range(x.shape[1]):
            z = self.w(x[:, t]) + self.u(h)
            if self.lstm:
                i, f, g, o = z.chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                h = torch.tanh(z)
            outs.append(self.head(h))
        return torch.stack(outs, 1)


@pytest.mark.parametrize("lstm", [False, True])
def test_recurrent_cell_written_as_a_loop_is_no_branch(lstm):
    model = HandRNN(lstm=lstm)
    g = trace(model, torch.randint(0, 12, (2, 5)))
    assert g.branches == []
    p = plan(model, example=torch.randint(0, 12, (2, 5)))
    assert p["u.weight"].scheme != "zeros"  # without the fix: a branch end, zeroed (no norm)


def test_two_layers_summed_without_a_skip_are_no_branch_but_a_projection_shortcut_is():
    """``a(x) + b(x)`` (equal depth, neither carries ``x``) has no skip connection; ResNet's
    ``bn(conv(x)) + f(x)`` with a deeper ``f`` does."""

    class TwoPaths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            return self.a(h) + self.b(h)

    class Projection(TwoPaths):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            return self.a(h) + self.c(torch.relu(self.b(h)))

    assert trace(TwoPaths(), torch.randn(2, 8)).branches == []
    (br,) = trace(Projection(), torch.randn(2, 8)).branches
    assert (br.layers, br.skip_layers) == (("b", "c"), ("a",))


class ParallelBlock(nn.Module):
    """GPT-J / PaLM: ``x + mlp(ln x) + attn(ln x)``, the skip summed first, second or last."""

    def __init__(self, d: int = 8, norm: bool = True, skip_at: int = 0) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d) if norm else nn.Identity()
        self.attn = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.skip_at = skip_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        terms = [self.fc2(F.gelu(self.fc1(h))), self.attn(h)]
        terms.insert(self.skip_at, x)
        return terms[0] + terms[1] + terms[2]


@pytest.mark.parametrize("stem", [True, False], ids=["after a layer", "on the raw input"])
@pytest.mark.parametrize("norm", [True, False], ids=["ln", "no norm"])
@pytest.mark.parametrize("skip_at", [0, 1, 2])
def test_parallel_block_branches_wherever_the_skip_is_summed(stem, norm, skip_at):
    """``(x + mlp(ln x)) + attn(ln x)``: the left operand carries ``x``, so ``attn`` (one layer)
    is the branch and ``x`` its identity skip, though the MLP side is deeper. The example input
    is a stream's fork like a layer's output: a parallel block first in the model (no layer
    before it) is read as one after a stem (once recorded as ``mlp`` with ``attn`` its
    projection shortcut)."""
    blocks = [ParallelBlock(norm=norm, skip_at=skip_at) for _ in range(2)]
    first = int(stem)
    model = nn.Sequential(*([nn.Linear(8, 8)] if stem else []), *blocks, nn.Linear(8, 3))
    g = trace(model, torch.randn(2, 8))
    ends = [f"{i}.{n}" for i in (first, first + 1) for n in ("attn", "fc2")]
    assert sorted(_ends(g)) == ends
    assert all(b.skip_layers == () for b in g.branches)
    weights = {b.last: b.weight_layers for b in g.branches}
    assert weights[f"{first}.attn"] == (f"{first}.attn",)
    assert weights[f"{first}.fc2"] == (f"{first}.fc1", f"{first}.fc2")
    if not norm:  # no normalization: every branch ends at zero, the first block's attn too
        p = plan(model, example=torch.randn(2, 8))
        assert {e.name for e in p.entries.values() if e.scheme == "zeros" and e.role != "bias"} == {
            f"{n}.weight" for n in ends
        }


# ---------------------------------------------------------------------------------------------
# transformers models, built from small configs (nothing downloaded)

SMALL = dict(vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _hf_cases():
    tf = pytest.importorskip("transformers")
    ids = torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # padding: eager attention adds a mask built from it to the scores
    text = {"input_ids": ids, "attention_mask": mask}
    px = {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}
    d = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    eager = {"attn_implementation": "eager"}
    # (name, model, example, residual branches by the source, embedding groups' members): T5's
    # decoder has three per layer (self-, cross-attention, MLP); GPT-J adds attention and MLP
    # to the stream in one sum (two branches per layer)
    return [
        ("gpt2", lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=16, n_head=2,
         n_positions=16, **SMALL, **eager)), text, 2 * 2,
         [{"transformer.wte", "transformer.wpe"}]),
        ("bert", lambda: tf.BertForMaskedLM(tf.BertConfig(max_position_embeddings=16, **d, **SMALL,
         **eager)), text, 2 * 2, [{"bert.embeddings.word_embeddings",
         "bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"}]),
        ("llama", lambda: tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=1,
         max_position_embeddings=16, **d, **SMALL, **eager)), text, 2 * 2, []),
        ("vit", lambda: tf.ViTForImageClassification(tf.ViTConfig(image_size=16, patch_size=4,
         num_labels=5, **d)), px, 2 * 2, [{"vit.embeddings.patch_embeddings.projection",
         "vit.embeddings.cls_token", "vit.embeddings.position_embeddings"}]),
        ("clip", lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(image_size=16, patch_size=4, **d)),
         px, 2 * 2, [{"embeddings.patch_embedding", "embeddings.class_embedding",
         "embeddings.position_embedding"}]),
        ("whisper", lambda: tf.WhisperModel(tf.WhisperConfig(d_model=16, encoder_layers=2,
         decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
         encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=8,
         max_target_positions=8, decoder_start_token_id=1, **SMALL)).encoder,
         {"input_features": torch.randn(2, 8, 16)}, 2 * 2, [{"conv2", "embed_positions"}]),
        ("swin", lambda: tf.SwinForImageClassification(tf.SwinConfig(image_size=32, patch_size=2,
         embed_dim=8, depths=[2, 2], num_heads=[1, 1], window_size=4, num_labels=5,
         use_absolute_embeddings=True)), {"pixel_values": torch.randn(2, 3, 32, 32)}, 2 * 2 * 2,
         [{"swin.embeddings.patch_embeddings.projection", "swin.embeddings.position_embeddings"}]),
        ("t5", lambda: tf.T5ForConditionalGeneration(tf.T5Config(d_model=16, d_kv=8, d_ff=32,
         num_layers=2, num_decoder_layers=2, num_heads=2, decoder_start_token_id=0, **SMALL)),
         {**text, "decoder_input_ids": ids}, 2 * 2 + 2 * 3, []),
        ("gptj", lambda: tf.GPTJForCausalLM(tf.GPTJConfig(n_embd=16, n_layer=2, n_head=2,
         rotary_dim=4, n_positions=16, **SMALL, **eager)), text, 2 * 2, []),
        ("mamba", lambda: tf.MambaForCausalLM(tf.MambaConfig(hidden_size=16, state_size=4,
         num_hidden_layers=2, expand=2, conv_kernel=3, **SMALL)), {"input_ids": ids}, 2, []),
    ]  # fmt: skip


HF_NAMES = ["gpt2", "bert", "llama", "vit", "clip", "whisper", "swin", "t5", "gptj", "mamba"]


@pytest.mark.hf
@pytest.mark.parametrize("name", HF_NAMES)
def test_transformers_branches_are_the_residual_additions(name):
    _, factory, example, n_residual, groups = next(c for c in _hf_cases() if c[0] == name)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = factory()
    g = trace(model, example)
    assert len(g.branches) == n_residual, [b.last for b in g.branches]
    assert [set(s) for s in g.embedding_sums] == groups
    embeddings = {la.name for la in g.layers.values() if la.kind == "embedding"}
    members = {n for s in g.embedding_sums for n in s}
    for b in g.branches:
        assert b.last not in embeddings | members and b.skip_layers == ()
    p = plan(model, example=example, rules={"residual_out": "zeros"})
    zeroed = {e.module for e in p if e.scheme == "zeros" and e.role == "residual_out"}
    assert zeroed == {b.last for b in g.branches}
    assert not zeroed & (embeddings | members)
