"""Presets of language-model families: GPT-2, Megatron, BERT / Hugging Face, OLMo, torchtitan."""

from __future__ import annotations

import math

from torch import nn

from ..graph import Graph
from .callables import NormalPadded
from .finding import (
    _UP_PROJ,
    Rules,
    _block_index,
    _heads,
    _is_bias,
    _is_embedding,
    _is_matrix,
    _module_leaf,
    _named_params,
    _norm_rules,
    _normal,
    _residual_outs,
    _trunc,
    _trunc_abs,
    find_blocks,
    num_blocks,
)


def gpt2(model: nn.Module, graph: Graph | None = None, *, sigma: float = 0.02, n_layers: int | None = None,
         padding: bool = False) -> Rules:  # fmt: skip
    r"""GPT-2: N(0, sigma) everywhere, residual projections N(0, sigma / sqrt(2 L)).

    .. math:: \sigma_{c\_proj} = 0.02 / \sqrt{2 L}

    Weights (Linear, HF ``Conv1D``) and embeddings (``wte``, ``wpe``) N(0, 0.02); every residual
    projection (``c_proj`` of attention and MLP; ``o_proj``/``down_proj``... by name, else the
    traced ``residual_out`` layers) N(0, 0.02/sqrt(2 L)); biases 0; norms 1/0. A head tied to
    ``wte`` is one tensor, drawn once.

    Sources: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners";
    karpathy/nanoGPT ``model.py`` (``_init_weights`` and the ``c_proj.weight`` loop);
    huggingface/transformers ``models/gpt2/modeling_gpt2.py`` (``GPT2PreTrainedModel._init_weights``).
    """
    blocks = find_blocks(model, graph)
    L = n_layers or (len(blocks.names) if blocks else 0) or num_blocks(model, graph)
    scaled = _residual_outs(model, graph, blocks)
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        if _is_embedding(m):
            pad = getattr(m, "padding_idx", None)
            rules[n] = NormalPadded(sigma, pad) if padding and pad is not None else _normal(sigma)
        elif _is_bias(m, leaf, p):
            rules[n] = "zeros"
        elif _is_matrix(m, leaf, p):
            rules[n] = _normal(sigma / math.sqrt(2 * L) if n in scaled else sigma)
    return rules


def megatron(model: nn.Module, graph: Graph | None = None, *, sigma: float = 0.02,
             n_layers: int | None = None) -> Rules:  # fmt: skip
    r"""Megatron-LM: ``init_method_normal(sigma)``, output layers ``scaled_init_method_normal``.

    .. math:: \sigma_{out} = \sigma / \sqrt{2 L}

    Every weight and embedding N(0, sigma) (``--init-method-std``, 0.02), the output projections
    of attention and MLP (``linear_proj``, ``linear_fc2``; other libraries' names for the same
    layers are recognized, see :data:`_RESIDUAL_OUT`) N(0, sigma/sqrt(2 L)); no truncation;
    biases 0; norms 1/0. Numerically the GPT-2 rule.

    Source: Shoeybi et al. 2019; NVIDIA/Megatron-LM ``megatron/core/utils.py``
    (``init_method_normal``, ``scaled_init_method_normal``).
    """
    return gpt2(model, graph, sigma=sigma, n_layers=n_layers)


def bert(model: nn.Module, graph: Graph | None = None, *, sigma: float = 0.02) -> Rules:
    """BERT / Hugging Face default: N(0, 0.02) weights and embeddings (padding row 0), biases 0, norms 1/0.

    Sources: Devlin et al. 2019; huggingface/transformers ``modeling_utils.py``
    (``PreTrainedModel._init_weights``, ``initializer_range``) and ``models/bert/modeling_bert.py``.
    Deviation: google-research/bert ``modeling.py`` draws a truncated normal (cut at 2 sigma,
    std 0.88 sigma); Hugging Face, which we follow, a plain normal.
    """
    rules = gpt2(model, graph, sigma=sigma, n_layers=1, padding=True)
    for n, m, leaf, p in _named_params(model):
        if _is_matrix(m, leaf, p):
            rules[n] = _normal(sigma)
    return rules


