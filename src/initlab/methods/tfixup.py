r"""T-Fixup (Huang, Perez, Ba & Volkovs, ICML 2020): transformers without LayerNorm or warmup.

Xavier everywhere, embeddings ``N(0, d^-1/2) (9N)^(-1/4)``, V/out/fc1/fc2 of each residual
sub-layer times ``0.67 N_e^(-1/4)`` (encoder) or ``(9 N_d)^(-1/4)`` (decoder), LayerNorm removed;
as ``layer6ai-labs/T-Fixup``. Sub-layers are the residual branches of the traced graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from ..connectivity import is_fused_qkv
from ..errors import InitlabError, check_choice
from ..graph import trace
from ..planning import plan
from ..transaction import transaction
from ._branches import (
    ResidualResult,
    branch_depth,
    is_scalar_module,
    layer_group,
    remove_norms,
    residual_branches,
)

__all__ = ["tfixup", "tfixup_scales"]

_Q_OR_K = re.compile(r"(^|_)(q|k|wq|wk|query|key|to_q|to_k|q_proj|k_proj|c_q|c_k)$")


def tfixup_scales(encoder_layers: int = 0, decoder_layers: int = 0) -> dict[str, float]:
    r"""T-Fixup's multipliers (Huang et al. 2020; ``layer6ai-labs/T-Fixup``).

    encoder sub-layers :math:`0.67 N_e^{-1/4}`, decoder sub-layers :math:`(9 N_d)^{-1/4}`,
    encoder and decoder token embeddings :math:`(9 N_e)^{-1/4}` and :math:`(9 N_d)^{-1/4}`.

    >>> s = tfixup_scales(6, 6)
    >>> round(s["encoder"], 4), round(s["decoder"], 4), round(s["encoder_embedding"], 4)
    (0.4281, 0.3689, 0.3689)
    """
    out: dict[str, float] = {}
    if encoder_layers:
        out["encoder"] = 0.67 * encoder_layers ** (-0.25)
        out["encoder_embedding"] = (9 * encoder_layers) ** (-0.25)
    if decoder_layers:
        out["decoder"] = (9 * decoder_layers) ** (-0.25)
        out["decoder_embedding"] = (9 * decoder_layers) ** (-0.25)
    return out


def _default_example(model: nn.Module) -> Any:
    """A small input for torch's own transformer classes."""

    def dims(layer: Any) -> tuple[int, bool]:
        attn = layer.self_attn
        return int(attn.embed_dim), bool(attn.batch_first)

    if isinstance(model, nn.TransformerEncoder):
        d, bf = dims(model.layers[0])
        return torch.zeros((2, 3, d) if bf else (3, 2, d))
    if isinstance(model, nn.TransformerEncoderLayer):
        d, bf = dims(model)
        return torch.zeros((2, 3, d) if bf else (3, 2, d))
    if isinstance(model, (nn.TransformerDecoder, nn.TransformerDecoderLayer)):
        d, bf = dims(model.layers[0] if isinstance(model, nn.TransformerDecoder) else model)
        x = torch.zeros((2, 3, d) if bf else (3, 2, d))
        return (x, x.clone())
    if isinstance(model, nn.Transformer):
        d, bf = dims(model.encoder.layers[0])
        x = torch.zeros((2, 3, d) if bf else (3, 2, d))
        return (x, x.clone())
    raise InitlabError(
        f"tfixup: pass example= for {type(model).__name__} (it can be omitted only for "
        "nn.TransformerEncoder/Decoder(Layer) and nn.Transformer)"
    )


