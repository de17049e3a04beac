"""Held-out architectures survey (issue #14): does the default policy hold on models never tuned for?

Builds ~40 small models from transformers configs (2 layers, width 64, vocab 256, images 32x32;
nothing downloaded) and checks, for each:

(a) ``initlab.init(model, example=..., seed=0)`` runs and the model runs after it;
(b) the initial loss in train mode on random inputs and labels, mean over 3 seeds: initlab's
    default vs the model's own init vs ``log(classes)``. Pass: initlab <= own + 0.02 and within
    0.05 of ``log(classes)`` (0.15 when the head is the input embedding table, tied);
(c) the residual branches the trace finds vs the true count;
(d) a model built on the meta device, initialized with ``device="cpu"``, runs a forward.

Usage::

    PYTHONPATH=src python benchmarks/zoo.py                  # every model
    PYTHONPATH=src python benchmarks/zoo.py --models gpt_neo,deit
"""

from __future__ import annotations

import contextlib
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import initlab
from initlab.bench.architectures import hf_model, uniform_label_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _survey, run or loaded by path
from _survey import FROM_LOG_C, loss_failures, meta_check, parse, run

D, L, H, FF, VOCAB, CLASSES, IMAGE = 64, 2, 4, 128, 256, 10, 32
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Spec:
    """One model: its transformers class and config, its kind, and its true branch count.

    ``kind``: ``lm`` (next token), ``mlm`` (every position), ``seq2seq`` or ``vision``.
    ``branches``: the true number of residual additions ``x + f(x)``; an int, or a function of
    the built model (counting modules that carry a skip).
    """

    cls: str
    config: str
    kind: str
    kwargs: dict[str, Any]
    branches: int | Callable[[nn.Module], int] | None


def _lm(cls: str, config: str, **kw: Any) -> Spec:
    return Spec(cls, config, "lm", kw, 2 * L)


def _count(attr: str, value: Any = True) -> Callable[[nn.Module], int]:
    return lambda m: sum(getattr(x, attr, None) == value for x in m.modules())


def _count_type(name: str, per: int = 1) -> Callable[[nn.Module], int]:
    return lambda m: per * sum(type(x).__name__ == name for x in m.modules())


_S2S = dict(encoder_layers=L, decoder_layers=L, d_model=D, encoder_attention_heads=H,
            decoder_attention_heads=H, encoder_ffn_dim=FF, decoder_ffn_dim=FF,
            max_position_embeddings=64)  # fmt: skip
_BERT = dict(num_hidden_layers=L, hidden_size=D, num_attention_heads=H, intermediate_size=FF,
             max_position_embeddings=64)  # fmt: skip
_VIT = dict(image_size=IMAGE, patch_size=4, **{k: v for k, v in _BERT.items() if k != "max_position_embeddings"})  # fmt: skip
_LLAMA = dict(num_hidden_layers=L, hidden_size=D, num_attention_heads=H, num_key_value_heads=2,
              intermediate_size=FF, max_position_embeddings=64)  # fmt: skip