def olmo_mitchell(model: nn.Module, graph: Graph | None = None, *, cutoff: float = 3.0) -> Rules:
    r"""OLMo ``init_fn="mitchell"``: fan-in scaled, residual outputs also by depth; cut at 3 sigma.

    .. math::
        \sigma_{in} = 1/\sqrt{n_{in}}, \quad \sigma_{attn\_out} = 1/\sqrt{2 d (l+1)}, \quad
        \sigma_{ff\_out} = 1/\sqrt{2 h_{ff} (l+1)}

    In-projections (``att_proj``, ``ff_proj``, any weight not writing into the residual stream)
    1/sqrt(fan_in); residual outputs (``attn_out``, ``ff_out`` in block ``l`` from 0)
    1/sqrt(2 fan_in (l+1)); embeddings 1/sqrt(d); head 1/sqrt(d); all truncated normals cut at
    +-3 sigma; biases 0; norms 1/0.

    Source: allenai/OLMo ``olmo/model.py`` (``OLMoBlock.reset_parameters``, ``OLMo.reset_parameters``,
    ``init_normal`` with ``init_cutoff_factor``); Groeneveld et al. 2024.
    """
    blocks = find_blocks(model, graph)
    outs = _residual_outs(model, graph, blocks)
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        if _is_embedding(m):
            rules[n] = _trunc(1.0 / math.sqrt(p.shape[-1]), -cutoff, cutoff)
        elif _is_bias(m, leaf, p):
            rules[n] = "zeros"
        elif _is_matrix(m, leaf, p):
            fan_in = math.prod(p.shape[1:])
            l = _block_index(n, blocks)
            if n in outs and l is not None:
                rules[n] = _trunc(1.0 / math.sqrt(2 * fan_in * (l + 1)), -cutoff, cutoff)
            else:
                rules[n] = _trunc(1.0 / math.sqrt(fan_in), -cutoff, cutoff)
    return rules


def olmo2(
    model: nn.Module, graph: Graph | None = None, *, sigma: float = 0.02, cutoff: float = 3.0
) -> Rules:
    """OLMo 2: N(0, 0.02) cut at +-3 sigma for every weight and embedding; biases 0; norms 1/0.

    Source: OLMo Team 2024, "2 OLMo 2 Furious" (section 3.2.1); allenai/OLMo ``olmo/model.py``
    (``init_fn="normal"``, ``init_std=0.02``, ``init_cutoff_factor=3``) and allenai/OLMo-core.
    """
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        if _is_bias(m, leaf, p):
            rules[n] = "zeros"
        elif _is_embedding(m) or _is_matrix(m, leaf, p):
            rules[n] = _trunc(sigma, -cutoff, cutoff)
    return rules


def torchtitan(model: nn.Module, graph: Graph | None = None, *, sigma: float = 0.02, depth_init: bool = True,
               cutoff: float = 3.0) -> Rules:  # fmt: skip
    r"""torchtitan Llama 3: depth-scaled output projections.

    .. math::
        \sigma_{wo, w2, w3} = 0.02 / \sqrt{2 (l + 1)} \;(\text{depth\_init}) \text{ or }
        0.02 / \sqrt{2 L}, \qquad \sigma_{output} = d^{-1/2}

    ``wq, wk, wv, w1`` (HF: ``q_proj, k_proj, v_proj, gate_proj``) ``trunc_normal_(std=0.02)``
    (absolute bounds +-2: nothing is cut); ``wo, w2, w3`` (``o_proj, down_proj, up_proj``) with the
    depth-scaled std; ``tok_embeddings`` N(0, 1); ``output`` truncated normal std d^-1/2 cut at
    +-3 sigma; norms 1.

    Source: pytorch/torchtitan ``torchtitan/models/llama3/model/model.py`` (``Attention.init_weights``,
    ``FeedForward.init_weights``, ``TransformerBlock.__init__`` for ``weight_init_std``,
    ``Transformer.init_weights``).
    """
    blocks = find_blocks(model, graph)
    L = len(blocks.names) if blocks else num_blocks(model, graph)
    outs = _residual_outs(model, graph, blocks)
    heads = _heads(model, graph, blocks)
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        if _is_embedding(m):
            rules[n] = (
                _normal(1.0) if n not in heads else _trunc(p.shape[-1] ** -0.5, -cutoff, cutoff)
            )
        elif _is_bias(m, leaf, p):
            rules[n] = "zeros"
        elif _is_matrix(m, leaf, p):
            l = _block_index(n, blocks)
            if n in heads and l is None:
                d = p.shape[-1]
                rules[n] = _trunc(d**-0.5, -cutoff, cutoff)
            elif l is not None and (n in outs or _module_leaf(n) in _UP_PROJ):
                std = sigma / math.sqrt(2 * (l + 1)) if depth_init else sigma / math.sqrt(2 * L)
                rules[n] = _trunc_abs(std)
            else:
                rules[n] = _trunc_abs(sigma)
    return rules
