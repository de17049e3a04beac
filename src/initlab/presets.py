r"""Presets: the initialization recipes of well-known model families, as plan rules.

A preset is a function ``fn(model, graph, **options) -> rules`` that looks at the model (its
parameter names, module classes, the number of blocks, each block's index) and returns rules in the
format of :func:`initlab.plan`: one rule per parameter it decides, keyed by the exact
qualified parameter name, so that the recipe is reproduced whatever the other rules say. Parameters
a recipe leaves alone get no rule (the plan's defaults, or ``"keep"`` where the recipe keeps
PyTorch's own default initialization).

=======================  ======================================================================
preset                   what it does (source)
=======================  ======================================================================
``gpt2``                 weights, embeddings N(0, 0.02); residual projections (``c_proj``)
                         N(0, 0.02/sqrt(2L)); biases 0; norms 1/0 (nanoGPT ``model.py``,
                         HF ``modeling_gpt2.py``; Radford et al. 2019)
``megatron``             the same with ``sigma``: ``init_method_normal`` /
                         ``scaled_init_method_normal`` (Megatron-LM ``megatron/core/utils.py``)
``bert`` (``hf``)        N(0, 0.02) for weights and embeddings (padding row 0), biases 0, norms
                         1/0 (HF ``PreTrainedModel._init_weights``, ``modeling_bert.py``; what
                         HF Llama / Mistral / BERT do by default)
``olmo-mitchell``        in-projections, embeddings, head 1/sqrt(fan_in); attn/ff out
                         1/sqrt(2 fan_in (l+1)); cut at 3 sigma (allenai/OLMo ``olmo/model.py``)
``olmo2``                N(0, 0.02) cut at 3 sigma everywhere (OLMo 2; OLMo-core)
``torchtitan``           wq, wk, wv, w1 0.02; wo, w2, w3 0.02/sqrt(2(l+1)); embeddings N(0, 1);
                         head d^-1/2 cut at 3 sigma (pytorch/torchtitan ``models/llama3/model``)
``vit``                  timm '' mode: Linear trunc-normal 0.02, pos_embed 0.02, cls 1e-6
``vit-jax``              timm 'jax' mode: Xavier uniform, head 0, patch conv LeCun normal
``vit-moco``             timm 'moco' mode: Xavier uniform per Q/K/V slice
``resnet-zero-residual`` conv Kaiming normal fan_out; norms 1/0; last norm of each residual
                         branch 0 (torchvision ``models/resnet.py``; Goyal et al. 2017)
``lstm-forget-bias``     LSTM ``bias_ih`` forget gate 1, other biases 0 (Jozefowicz et al. 2015)
=======================  ======================================================================

``L`` (number of blocks) and ``l`` (a block's index from 0) come from the model
(:func:`find_blocks`): the blocks are sibling modules of one class held in an ``nn.ModuleList``
(``transformer.h``, ``model.layers``), an ``nn.ModuleDict`` (torchtitan's ``layers["0"]``), an
``nn.Sequential`` or numbered attributes (``layer0``, ``h_1``). With the traced graph, the group
holding the most residual branches wins and ``l`` is the order in which the forward pass reaches
them; without it, the longest group in the order of its numbers. With no such group, ``L`` is
half the traced number of residual branches (two per transformer block).

Checkpoints: :func:`initialized_params` lists the parameters Hugging Face marks as loaded
(``param._is_hf_initialized``, transformers >= 5; or all but the loading report's
``missing_keys``), and :func:`skip_initialized_rules` turns them into ``"keep"`` rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InitlabError, check_choice
from .graph import Graph, is_norm

__all__ = [
    "PRESETS",
    "Blocks",
    "ForgetGateBias",
    "Preset",
    "find_blocks",
    "initialized_params",
    "num_blocks",
    "preset_rules",
    "skip_initialized_rules",
]

Rules = dict[Any, Any]

# module leaf names of the projections that write into the residual stream
_RESIDUAL_OUT = frozenset({
    "c_proj",  # GPT-2 (attention and MLP)
    "o_proj", "down_proj",  # HF Llama / Mistral / Qwen / OLMo-HF
    "wo", "w2",  # torchtitan, Meta Llama
    "linear_proj", "linear_fc2",  # Megatron core
    "attn_out", "ff_out",  # OLMo
    "out_proj",  # nn.MultiheadAttention, many others
    "proj", "fc2",  # timm ViT attention / MLP
    "dense_4h_to_h",  # GPT-NeoX / Megatron legacy
})  # fmt: skip
# torchtitan also depth-scales w3 (the SwiGLU "up" projection)
_UP_PROJ = frozenset({"w3", "up_proj"})


@dataclass(frozen=True)
class Preset:
    """A registered preset: ``fn(model, graph, **options) -> rules`` and where it comes from."""

    name: str
    fn: Callable[..., Rules]
    source: str
    options: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# looking at the model


def _named_params(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """``(qualified name, owner module, leaf name, parameter)``, each tensor once (tied: first name)."""
    for name, p in model.named_parameters():
        prefix, _, leaf = name.rpartition(".")
        yield name, (model.get_submodule(prefix) if prefix else model), leaf, p


@dataclass(frozen=True)
class Blocks:
    """A model's repeated blocks: their qualified module names in order (``l`` from 0).

    Attributes:
        names: the blocks' qualified names, block ``l`` at position ``l``.
        source: ``"graph"`` (chosen and ordered by the traced residual branches) or ``"names"``.
    """

    names: tuple[str, ...]
    source: str

    def index(self, param: str) -> int | None:
        """The block ``l`` that holds the parameter (or module) named ``param``; ``None`` outside."""
        for l, block in enumerate(self.names):
            if param == block or param.startswith(block + "."):
                return l
        return None


_NUMBERED = re.compile(r"(.*?)(\d+)")


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_composite(module: nn.Module) -> bool:
    """A module with at least one parametrized submodule (a block, not a single layer)."""
    return any(_has_params(c) for c in module.children())


def _candidates(model: nn.Module) -> list[tuple[str, ...]]:
    """Groups of sibling modules that may be the blocks, each in the order of its numbers.

    ``nn.ModuleList`` / ``nn.ModuleDict`` children (any keys, in their order); and children
    numbered with one stem: ``"0", "1"`` (``nn.Sequential``, ``nn.ModuleDict``), ``layer0, layer1``,
    ``h_0, h_1``. Each group holds parametrized modules of one class (``Sequential(embedding,
    block, block, head)`` gives the blocks); in a ``Sequential`` or among attributes they must be
    composite and at least two (a plain ``Sequential(Linear, ReLU, Linear)`` is one MLP).
    """
    found: list[tuple[str, ...]] = []
    for qual, module in model.named_modules():
        head = f"{qual}." if qual else ""
        children = [(k, c) for k, c in module.named_children() if _has_params(c)]
        groups: dict[str, list[tuple[int, str, nn.Module]]] = {}
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            groups["<list>"] = [(i, k, c) for i, (k, c) in enumerate(children)]
        for k, c in children:
            m = _NUMBERED.fullmatch(k)
            if m and not isinstance(module, nn.ModuleList):
                groups.setdefault(m.group(1), []).append((int(m.group(2)), k, c))
        for stem, members in groups.items():
            listed = stem == "<list>" or isinstance(module, nn.ModuleDict)
            for cls in dict.fromkeys(type(c) for _, _, c in members):  # one class per group
                same = [t for t in members if type(t[2]) is cls]
                if not listed and (len(same) < 2 or not all(_is_composite(c) for *_, c in same)):
                    continue
                found.append(tuple(head + k for _, k, _ in sorted(same, key=lambda t: t[0])))
    return found


def find_blocks(model: nn.Module, graph: Graph | None = None) -> Blocks | None:
    """The model's blocks, however it holds them: from the traced graph first, then by names.

    With a graph that has residual branches, the blocks are the group of :func:`_candidates`
    holding the most branch ends, ordered by when the forward pass first reaches them (so a
    ``ModuleDict`` with any keys works). Otherwise the longest group of composite modules (else of
    single layers), in the order of its numbers.

    >>> net = nn.Sequential(nn.ModuleDict({str(i): nn.Linear(2, 2) for i in range(3)}))
    >>> find_blocks(net).names
    ('0.0', '0.1', '0.2')
    """
    groups = _candidates(model)
    if not groups:
        return None
    if graph is not None and graph.branches:
        ends = [b.last_weight or b.last for b in graph.branches]

        def holds(block: str) -> bool:
            return any(e == block or e.startswith(block + ".") for e in ends)

        counts = [sum(holds(b) for b in g) for g in groups]
        best = max(range(len(groups)), key=lambda i: (counts[i], len(groups[i])))
        if counts[best] > 0:
            first = {}
            for layer in graph.order():
                for b in groups[best]:
                    if b not in first and (layer.name == b or layer.name.startswith(b + ".")):
                        first[b] = layer.order
            rank = {b: i for i, b in enumerate(groups[best])}
            names = sorted(groups[best], key=lambda b: (first.get(b, math.inf), rank[b]))
            return Blocks(tuple(names), "graph")

    def rank(g: tuple[str, ...]) -> tuple[bool, int]:  # blocks before single layers, then length
        return all(_is_composite(model.get_submodule(b)) for b in g), len(g)

    return Blocks(max(groups, key=rank), "names")


def num_blocks(model: nn.Module, graph: Graph | None = None) -> int:
    """The number of blocks ``L`` of a model (see the module docstring).

    >>> num_blocks(nn.Sequential(nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])))
    3
    """
    found = find_blocks(model, graph)
    if found is not None:
        return len(found.names)
    if graph is not None and graph.branches:
        return max(1, len(graph.branches) // 2)
    raise InitlabError(
        f"cannot tell the depth of {type(model).__name__}: no repeated blocks (an nn.ModuleList, "
        "nn.ModuleDict, nn.Sequential or numbered attributes of one class) and no traced "
        "residual branch; pass the graph (initlab.trace(model, example)) or n_layers=..."
    )


def _block_index(name: str, blocks: Blocks | None) -> int | None:
    return None if blocks is None else blocks.index(name)


def _module_leaf(name: str) -> str:
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 else ""


def _is_embedding(module: nn.Module) -> bool:
    return isinstance(module, (nn.Embedding, nn.EmbeddingBag))


def _is_matrix(module: nn.Module, leaf: str, p: torch.Tensor) -> bool:
    """A weight that mixes units: a Linear, a convolution, HF's ``Conv1D``, a raw 2-D parameter."""
    return (
        p.dim() >= 2
        and not _is_embedding(module)
        and not is_norm(module)
        and leaf.startswith("weight")
    )