SPECS: dict[str, Spec] = {
    "gpt_neo": _lm("GPTNeoForCausalLM", "GPTNeoConfig", num_layers=L, hidden_size=D, num_heads=H,
                   attention_types=[[["global", "local"], 1]], window_size=8,
                   max_position_embeddings=64),
    "gptj": _lm("GPTJForCausalLM", "GPTJConfig", n_layer=L, n_embd=D, n_head=H, rotary_dim=8,
                n_positions=64),
    "opt": _lm("OPTForCausalLM", "OPTConfig", num_hidden_layers=L, hidden_size=D, ffn_dim=FF,
               num_attention_heads=H, word_embed_proj_dim=D, max_position_embeddings=64),
    "bloom": _lm("BloomForCausalLM", "BloomConfig", n_layer=L, hidden_size=D, n_head=H),
    "falcon": _lm("FalconForCausalLM", "FalconConfig", num_hidden_layers=L, hidden_size=D,
                  num_attention_heads=H),
    "phi": _lm("PhiForCausalLM", "PhiConfig", **_LLAMA),
    "phi3": _lm("Phi3ForCausalLM", "Phi3Config", **_LLAMA),
    "gemma": _lm("GemmaForCausalLM", "GemmaConfig", head_dim=16, **_LLAMA),
    "gemma2": _lm("Gemma2ForCausalLM", "Gemma2Config", head_dim=16, **_LLAMA),
    "mistral": _lm("MistralForCausalLM", "MistralConfig", **_LLAMA),
    "mixtral": _lm("MixtralForCausalLM", "MixtralConfig", num_local_experts=4,
                   num_experts_per_tok=2, **_LLAMA),
    "olmo": _lm("OlmoForCausalLM", "OlmoConfig", **_LLAMA),
    "stablelm": _lm("StableLmForCausalLM", "StableLmConfig", **_LLAMA),
    "starcoder2": _lm("Starcoder2ForCausalLM", "Starcoder2Config", **_LLAMA),
    "codegen": _lm("CodeGenForCausalLM", "CodeGenConfig", n_layer=L, n_embd=D, n_head=H,
                   rotary_dim=8, n_positions=64, n_ctx=64),
    "gpt_bigcode": _lm("GPTBigCodeForCausalLM", "GPTBigCodeConfig", n_layer=L, n_embd=D,
                       n_head=H, n_positions=64),
    "mpt": _lm("MptForCausalLM", "MptConfig", n_layers=L, d_model=D, n_heads=H, max_seq_len=64),
    "xglm": _lm("XGLMForCausalLM", "XGLMConfig", num_layers=L, d_model=D, attention_heads=H,
                ffn_dim=FF, max_position_embeddings=64),
    "biogpt": _lm("BioGptForCausalLM", "BioGptConfig", **_BERT),
    "gpt_neox": _lm("GPTNeoXForCausalLM", "GPTNeoXConfig", **_LLAMA),
    "qwen3": _lm("Qwen3ForCausalLM", "Qwen3Config", head_dim=16, **_LLAMA),
    "qwen2_moe": Spec("Qwen2MoeForCausalLM", "Qwen2MoeConfig", "lm",
                      dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                           shared_expert_intermediate_size=64, **_LLAMA),
                      3 * L),  # parallel branches summed before the skip count one each
    "cohere": _lm("CohereForCausalLM", "CohereConfig", **_LLAMA),
    "granite": _lm("GraniteForCausalLM", "GraniteConfig", **_LLAMA),
    "persimmon": _lm("PersimmonForCausalLM", "PersimmonConfig", **_LLAMA),
    "ctrl": _lm("CTRLLMHeadModel", "CTRLConfig", n_layer=L, n_embd=D, n_head=H, dff=FF,
                n_positions=64),
    "xlnet": _lm("XLNetLMHeadModel", "XLNetConfig", n_layer=L, d_model=D, n_head=H, d_inner=FF),
    "rwkv": _lm("RwkvForCausalLM", "RwkvConfig", num_hidden_layers=L, hidden_size=D,
                attention_hidden_size=D, intermediate_size=FF, context_length=64),
    "falcon_mamba": Spec("FalconMambaForCausalLM", "FalconMambaConfig", "lm",
                         dict(num_hidden_layers=L, hidden_size=D, state_size=8, expand=2),
                         L),  # one mixer per block
    "recurrent_gemma": Spec("RecurrentGemmaForCausalLM", "RecurrentGemmaConfig", "lm",
                            dict(num_hidden_layers=L, hidden_size=D, num_attention_heads=H,
                                 num_key_value_heads=1, intermediate_size=FF, lru_width=D,
                                 attention_window_size=16, head_dim=16,
                                 block_types=["recurrent", "attention"]), 2 * L),
    "olmo2": _lm("Olmo2ForCausalLM", "Olmo2Config", **_LLAMA),
    "olmoe": Spec("OlmoeForCausalLM", "OlmoeConfig", "lm",
                  dict(num_experts=4, num_experts_per_tok=2, **_LLAMA), 2 * L),
    "nemotron": _lm("NemotronForCausalLM", "NemotronConfig", **_LLAMA),
    "glm": _lm("GlmForCausalLM", "GlmConfig", head_dim=16, **_LLAMA),
    "jamba": Spec("JambaForCausalLM", "JambaConfig", "lm",
                  dict(num_experts=2, num_experts_per_tok=1, expert_layer_period=2,
                       attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8,
                       mamba_expand=2, mamba_dt_rank=8, use_mamba_kernels=False, **_LLAMA),
                  2 * L),
    "roberta": Spec("RobertaForMaskedLM", "RobertaConfig", "mlm", _BERT, 2 * L),
    "distilbert": Spec("DistilBertForMaskedLM", "DistilBertConfig", "mlm",
                       dict(n_layers=L, dim=D, n_heads=H, hidden_dim=FF,
                            max_position_embeddings=64), 2 * L),
    "electra": Spec("ElectraForMaskedLM", "ElectraConfig", "mlm", dict(embedding_size=D, **_BERT),
                    2 * L),
    "albert": Spec("AlbertForMaskedLM", "AlbertConfig", "mlm", dict(embedding_size=32, **_BERT),
                   2 * L),
    "deberta-v2": Spec("DebertaV2ForMaskedLM", "DebertaV2Config", "mlm", _BERT, 2 * L),
    "mpnet": Spec("MPNetForMaskedLM", "MPNetConfig", "mlm", _BERT, 2 * L),
    "convbert": Spec("ConvBertForMaskedLM", "ConvBertConfig", "mlm", dict(embedding_size=D, **_BERT),
                     2 * L),
    "mobilebert": Spec("MobileBertForMaskedLM", "MobileBertConfig", "mlm",
                       dict(embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
                            num_feedforward_networks=2, **_BERT), None),
    "xlm_roberta": Spec("XLMRobertaForMaskedLM", "XLMRobertaConfig", "mlm", _BERT, 2 * L),
    "fnet": Spec("FNetForMaskedLM", "FNetConfig", "mlm",
                 dict(num_hidden_layers=L, hidden_size=D, intermediate_size=FF,
                      max_position_embeddings=64), L),  # the Fourier mixer holds no parameter
    "funnel": Spec("FunnelForMaskedLM", "FunnelConfig", "mlm",
                   dict(block_sizes=[1, 1], d_model=D, n_head=H, d_head=16, d_inner=FF), None),
    "squeezebert": Spec("SqueezeBertForMaskedLM", "SqueezeBertConfig", "mlm",
                        dict(embedding_size=D, q_groups=2, k_groups=2, v_groups=2,
                             post_attention_groups=2, intermediate_groups=2, output_groups=2,
                             **_BERT), 2 * L),
    "roformer": Spec("RoFormerForMaskedLM", "RoFormerConfig", "mlm", dict(embedding_size=D, **_BERT),
                     2 * L),
    "megatron_bert": Spec("MegatronBertForMaskedLM", "MegatronBertConfig", "mlm", _BERT, 2 * L),
    "rembert": Spec("RemBertForMaskedLM", "RemBertConfig", "mlm",
                    dict(input_embedding_size=32, output_embedding_size=32, **_BERT), 2 * L),
    "big_bird": Spec("BigBirdForMaskedLM", "BigBirdConfig", "mlm",
                     dict(attention_type="original_full", **_BERT), 2 * L),
    "mbart": Spec("MBartForConditionalGeneration", "MBartConfig", "seq2seq", _S2S, 5 * L),
    "pegasus": Spec("PegasusForConditionalGeneration", "PegasusConfig", "seq2seq", _S2S, 5 * L),
    "marian": Spec("MarianMTModel", "MarianConfig", "seq2seq", _S2S, 5 * L),
    "m2m100": Spec("M2M100ForConditionalGeneration", "M2M100Config", "seq2seq", _S2S, 5 * L),
    "t5": Spec("T5ForConditionalGeneration", "T5Config", "seq2seq",
               dict(num_layers=L, d_model=D, d_kv=16, d_ff=FF, num_heads=H), 5 * L),
    "led": Spec("LEDForConditionalGeneration", "LEDConfig", "seq2seq",
                dict(_S2S, attention_window=[8, 8], max_encoder_position_embeddings=64,
                     max_decoder_position_embeddings=64), 5 * L),
    "deit": Spec("DeiTForImageClassification", "DeiTConfig", "vision", _VIT, 2 * L),
    "beit": Spec("BeitForImageClassification", "BeitConfig", "vision", _VIT, 2 * L),
    "dinov2": Spec("Dinov2ForImageClassification", "Dinov2Config", "vision", _VIT, 2 * L),
    "swinv2": Spec("Swinv2ForImageClassification", "Swinv2Config", "vision",
                   dict(image_size=IMAGE, patch_size=2, embed_dim=32, depths=[2, 2],
                        num_heads=[2, 4], window_size=4), 8),
    "mobilevit": Spec("MobileViTForImageClassification", "MobileViTConfig", "vision",
                      dict(image_size=IMAGE, hidden_sizes=[32, 48, 64],
                           neck_hidden_sizes=[8, 16, 24, 24, 32, 40, 160]), None),
    "vit_mae": Spec("ViTForImageClassification", "ViTConfig", "vision",
                    dict(qkv_bias=False, **_VIT), 2 * L),
    "cvt": Spec("CvtForImageClassification", "CvtConfig", "vision",
                dict(embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3],
                     drop_path_rate=[0.0, 0.0, 0.0]), 12),
    "pvt": Spec("PvtForImageClassification", "PvtConfig", "vision",
                dict(image_size=IMAGE, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1],
                     hidden_sizes=[16, 32], patch_sizes=[4, 2], strides=[4, 2],
                     num_attention_heads=[1, 2], mlp_ratios=[4, 4]), 4),
    "focalnet": Spec("FocalNetForImageClassification", "FocalNetConfig", "vision",
                     dict(image_size=IMAGE, patch_size=4, embed_dim=16, depths=[1, 1]), None),
    "mobilenet_v1": Spec("MobileNetV1ForImageClassification", "MobileNetV1Config", "vision",
                         dict(image_size=IMAGE, depth_multiplier=0.25), 0),
    "bit": Spec("BitForImageClassification", "BitConfig", "vision",
                dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                     layer_type="bottleneck", num_groups=8), 2),
    "pvt_v2": Spec("PvtV2ForImageClassification", "PvtV2Config", "vision",
                   dict(image_size=IMAGE, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                        hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                        num_attention_heads=[1, 2], mlp_ratios=[4, 4]), 4),
    "hiera": Spec("HieraForImageClassification", "HieraConfig", "vision",
                  dict(image_size=[IMAGE, IMAGE], patch_size=[3, 3], patch_stride=[2, 2],
                       patch_padding=[1, 1], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                       masked_unit_size=[4, 4], query_stride=[2, 2], num_query_pool=1), None),
    "swiftformer": Spec("SwiftFormerForImageClassification", "SwiftFormerConfig", "vision",
                        dict(image_size=IMAGE, depths=[1, 1, 1, 1], embed_dims=[16, 16, 32, 32]),
                        None),
    "convnext": Spec("ConvNextForImageClassification", "ConvNextConfig", "vision",
                     dict(image_size=IMAGE, hidden_sizes=[32, 64], depths=[2, 2], num_stages=2),
                     4),
    "convnextv2": Spec("ConvNextV2ForImageClassification", "ConvNextV2Config", "vision",
                       dict(image_size=IMAGE, hidden_sizes=[32, 64], depths=[2, 2],
                            num_stages=2), 4),
    "regnet": Spec("RegNetForImageClassification", "RegNetConfig", "vision",
                   dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 2], groups_width=8,
                        layer_type="y"), 3),
    "resnet": Spec("ResNetForImageClassification", "ResNetConfig", "vision",
                   dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 2],
                        layer_type="bottleneck"), 3),
    "mobilenet_v2": Spec("MobileNetV2ForImageClassification", "MobileNetV2Config", "vision",
                         dict(image_size=IMAGE, depth_multiplier=0.35),
                         _count("use_residual")),
    "efficientnet": Spec("EfficientNetForImageClassification", "EfficientNetConfig", "vision",
                         dict(image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.4,
                              hidden_dim=320), _count("apply_dropout")),
    "levit": Spec("LevitForImageClassification", "LevitConfig", "vision",
                  dict(image_size=IMAGE, hidden_sizes=[32, 64, 96], num_attention_heads=[1, 2, 3],
                       depths=[1, 1, 1], key_dim=[8, 8, 8]), _count_type("LevitResidualLayer")),
    "poolformer": Spec("PoolFormerForImageClassification", "PoolFormerConfig", "vision",
                       dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1]),
                       _count_type("PoolFormerLayer", 2)),
    "segformer": Spec("SegformerForImageClassification", "SegformerConfig", "vision",
                      dict(image_size=IMAGE, num_encoder_blocks=2, depths=[1, 1],
                           sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                           decoder_hidden_size=32), _count_type("SegformerLayer", 2)),
}  # fmt: skip


