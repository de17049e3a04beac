"""Looking at the model: its blocks (:func:`find_blocks`, :func:`num_blocks`), each parameter's
block index and role (matrix, bias, embedding, head, residual output), and rule helpers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InitlabError
from ..graph import Graph, is_norm

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