def _is_bias(module: nn.Module, leaf: str, p: torch.Tensor) -> bool:
    return leaf.startswith("bias") and not is_norm(module)


def _heads(model: nn.Module, graph: Graph | None, blocks: Blocks | None) -> set[str]:
    """Qualified names of the output-head weights: traced ``head`` layers, else outside the blocks."""
    if graph is not None:
        names = set()
        for layer in graph.heads:
            if layer.kind == "weight":
                prefix = f"{layer.name}." if layer.name else ""
                names |= {prefix + k for k, v in layer.params.items() if v.dim() >= 2}
        return names
    last = [n for n, m, leaf, p in _named_params(model) if _is_matrix(m, leaf, p)]
    return {last[-1]} if last and _block_index(last[-1], blocks) is None else set()


def _residual_outs(model: nn.Module, graph: Graph | None, blocks: Blocks | None) -> set[str]:
    """Residual projections: known names inside the blocks, else the traced ``residual_out`` layers."""
    names = {
        n for n, m, leaf, p in _named_params(model)
        if _is_matrix(m, leaf, p) and _module_leaf(n) in _RESIDUAL_OUT
        and (blocks is None or _block_index(n, blocks) is not None)
    }  # fmt: skip
    if names or graph is None:
        return names
    for b in graph.branches:
        layer = graph.layers.get(b.last_weight) if b.last_weight else None
        if layer is not None:
            prefix = f"{layer.name}." if layer.name else ""
            names |= {prefix + k for k, v in layer.params.items() if v.dim() >= 2}
    return names