def build(name: str, device: str | None = None) -> nn.Module:
    """The model ``name`` with its own init (reads the global RNG), optionally on ``device``."""
    spec = SPECS[name]
    vision = spec.kind == "vision"
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return hf_model(spec.cls, spec.config, spec.kwargs, CLASSES if vision else VOCAB,
                        vision=vision, special_id=1)  # fmt: skip


def example(name: str, seed: int, batch: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``(model kwargs, targets)`` on random data: ids and target ids in ``[3, VOCAB)`` (clear
    of special tokens), or Gaussian images with random labels."""
    g = torch.Generator().manual_seed(1000 + seed)
    kind = SPECS[name].kind
    if kind == "vision":
        x = torch.randn(8 * batch, 3, IMAGE, IMAGE, generator=g)
        return {"pixel_values": x}, torch.randint(0, CLASSES, (8 * batch,), generator=g)
    ids = torch.randint(3, VOCAB, (batch, 33), generator=g)
    if kind == "lm":
        return {"input_ids": ids[:, :-1]}, ids[:, 1:]
    if kind == "mlm":
        return {"input_ids": ids[:, :-1]}, torch.randint(3, VOCAB, (batch, 32), generator=g)
    dec = torch.randint(3, VOCAB, (batch, 17), generator=g)
    return {"input_ids": ids[:, :-1], "decoder_input_ids": dec[:, :-1]}, dec[:, 1:]


def loss(model: nn.Module, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> float:
    """Cross-entropy of the model's logits (no grad), expected over targets drawn as
    :func:`example` draws ``target`` (so ``target`` itself is not read): uniform over the classes, or
    over the ids ``[3, VOCAB)``, clear of special tokens. The expectation, not the drawn targets'
    loss: a pooled net's logits on random images are nearly one vector ``c``, and 64 drawn
    labels would add ``c_y``'s spread (``sqrt(Var(c) / 64)``, 0.02 nats at ``Var(c)`` 0.025)."""
    with torch.no_grad():
        z = model(**inputs).logits
    first = 0 if z.shape[-1] == CLASSES else 3  # images: every class; text: ids clear of specials
    return float(uniform_label_loss(z, first=first))


def tied(model: nn.Module) -> bool:
    """Whether the output head is the input embedding table."""
    try:
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return out is not None and inp is not None and out.weight is inp.weight


def survey(name: str) -> dict[str, Any]:
    """The four checks on one model; errors are caught and reported per check."""
    spec = SPECS[name]
    row: dict[str, Any] = {"model": name}
    classes = CLASSES if SPECS[name].kind == "vision" else VOCAB
    row["log_c"] = math.log(classes)
    own, ours = [], []
    for seed in SEEDS:
        inputs, target = example(name, seed)
        torch.manual_seed(seed)
        model = build(name).train()
        own.append(loss(model, inputs, target))
        try:
            initlab.init(model, example=inputs, seed=seed)
            ours.append(loss(model, inputs, target))
        except Exception as e:
            row["init_error"] = f"{type(e).__name__}: {e}"[:200]
            row["trace"] = traceback.format_exc()
            break
        if seed == 0:
            row["tied"] = tied(model)
            true = spec.branches(model) if callable(spec.branches) else spec.branches
            row["branches"] = (len(initlab.trace(model, inputs).branches), true)
    row["own"] = sum(own) / len(own)
    if ours:
        row["initlab"] = sum(ours) / len(ours)
    row["meta"] = meta_check(lambda: example(name, 0), lambda: build(name, "meta"), loss)
    return row


def verdict(row: dict[str, Any]) -> list[str]:
    """The failed criteria of one row (empty: it passes)."""
    if "init_error" in row:
        return ["(a) " + row["init_error"]]
    bad = []
    bad.extend(loss_failures(row, 0.15 if row["tied"] else FROM_LOG_C))
    found, true = row["branches"]
    if true is not None and found != true:
        bad.append(f"(c) {found} branches, {true} true")
    if row["meta"] != "ok":
        bad.append("(d) " + row["meta"])
    return bad


def _num(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f}" if key in row else "-"


def main(argv: list[str] | None = None) -> int:
    names, full_traceback = parse(argv, __doc__, SPECS)
    header = (f"{'model':<13}{'tied':>5}{'initlab':>9}{'own':>8}{'log C':>7}{'branches':>10}  "
              f"{'s':>5}  verdict")  # fmt: skip

    def cells(name: str, row: dict[str, Any]) -> str:
        br = "{}/{}".format(*row["branches"]) if "branches" in row else "-"
        return (f"{name:<13}{'T' if row.get('tied') else '':>5}{_num(row, 'initlab'):>9}"
                f"{_num(row, 'own'):>8}{row['log_c']:>7.3f}{br:>10} ")  # fmt: skip

    return run(names, survey, verdict, header, cells, full_traceback)


if __name__ == "__main__":
    main()
