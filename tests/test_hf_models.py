"""Real models built offline from small transformers configs, initialized with presets.

Each model's own ``_init_weights`` (run by the constructor) is the reference: per parameter we
compare the std it drew with the std initlab drew (both against the source's formula, with the
tolerance |s / sigma - 1| <= 5 sqrt((kurtosis - 1) / (4 n))), and constants exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip(
    "transformers",
    reason="the transformers-based tests need the optional extra: pip install transformers",
)

from initlab.graph import trace  # noqa: E402
from initlab.planning import init  # noqa: E402
from initlab.presets import initialized_params, preset_rules, skip_initialized_rules  # noqa: E402
from initlab.schemes import truncated_normal_std  # noqa: E402

pytestmark = pytest.mark.hf

IDS = {"input_ids": torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))}
SMALL = dict(vocab_size=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def built(factory):  # the reference: the model's own init, from a fixed seed (tests only)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return factory()


def gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, **SMALL)
    return transformers.GPT2LMHeadModel(cfg)


def llama():
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=32, **SMALL)  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


def bert():
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=32, **SMALL)  # fmt: skip
    return transformers.BertForMaskedLM(cfg)


def std_ok(t: torch.Tensor, sigma: float, kurtosis: float = 3.0) -> bool:
    s = t.detach().double().std().item()
    return abs(s / sigma - 1) <= 5 * math.sqrt((kurtosis - 1) / (4 * t.numel()))


def initlab_copy(factory, preset: str, **options):
    model = built(factory)
    graph = trace(model, IDS)
    p = init(
        model, example=IDS, rules=preset_rules(preset, model, graph, **options), seed=0, graph=graph
    )
    return model, p


def compare(
    ref: nn.Module, ours: nn.Module, expected: dict[str, float], skip: tuple[str, ...] = ()
) -> None:
    """Random parameters: both within tolerance of ``expected``; the rest (but ``skip``): equal."""
    theirs = dict(ref.named_parameters())
    for name, t in ours.named_parameters():
        if name in skip:
            continue
        if name in expected:
            assert std_ok(theirs[name], expected[name]), f"reference {name}"
            assert std_ok(t, expected[name]), f"initlab {name}"
            assert not torch.equal(t, theirs[name])  # a fresh draw
        else:
            assert torch.equal(t, theirs[name]), name


def gpt2_expected(model: nn.Module, L: int) -> dict[str, float]:
    out = {}
    for n, t in model.named_parameters():
        if t.dim() == 2:
            out[n] = 0.02 / math.sqrt(2 * L) if n.endswith("c_proj.weight") else 0.02
    return out


def test_gpt2_matches_its_own_init() -> None:
    ref = built(gpt2)
    ours, p = initlab_copy(gpt2, "gpt2")
    compare(ref, ours, gpt2_expected(ours, 2))
    # the head is tied to wte: one tensor, planned and drawn once
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert p["transformer.wte.weight"].tied == ("lm_head.weight",)
    assert "lm_head.weight" not in p.entries


def test_llama_hf_preset_matches_its_own_init() -> None:
    ref = built(llama)
    ours, _ = initlab_copy(llama, "hf")
    compare(ref, ours, {n: 0.02 for n, t in ours.named_parameters() if t.dim() == 2})


def test_llama_torchtitan_differs_where_torchtitan_differs() -> None:
    """HF Llama draws N(0, 0.02) everywhere; torchtitan depth-scales wo/w2/w3 (o_proj,
    down_proj, up_proj), draws the embedding N(0, 1) and the head d^-1/2 cut at 3 sigma."""
    ref = built(llama)
    ours, _ = initlab_copy(llama, "torchtitan")
    theirs = dict(ref.named_parameters())
    for n, t in ours.named_parameters():
        if t.dim() < 2:
            assert torch.equal(t, theirs[n]), n
            continue
        assert std_ok(theirs[n], 0.02), n
        if n == "model.embed_tokens.weight":
            assert std_ok(t, 1.0)
        elif n == "lm_head.weight":
            assert std_ok(t, 64**-0.5 * truncated_normal_std(-3, 3), 2.9)
        elif any(k in n for k in ("o_proj", "down_proj", "up_proj")):
            layer = int(n.split(".")[2])
            assert std_ok(t, 0.02 / math.sqrt(2 * (layer + 1))), n
        else:
            assert std_ok(t, 0.02), n


def test_bert_matches_its_own_init() -> None:
    ref = built(bert)
    ours, p = initlab_copy(bert, "bert")
    emb = "bert.embeddings.word_embeddings.weight"
    expected = {n: 0.02 for n, t in ours.named_parameters() if t.dim() == 2 and n != emb}
    compare(ref, ours, expected, skip=(emb,))
    # the word embedding (tied to the decoder) drawn once, with HF's zero padding row
    w = ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.weight is w
    assert p[emb].tied == ("cls.predictions.decoder.weight",)
    assert torch.all(w[0] == 0) and torch.all(ref.bert.embeddings.word_embeddings.weight[0] == 0)
    assert std_ok(w[1:], 0.02)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_llama(dtype: torch.dtype) -> None:
    model = built(llama).to(dtype)
    init(model, example=IDS, rules=preset_rules("torchtitan", model), seed=0)
    head = model.lm_head.weight
    assert head.dtype == dtype and torch.isfinite(head).all()
    assert head.float().abs().max() <= 3 * 64**-0.5 * 1.01  # cut in fp32, then cast
    fp32 = built(llama)
    init(fp32, example=IDS, rules=preset_rules("torchtitan", fp32), seed=0)
    assert torch.equal(head, fp32.lm_head.weight.to(dtype))


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="transformers < 5 marks modules, not loaded tensors: pass missing_keys instead",
)
def test_skip_parameters_loaded_from_a_checkpoint(tmp_path: Path) -> None:
    """Save a small GPT-2, load it into a classifier: only the new ``score`` head is drawn."""
    lm = built(gpt2)
    lm.save_pretrained(tmp_path)
    clf = transformers.GPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    loaded = set(initialized_params(clf))
    assert "score.weight" not in loaded and "transformer.h.0.attn.c_attn.weight" in loaded
    before = {n: t.detach().clone() for n, t in clf.named_parameters()}
    rules = {**preset_rules("gpt2", clf), **skip_initialized_rules(clf)}
    p = init(clf, example=IDS, rules=rules, seed=0)
    assert [e.name for e in p if e.scheme != "keep"] == ["score.weight"]
    for n, t in clf.named_parameters():
        assert torch.equal(t, before[n]) == (n != "score.weight"), n
    assert std_ok(clf.score.weight, 0.02)