def _norm_rules(model: nn.Module) -> Rules:
    return {n: ("zeros" if leaf.startswith("bias") else "ones") for n, m, leaf, _ in _named_params(model)
            if is_norm(m)}  # fmt: skip


def _normal(std: float) -> tuple[str, dict[str, float]]:
    return ("normal", {"std": float(std)})


def _trunc(std: float, a: float, b: float) -> tuple[str, dict[str, float]]:
    """Truncated normal; ``a``, ``b`` in units of std (initlab's convention)."""
    return ("trunc_normal", {"std": float(std), "a": float(a), "b": float(b)})


def _trunc_abs(std: float, lo: float = -2.0, hi: float = 2.0) -> tuple[str, dict[str, float]]:
    """``torch.nn.init.trunc_normal_(std=std)``: absolute bounds ``[lo, hi]`` (nothing cut for 0.02)."""
    return _trunc(std, lo / std, hi / std)


def _uniform(bound: float) -> tuple[str, dict[str, float]]:
    return ("uniform", {"a": -float(bound), "b": float(bound)})


# ---------------------------------------------------------------------------------------------
# callable rules


@dataclass(frozen=True)
class ForgetGateBias:
    """Fill an LSTM ``bias_ih`` (gates i, f, g, o stacked): forget gate ``value``, the rest 0.

    >>> b = torch.empty(8); ForgetGateBias()(b, None)
    tensor([0., 0., 1., 1., 0., 0., 0., 0.])
    """

    value: float = 1.0

    def __call__(
        self, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if tensor.dim() != 1 or tensor.shape[0] % 4:
            raise InitlabError(
                f"forget-gate bias needs a 1-D LSTM bias of 4H values, got shape {tuple(tensor.shape)}"
            )
        h = tensor.shape[0] // 4
        with torch.no_grad():
            tensor.zero_()
            tensor[h : 2 * h] = self.value
        return tensor


@dataclass(frozen=True)
class NormalPadded:
    """N(0, std) with the embedding's ``padding_idx`` row set to 0 (HF ``_init_weights``)."""

    std: float
    padding_idx: int

    def __call__(
        self, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        with torch.no_grad():
            work = torch.empty(tensor.shape, dtype=torch.float32)
            work.normal_(0.0, self.std, generator=generator)
            work[self.padding_idx] = 0.0
            return tensor.copy_(work)


# ---------------------------------------------------------------------------------------------
# the presets


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


def _vit_tokens(model: nn.Module) -> Rules:
    rules: Rules = {}
    for n, _, leaf, _ in _named_params(model):
        if leaf == "pos_embed":
            rules[n] = _trunc_abs(0.02)
        elif leaf in ("cls_token", "reg_token", "dist_token"):
            rules[n] = _normal(1e-6)
    return rules


def _vit(model: nn.Module, mode: str, head_bias: float) -> Rules:
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        mod = n.rpartition(".")[0]
        if isinstance(m, nn.Linear):
            is_head = mod.startswith("head")
            if leaf == "weight":
                if mode == "":
                    rules[n] = _trunc_abs(0.02)
                elif mode == "jax" and is_head:
                    rules[n] = "zeros"
                elif mode == "moco" and "qkv" in mod:  # Xavier per Q, K, V slice
                    rules[n] = _uniform(math.sqrt(6.0 / (p.shape[0] // 3 + p.shape[1])))
                else:  # Xavier uniform on the whole matrix (a fused qkv included)
                    rules[n] = _uniform(math.sqrt(6.0 / (p.shape[0] + p.shape[1])))
            elif leaf == "bias":
                if mode == "jax" and is_head:
                    rules[n] = ("constant", {"val": float(head_bias)})
                elif mode == "jax" and "mlp" in mod:
                    rules[n] = _normal(1e-6)
                else:
                    rules[n] = "zeros"
        elif isinstance(m, nn.Conv2d) and mode == "jax":
            rules[n] = "lecun_normal" if leaf == "weight" else "zeros"
        elif isinstance(m, nn.Conv2d):
            rules[n] = "keep"  # timm leaves the patch embedding at PyTorch's default
    rules.update(_vit_tokens(model))
    return rules


def vit(model: nn.Module, graph: Graph | None = None) -> Rules:
    """timm ViT, ``weight_init=''``: Linear ``trunc_normal_(std=.02)``, biases 0, patch conv kept.

    ``pos_embed`` ``trunc_normal_(std=.02)``, ``cls_token`` / ``reg_token`` N(0, 1e-6); norms 1/0.
    Source: Dosovitskiy et al. 2021; huggingface/pytorch-image-models
    ``timm/models/vision_transformer.py`` (``VisionTransformer.init_weights``,
    ``init_weights_vit_timm``). timm's ``fix_init`` (proj / sqrt(2 l)) is not applied.
    """
    return _vit(model, "", 0.0)


def vit_jax(model: nn.Module, graph: Graph | None = None, *, nlhb: bool = False,
            num_classes: int | None = None) -> Rules:  # fmt: skip
    r"""timm ViT, ``weight_init='jax'`` (the original JAX/Flax big_vision init).

    Linear Xavier uniform (bound :math:`\sqrt{6/(n_{in}+n_{out})}`, a fused ``qkv`` as one
    matrix); MLP biases N(0, 1e-6), other biases 0; the head weight 0 and bias 0 (``nlhb=True``:
    :math:`-\log C`); patch conv LeCun normal (truncated at 2 sigma, std corrected); ``pos_embed``
    0.02, ``cls_token`` 1e-6. Source: huggingface/pytorch-image-models
    ``timm/models/vision_transformer.py`` (``init_weights_vit_jax``, ``lecun_normal_`` in
    ``timm/layers/weight_init.py``).
    """
    head_bias = 0.0
    if nlhb:
        heads = [
            m for n, m in model.named_modules() if n.startswith("head") and isinstance(m, nn.Linear)
        ]
        c = num_classes or (heads[-1].out_features if heads else None)
        if not c:
            raise InitlabError(
                "vit-jax with nlhb=True needs num_classes= (no Linear named 'head' found)"
            )
        head_bias = -math.log(c)
    return _vit(model, "jax", head_bias)


def vit_moco(model: nn.Module, graph: Graph | None = None) -> Rules:
    r"""timm ViT, ``weight_init='moco'`` (MoCo v3): Xavier uniform, ``qkv`` per Q/K/V slice.

    ``qkv``: bound :math:`\sqrt{6 / (n_{out}/3 + n_{in})}`; other Linear Xavier uniform; biases 0;
    patch conv kept; ``pos_embed`` 0.02, ``cls_token`` 1e-6. Source: Chen et al. 2021;
    huggingface/pytorch-image-models ``timm/models/vision_transformer.py`` (``init_weights_vit_moco``);
    facebookresearch/moco-v3 ``vits.py``. Deviation: moco-v3 also re-inits the patch conv
    (Xavier over ``3*16*16`` and ``embed_dim``) and uses sin-cos position embeddings; timm does not,
    and we follow timm.
    """
    return _vit(model, "moco", 0.0)


def resnet_zero_residual(model: nn.Module, graph: Graph | None = None) -> Rules:
    """torchvision ResNet with ``zero_init_residual=True``.

    Conv ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` (std sqrt(2 / fan_out)); norms
    1/0; the last norm of every residual branch (``bn3`` of Bottleneck, ``bn2`` of BasicBlock:
    found from the traced branches, else by those names) weight 0, so each block starts as the
    identity; the ``fc`` head left at PyTorch's default (``keep``), as torchvision does.

    Source: Goyal et al. 2017, "Accurate, Large Minibatch SGD"; pytorch/vision
    ``torchvision/models/resnet.py`` (``ResNet.__init__``).
    """
    rules: Rules = _norm_rules(model)
    last_norms: set[str] = set()
    if graph is not None:
        last_norms = {
            b.last
            for b in graph.branches
            if b.last in graph.layers and graph.layers[b.last].kind == "norm"
        }
    if not last_norms:
        for n, m in model.named_modules():
            cls = type(m).__name__
            if cls == "Bottleneck" and hasattr(m, "bn3"):
                last_norms.add(f"{n}.bn3" if n else "bn3")
            elif cls == "BasicBlock" and hasattr(m, "bn2"):
                last_norms.add(f"{n}.bn2" if n else "bn2")
    for n, m, leaf, _ in _named_params(model):
        if isinstance(m, nn.modules.conv._ConvNd):
            rules[n] = (
                ("kaiming_normal_fan_out", {"gain": math.sqrt(2.0)})
                if leaf == "weight"
                else "zeros"
            )
        elif isinstance(m, nn.Linear):
            rules[n] = "keep"
        elif is_norm(m) and leaf == "weight" and n.rpartition(".")[0] in last_norms:
            rules[n] = "zeros"
    return rules


def lstm_forget_bias(model: nn.Module, graph: Graph | None = None, *, value: float = 1.0) -> Rules:
    """LSTM forget-gate bias: ``bias_ih[H:2H] = value``, the rest of ``bias_ih`` and ``bias_hh`` 0.

    PyTorch stacks the gates as (i, f, g, o); only ``bias_ih`` carries the 1 (setting both would
    give 2). Weights are left to the plan (``weight_hh`` orthogonal by default). Only ``nn.LSTM``
    and ``nn.LSTMCell`` are touched (a GRU's gates are r, z, n).

    Source: Jozefowicz, Zaremba & Sutskever 2015, "An Empirical Exploration of Recurrent Network
    Architectures" (section 2.2); Gers, Schmidhuber & Cummins 2000.
    """
    rules: Rules = {}
    fill = ForgetGateBias(value)
    for n, m, leaf, _ in _named_params(model):
        if isinstance(m, (nn.LSTM, nn.LSTMCell)) and leaf.startswith("bias_ih"):
            rules[n] = fill
        elif isinstance(m, (nn.LSTM, nn.LSTMCell)) and leaf.startswith("bias_hh"):
            rules[n] = "zeros"
    if not rules:
        raise InitlabError(
            f"preset 'lstm-forget-bias': {type(model).__name__} has no nn.LSTM / nn.LSTMCell with biases"
        )
    return rules


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("gpt2", gpt2, "karpathy/nanoGPT model.py; transformers models/gpt2/modeling_gpt2.py",
               ("sigma", "n_layers")),
        Preset("megatron", megatron, "NVIDIA/Megatron-LM megatron/core/utils.py", ("sigma", "n_layers")),
        Preset("bert", bert, "transformers modeling_utils.py, models/bert/modeling_bert.py", ("sigma",)),
        Preset("hf", bert, "transformers modeling_utils.py (PreTrainedModel._init_weights)", ("sigma",)),
        Preset("olmo-mitchell", olmo_mitchell, "allenai/OLMo olmo/model.py (init_fn=mitchell)", ("cutoff",)),
        Preset("olmo2", olmo2, "allenai/OLMo olmo/model.py (init_fn=normal, cutoff 3); OLMo-core",
               ("sigma", "cutoff")),
        Preset("torchtitan", torchtitan, "pytorch/torchtitan torchtitan/models/llama3/model/model.py",
               ("sigma", "depth_init", "cutoff")),
        Preset("vit", vit, "pytorch-image-models timm/models/vision_transformer.py (mode '')"),
        Preset("vit-jax", vit_jax, "pytorch-image-models timm/models/vision_transformer.py (mode 'jax')",
               ("nlhb", "num_classes")),
        Preset("vit-moco", vit_moco, "pytorch-image-models timm/models/vision_transformer.py (mode 'moco')"),
        Preset("resnet-zero-residual", resnet_zero_residual,
               "pytorch/vision torchvision/models/resnet.py (zero_init_residual=True)"),
        Preset("lstm-forget-bias", lstm_forget_bias, "Jozefowicz et al. 2015", ("value",)),
    ]
}  # fmt: skip


def preset_rules(name: str, model: nn.Module, graph: Graph | None = None, **options: Any) -> Rules:
    """The rules of preset ``name`` for ``model`` (a dict for :func:`initlab.plan`'s ``rules=``).

    Args:
        name: a :data:`PRESETS` name.
        model: the model the rules are for (names, classes and depth are read from it).
        graph: its traced graph; some presets use it to find heads and residual branches.
        **options: the preset's options (e.g. ``sigma=0.02``, ``depth_init=False``).

    >>> from initlab.planning import init
    >>> net = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
    >>> p = init(net, example=torch.tensor([[1, 2]]), rules=preset_rules("gpt2", net, n_layers=1))
    >>> p["1.weight"].std, p["0.weight"].std
    (0.02, 0.02)
    """
    preset = PRESETS[check_choice("preset", name, list(PRESETS))]
    extra = sorted(set(options) - set(preset.options))
    if extra:
        raise InitlabError(
            f"preset {name!r} has no option(s) {extra}; it accepts {list(preset.options) or 'none'}"
        )
    return preset.fn(model, graph, **options)


# ---------------------------------------------------------------------------------------------
# parameters already loaded from a checkpoint


def initialized_params(model: nn.Module, missing_keys: Iterable[str] | None = None) -> list[str]:
    """Names of the parameters loaded from a checkpoint (to keep when re-initializing the rest).

    Without ``missing_keys``: the parameters transformers (>= 5) marks as loaded,
    ``param._is_hf_initialized = True`` (set on each tensor read from the checkpoint in
    ``core_model_loading.py``, and on tied tensors). The *module* flag of the same name is no use
    here: ``PreTrainedModel._initialize_weights`` sets it on every module it visits, those it has
    just initialized because their weights were missing included. With transformers < 5, which
    marks only modules, pass the loading report instead: ``model, info =
    from_pretrained(..., output_loading_info=True)`` and ``missing_keys=info["missing_keys"]``;
    every parameter not missing counts as loaded.
    """
    if missing_keys is not None:
        missing = set(missing_keys)
        return [n for n, _ in model.named_parameters() if n not in missing]
    return [n for n, p in model.named_parameters() if getattr(p, "_is_hf_initialized", False)]


def skip_initialized_rules(model: nn.Module, missing_keys: Iterable[str] | None = None) -> Rules:
    """``{name: "keep"}`` for every parameter of :func:`initialized_params`; merge it last."""
    return {n: "keep" for n in initialized_params(model, missing_keys)}