def _side(name: str, model: nn.Module, default: str) -> str:
    """'encoder' or 'decoder' for the layer at ``name``: from torch's layer classes on its path."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = model.get_submodule(".".join(parts[:i]))
        if isinstance(mod, nn.TransformerDecoderLayer):
            return "decoder"
        if isinstance(mod, nn.TransformerEncoderLayer):
            return "encoder"
    if isinstance(model, nn.TransformerDecoderLayer):
        return "decoder"
    if isinstance(model, nn.TransformerEncoderLayer):
        return "encoder"
    return default


def _xavier_chunks(gains: tuple[float, ...]) -> Callable[[torch.Tensor, torch.Generator], None]:
    """Xavier-uniform per stacked chunk (packed Q/K/V), each chunk with its own gain."""

    def fill(tensor: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            for chunk, g in zip(tensor.chunk(len(gains), dim=0), gains, strict=True):
                work = torch.empty(chunk.shape, dtype=torch.float32)
                nn.init.xavier_uniform_(work, gain=g, generator=generator)
                chunk.copy_(work)

    return fill


def tfixup(
    model: nn.Module,
    example: Any = None,
    *,
    seed: int = 0,
    norms: Literal["remove", "keep"] = "remove",
    kind: Literal["encoder", "decoder"] = "encoder",
    layers: int | None = None,
    embed_scale: float = 1.0,
) -> ResidualResult:
    r"""T-Fixup (Huang, Perez, Ba & Volkovs, ICML 2020) for transformers built from torch layers.

    Following ``layer6ai-labs/T-Fixup`` (``fairseq/modules/transformer_layer.py``
    ``fixup_initialization`` and ``fairseq/models/transformer.py``):

    * every weight Xavier-uniform with gain 1, biases 0; attention Q and K projections with gain
      :math:`1/\sqrt 2` (fairseq's; for a packed ``in_proj_weight`` that is Xavier on the packed
      ``(3d, d)`` matrix, std :math:`1/\sqrt{2d}`); the V projection with gain 1 (the code undoes
      fairseq's :math:`1/\sqrt 2` with a factor :math:`\sqrt 2`);
    * in each residual sub-layer (found by the trace): V, the attention output projection and
      the feed-forward weights times :math:`0.67 N_e^{-1/4}` in an encoder layer, times
      :math:`(9 N_d)^{-1/4}` in a decoder layer (self- and cross-attention); Q, K and biases are
      not scaled; for a packed ``in_proj_weight`` (or a fused ``qkv`` Linear) only the V chunk;
    * token embeddings :math:`N(0, d^{-1/2})` times :math:`(9N)^{-1/4}` (N: the encoder's layers
      for encoder-side embeddings, the decoder's for ``tgt``/``dec`` ones), *as the first layer
      sees them*: fairseq multiplies the looked-up rows by ``embed_scale`` :math:`= \sqrt d`, so
      the effective std is :math:`(9N)^{-1/4}`. initlab draws the table with std
      :math:`\sqrt d \, d^{-1/2} (9N)^{-1/4} / \text{embed\_scale}`, i.e. :math:`(9N)^{-1/4}`
      for the usual model that feeds its rows unscaled (``embed_scale=1``: GPT-style models) and
      fairseq's own table for ``embed_scale=sqrt(d)``. Drawing fairseq's table into a model
      without the multiplier makes tokens 8x weaker than positions at d = 64; on the char GPT
      benchmark the effective scale lowered the held-out loss from 2.10/2.09 to 2.03/2.02 (lr
      1e-3, seeds 0/1). Positional embeddings (names with ``pos``/``wpe``) are
      :math:`N(0, d^{-1/2})` unscaled, as fairseq's learned ones (added after the multiplier);
    * ``norms="remove"`` (the paper: no LayerNorm, no warmup) replaces every normalization layer
      with ``initlab.nn.NoNorm``; ``"keep"`` leaves them at weight 1, bias 0.

    Encoder or decoder: layers inside ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
    are classified by class; for other blocks (GPT-style, built from ``nn.Linear`` and
    ``nn.MultiheadAttention``) ``kind`` decides. A GPT block has two sub-layers like an encoder
    layer, so ``kind="encoder"`` (the default) is the derivation's match even for a causal
    decoder-only model; ``kind="decoder"`` gives the stronger :math:`(9N)^{-1/4}`. ``N`` is counted
    as the number of distinct layers the branches belong to (``layers=`` overrides it). Inside a
    sub-layer, linears named like ``q``/``k`` (``q_proj``, ``wq``, ``query``...) are Q/K; a Linear
    named ``qkv``/``c_attn``/``in_proj`` or with ``out == 3 * in`` is a fused Q/K/V.

    Deviations: the output head is Xavier (fairseq draws its ``embed_out`` from
    :math:`N(0, d^{-1/2})`); the warmup-free schedule of the paper is up to your optimizer.

    Args:
        model: a transformer; ``nn.TransformerEncoder``/``Decoder``/``nn.Transformer`` need no
            example.
        example: one forward call's input.
        seed: seed of the draws.
        norms: ``"remove"`` or ``"keep"``.
        kind: how to scale sub-layers outside torch's encoder/decoder layer classes.
        layers: override the number of layers ``N`` (for that ``kind``).
        embed_scale: the factor the model multiplies token embeddings by before the first
            layer (1: none, GPT-style; ``sqrt(d)``: fairseq and the original Transformer).

    >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), num_layers=4,
    ...                             enable_nested_tensor=False)
    >>> r = tfixup(enc)
    >>> round(r.factors["layers.0.linear2.weight"], 4), len(r.removed)
    (0.4738, 8)
    """
    check_choice("norms", norms, ["remove", "keep"])
    check_choice("kind", kind, ["encoder", "decoder"])
    if not (embed_scale > 0 and math.isfinite(embed_scale)):
        raise InitlabError(f"tfixup: embed_scale must be a positive number, got {embed_scale}")
    if example is None:
        example = _default_example(model)

    with transaction(model) as state:
        removed = remove_norms(model, state) if norms == "remove" else ()
        g = trace(model, example)
        branches = residual_branches(g)
        if not branches:
            raise InitlabError(f"tfixup: the trace found no residual sub-layer. {g.summary()}")
        p = plan(model, "xavier_uniform", example=example, seed=seed, graph=g, residual_scale=False,
                 rules={"weight": ("xavier_uniform", {"gain": 1.0})})  # fmt: skip
        order = {la.name: la.order for la in g.order()}
        reached = sorted((la for la in g.order() if la.order >= 0), key=lambda la: la.order)
        # which layers each sub-layer spans, and its side
        groups: dict[str, set[str]] = {"encoder": set(), "decoder": set()}
        spans: list[tuple[str, list[str]]] = []
        for b in branches:
            first = min(order[n] for n in b.layers)
            last = order[b.last]
            span = [la.name for la in reached if first <= la.order <= last and la.kind == "weight"
                    and not is_scalar_module(la.module)]  # fmt: skip
            side = _side(b.last, model, kind)
            group = layer_group(b.last, model)
            # a cross-attention branch's path runs back through the encoder: keep its own layer
            own = [n for n in span if layer_group(n, model) == group or n == group]
            groups[side].add(group)
            spans.append((side, own or span))
        n_enc = sum(isinstance(m, nn.TransformerEncoderLayer) for m in model.modules()) or len(
            groups["encoder"]
        )
        n_dec = sum(isinstance(m, nn.TransformerDecoderLayer) for m in model.modules()) or len(
            groups["decoder"]
        )
        if layers is not None:
            if layers < 1:
                raise InitlabError(f"tfixup: layers must be >= 1, got {layers}")
            n_enc, n_dec = (layers, n_dec) if kind == "encoder" else (n_enc, layers)
        s = tfixup_scales(n_enc if groups["encoder"] else 0, n_dec if groups["decoder"] else 0)
        factors: dict[str, float] = {}
        inv = 1.0 / math.sqrt(2.0)
        done: set[str] = set()
        for side, span in spans:
            c = s[side]
            for name in span:
                if name in done:
                    continue
                done.add(name)
                la = g.layers[name]
                mod = la.module
                leaf = name.rsplit(".", 1)[-1].lower()
                prefix = f"{name}."
                if isinstance(mod, nn.MultiheadAttention):
                    if mod.in_proj_weight is not None:
                        pn = prefix + "in_proj_weight"
                        p = p.replace(
                            pn, scheme="custom", kwargs={}, fn=_xavier_chunks((inv, inv, c))
                        )
                        factors[pn] = c  # the V chunk
                    else:
                        for k in ("q_proj_weight", "k_proj_weight"):
                            p = p.replace(prefix + k, gain=1.0)
                        p = p.replace(prefix + "v_proj_weight", gain=c)
                        factors[prefix + "v_proj_weight"] = c
                    pn = prefix + "out_proj.weight"
                    p = p.replace(pn, gain=c)
                    factors[pn] = c
                    continue
                if not isinstance(mod, nn.Linear):
                    continue
                pn = prefix + "weight"
                if pn not in p.entries:
                    continue
                if is_fused_qkv(leaf) or mod.out_features == 3 * mod.in_features:
                    p = p.replace(pn, scheme="custom", kwargs={}, fn=_xavier_chunks((inv, inv, c)))
                elif _Q_OR_K.search(leaf):
                    p = p.replace(pn, gain=inv)
                    continue
                else:
                    p = p.replace(pn, gain=c)
                factors[pn] = c
        # embeddings
        notes: list[str] = []
        for la in g.order():
            if la.kind != "embedding":
                continue
            for pname, t in la.params.items():
                full = f"{la.name}.{pname}" if la.name else pname
                if full not in p.entries or t.dim() != 2:
                    continue
                d = t.shape[-1]
                low = la.name.lower()
                if "pos" in low or "wpe" in low:
                    p = p.replace(full, scheme="normal", kwargs={"std": d**-0.5}, gain=1.0, fn=None)
                    continue
                side = (
                    "decoder"
                    if ("tgt" in low or "dec" in low or not groups["encoder"])
                    else "encoder"
                )
                key = f"{side}_embedding"
                c = s.get(key, s.get("encoder_embedding", s.get("decoder_embedding", 1.0)))
                std = c / embed_scale  # sqrt(d) * d^-1/2 * c, as the first layer sees it
                p = p.replace(full, scheme="normal", kwargs={"std": std}, gain=1.0, fn=None)
                factors[full] = c
                pad = getattr(la.module, "padding_idx", None)
                if pad is not None:
                    notes.append(
                        f"{la.name}: padding row {pad} is drawn too; zero it if you rely on it"
                    )
        p.apply(transactional=False)  # the transaction above is the undo
        L = len(branches)
        ms = [branch_depth(g, b) for b in branches]
        notes.insert(
            0, f"N_e={n_enc if groups['encoder'] else 0}, N_d={n_dec if groups['decoder'] else 0}"
        )
        return ResidualResult("tfixup", p, L, max(set(ms), key=ms.count), factors, (), {}, removed,
                              tuple(notes))  # fmt: skip
