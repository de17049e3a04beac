"""Residual branches and embedding sums, read from the additions the tracer recorded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from .tracer import _Info, _Path
from .types import Branch, Layer


def _branches(adds: list[tuple[_Info, _Info, dict[str, _Info]]],
              layers: dict[str, Layer]) -> list[Branch]:  # fmt: skip
    """The residual additions among the traced ``a + b``: ``x + f(x)`` on one stream.

    Both operands must depend on one stream (a common root; the fork is where their longest
    paths from it part), the branch side must hold a weight layer after the fork, and the
    branch must *end* in its layers: no weight layer at or before the fork still feeds the
    branch operand. That leaves out sums of independent streams (embeddings, masks built from
    ids), and recurrences inside one layer that mix the fork's own output back in (a selective
    scan's ``y + D x``, whose ``y`` is also fed directly by the convolution before the fork).
    A cross-attention branch counts on the stream it is added to, whatever its keys and values
    come from. A table read straight from its root and added in several places (MPNet's
    relative position bias, computed once and added to every layer's attention scores) is no
    skip: once the first layer mixed it into the hidden stream, the second layer's
    ``scores + bias`` reads like ``bias + f(bias)``, but a stream ``x`` of ``x + f(x)`` is added
    once and moves on. Parallel branches summed before the skip (``x + attn(x) + mlp(x)``) are one
    branch each.

    The fork is found call by call, not by layer name: an RNN cell written as a loop,
    ``W x_t + U h_{t-1}``, reaches ``U`` through ``W``'s earlier call, so one layer stands on
    both sides of the sum and it is a recurrence, not a skip. The branch is the operand that does
    not carry the fork itself (in ``(x + mlp(x)) + attn(x)`` the left one carries ``x``: ``attn``
    is the branch, whatever the depths; the fork may be the example input itself, a parallel
    block first in the model, which an operand carries through no weight layer: ``_Info.bare``,
    as ``pending`` holds a fork layer); when neither does, the deeper path is the branch and
    the other a projection shortcut (ResNet's ``bn(conv(x)) + f(x)``), and two paths of equal
    depth (``a(x) + b(x)``) are no residual at all.
    """
    found: dict[tuple[tuple[str, ...], int], Branch] = {}
    uses = Counter(id(x) for a, b, _ in adds for x in (a, b))
    for call, (a, b, feeds) in enumerate(adds):
        shared = a.streams.keys() & b.streams.keys()
        if not shared:
            continue  # independent streams: no fork, no skip connection
        root = max(shared, key=lambda r: a.streams[r].weight + b.streams[r].weight)
        ca, cb = a.streams[root].calls(), b.streams[root].calls()
        common = _common_calls(ca, cb)
        pa, pb = [c.layer for c in ca], [c.layer for c in cb]
        sa, sb = pa[common:], pb[common:]
        wa = [n for n in sa if layers[n].kind == "weight"]
        wb = [n for n in sb if layers[n].kind == "weight"]
        if not wa and not wb:
            continue
        before = set(pa[:common])
        carries_a = bool((_ends(a.pending) | a.bare) & before - set(sa))  # holds the fork itself
        carries_b = bool((_ends(b.pending) | b.bare) & before - set(sb))
        a_is_branch = (len(wa), len(sa)) > (len(wb), len(sb))
        if carries_a != carries_b and (wb if carries_a else wa):
            a_is_branch = carries_b  # (x + mlp(x)) + attn(x): attn is the branch, x its skip
        branch, skip, skip_path = (sa, sb, pb) if a_is_branch else (sb, sa, pa)
        if set(branch) & set(skip):
            continue  # one layer on both sides, called twice: a recurrence (W x_t + U h_{t-1})
        if not (carries_a or carries_b) and len(wa) == len(wb):
            continue  # a(x) + b(x), two layers' paths of equal depth: no identity, no shortcut
        if carries_b if a_is_branch else carries_a:
            skip = []  # the skip operand carries the fork (x + g(x)): an identity skip
        feeding = _ends((a if a_is_branch else b).pending)
        if (feeding & set(pa[:common])) - set(branch):
            continue  # the sum is not the branch's output: the fork's own layers still feed it
            # (a layer both before the fork and on the branch is one shared across depth)
        if len(skip_path) == 1 and uses[id(b if a_is_branch else a)] > 1:
            continue  # a table added in several places (a bias on every layer's scores)
        if len(feeding) > 1 and not (wb if a_is_branch else wa):
            for key in [k for k, br in found.items() if _joins(br, feeding, layers)]:
                del found[key]  # the join of parallel branches, first taken for a shortcut
            ends = [feeds[n].streams.get(root) for n in sorted(feeding) if n in feeds]
            for path in [p for p in ends if p is not None]:
                names = path.names()
                _record(found, names[_common(names, skip_path) :], (), layers, call)
        elif feeding <= set(branch):
            _record(found, branch, skip, layers, call)
    return list(found.values())


_GATES = ("sigmoid", "hardsigmoid")


def _ends(pending: Mapping[str, tuple[str | None, float | None]]) -> set[str]:
    """The layers whose outputs a sum adds up, less the gates among several: a layer still
    pending under a sigmoid scales another's output (``sigmoid(g(x)) * f(x)``, Qwen2-MoE's shared
    expert gate), so ``f``, not ``g``, ends the branch."""
    ends = {n for n, (act, _) in pending.items() if act not in _GATES}
    return ends if ends else set(pending)


def _common(pa: list[str], pb: list[str]) -> int:
    n = 0
    while n < min(len(pa), len(pb)) and pa[n] == pb[n]:
        n += 1
    return n


def _common_calls(ca: list[_Path], cb: list[_Path]) -> int:
    """Length of the prefix two paths share *call for call*: the fork is the last tensor both
    read. Names alone would merge two calls of one layer (an RNN cell's ``W`` at steps ``t`` and
    ``t - 1``) into a fork that no tensor is."""
    n = 0
    while n < min(len(ca), len(cb)) and ca[n] is cb[n]:
        n += 1
    return n


def _record(found: dict[tuple[tuple[str, ...], int], Branch], branch: list[str],
            skip: list[str], layers: dict[str, Layer], call: int) -> None:  # fmt: skip
    """Record ``branch`` as found by the sum ``call``: a layer shared across depth (ALBERT runs
    one layer ``n`` times) ends ``n`` additions, one branch each, so ``L`` counts the calls."""
    weights = [n for n in branch if layers[n].kind == "weight"]
    if not weights or (tuple(branch), call) in found:
        return
    units = [n for n in weights for _ in range(layers[n].weight_depth)]
    key = (tuple(branch), call)
    found[key] = Branch(tuple(branch), tuple(units), branch[-1], weights[-1], tuple(skip))


def _joins(br: Branch, feeding: set[str], layers: dict[str, Layer]) -> bool:
    skip_weights = [n for n in br.skip_layers if layers[n].kind == "weight"]
    return br.last_weight in feeding and bool(skip_weights) and skip_weights[-1] in feeding


def _embedding_groups(sums: list[frozenset[str]], layers: dict[str, Layer],
                      params: list[str]) -> tuple[tuple[str, ...], ...]:  # fmt: skip
    """Merge the traced embedding sums into maximal groups (``(a + b) + c`` is one group).

    Members are ordered as they ran (layers), then parameters in the model's order.
    """
    groups: list[set[str]] = []
    for members in sums:
        merged = set(members)
        for g in [g for g in groups if g & merged]:
            merged |= g
            groups.remove(g)
        groups.append(merged)
    rank = {n: (0, la.order) for n, la in layers.items()}
    rank.update({n: (1, i) for i, n in enumerate(params) if n not in rank})
    return tuple(tuple(sorted(g, key=lambda n: rank.get(n, (2, 0)))) for g in groups)
