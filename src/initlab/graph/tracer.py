"""The tracer: a :class:`~torch.overrides.TorchFunctionMode` plus module hooks that follow every
tensor from the input to the output (``_Info``: the weight layers feeding a tensor and its
paths of layers from each root, ``_Path``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .activations import (
    _CONCAT,
    _MIXING,
    _SHAPE_OF,
    _VALUE_FREE,
    ACTIVATION_FUNCTIONS,
    ADD_FUNCTIONS,
    ATTENTION_FUNCTIONS,
    DIV_FUNCTIONS,
    DROPOUT_FUNCTIONS,
    MATMUL_FUNCTIONS,
    MUL_FUNCTIONS,
    SCALE_FUNCTIONS,
    SOFTMAX_FUNCTIONS,
)
from .meta import _METADATA, _leaves, _meta_operands, _MetaCalls, _shortcut
from .types import Layer


@dataclass(frozen=True)
class _Path:
    """A persistent linked list of layer calls on a tensor's longest path from the input."""

    layer: str
    weight: int  # weight layers on the path up to here
    prev: _Path | None

    def names(self) -> list[str]:
        return [node.layer for node in self.calls()]

    def calls(self) -> list[_Path]:
        """The path's nodes from its root, one per layer call (a layer called twice on the path,
        or on two paths, is two nodes)."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.prev
        return out[::-1]


_ROOT = "\x00"  # marks a path's root that is no layer: an example input or a parameter
_STATE_ROOT = _ROOT + "param "  # a parameter or buffer used as a plain tensor


def _root_path(label: str) -> _Path:
    return _Path(_ROOT + label, 0, None)


Streams = Mapping[str, _Path]


@dataclass(frozen=True)
class _Info:
    """What flows with a tensor: the last weight layers feeding it and their first activation.

    ``streams`` maps each root the tensor depends on to the longest path of layers from it:
    an example input (``"\x00input 0"``), a parameter or buffer used as a plain tensor
    (``"\x00param pos_embed"``, kept only while no other root is mixed in), or the first layer of
    a stream no input feeds (an embedding's lookup of integer ids). ``path`` is the longest of
    them. ``embed`` names the embedding-like sources this tensor is a plain sum (or
    concatenation) of, when it is one: the layer that produced it, a parameter, or several of
    them after an embedding sum; empty once two streams are mixed any other way. ``bare`` names
    the roots whose tensor reaches this one through no weight layer (norms are transparent, as
    for ``pending``): the example input in ``x + f(x)``, as ``pending`` holds a layer in
    ``h + f(h)``. A root is a stream's fork like a layer is, and a sum that holds it is the skip.
    """

    pending: Mapping[str, tuple[str | None, float | None]]  # layer -> (activation, its param)
    streams: Streams
    embed: frozenset[str] = frozenset()
    scale: float = 1.0  # constant factor applied since the last layer (nan: an unknown one)
    scores: tuple[str, int, float] | None = None  # attention scores: (query layer, d_k, factor)
    keep: float = 1.0  # product of 1 - p of the dropouts since the last layer
    bare: frozenset[str] = frozenset()  # roots added in with no weight layer in between
    normed: frozenset[str] = frozenset()  # pending layers whose raw output a norm has read

    @property
    def path(self) -> _Path | None:
        return max(self.streams.values(), key=_path_key) if self.streams else None

    @property
    def depth(self) -> int:
        path = self.path
        return path.weight if path else 0


def _path_key(p: _Path) -> int:
    return p.weight


def _rooted(label: str, embed: frozenset[str] = frozenset()) -> _Info:
    path = _root_path(label)
    return _Info({}, {path.layer: path}, embed, bare=frozenset({path.layer}))


_EMPTY = _Info({}, {})


def _merge_streams(infos: list[_Info]) -> Streams:
    streams: dict[str, _Path] = {}
    for info in infos:
        for root, path in info.streams.items():
            if root not in streams or _path_key(path) > _path_key(streams[root]):
                streams[root] = path
    if any(not r.startswith(_STATE_ROOT) for r in streams):  # x * gamma, x + bias: x's streams
        streams = {r: p for r, p in streams.items() if not r.startswith(_STATE_ROOT)}
    return streams


def _merge(infos: list[_Info], embed: frozenset[str] | None = None) -> _Info:
    """One tensor's info from its operands': pending layers and streams united.

    ``embed`` sets the result's embedding sources (default: kept from a single operand, dropped
    when several are mixed).
    """
    if not infos:
        return _EMPTY if embed is None else _Info({}, {}, embed)
    if len(infos) == 1 and embed is None:
        return infos[0]
    pending: dict[str, tuple[str | None, float | None]] = {}
    for info in infos:
        for k, v in info.pending.items():
            if pending.get(k, (None, None))[0] is None:
                pending[k] = v  # an activation seen on any operand beats none
    scores = {i.scores for i in infos if i.scores is not None}
    streams = _merge_streams(infos)
    return _Info(
        pending,
        streams,
        embed if embed is not None else frozenset(),
        scores=scores.pop() if len(scores) == 1 else None,  # scores + mask: still scores
        bare=frozenset(r for i in infos for r in i.bare if r in streams),
        normed=frozenset(
            k
            for k, (act, _) in pending.items()
            if act is None
            and all(k in i.normed for i in infos if i.pending.get(k, ("",))[0] is None)
        ),
    )


def _single(pending: Mapping[str, object]) -> str | None:
    return next(iter(pending)) if len(pending) == 1 else None


def _constant(func, args: tuple, kwargs: dict) -> float | None:
    """The factor ``x * c``, ``c * x`` or ``x / c`` applies to ``x`` when ``c`` is a number or a
    one-element tensor (``nan`` when its value cannot be read, on meta), else ``None``."""
    if len(args) != 2 or kwargs.get("rounding_mode") is not None:
        return None
    x, c = args
    if not isinstance(x, torch.Tensor):
        x, c = c, x  # __rmul__ / torch.mul(c, x)
        if func in DIV_FUNCTIONS:
            return None  # c / x is no scaling of x
    if isinstance(c, bool) or not isinstance(c, (int, float, torch.Tensor)):
        return None
    if isinstance(c, torch.Tensor):
        if c.numel() != 1:
            return None
        value = math.nan if c.device.type == "meta" else float(c.detach().reshape(()))
    else:
        value = float(c)
    if func in DIV_FUNCTIONS:
        return 1.0 / value if value else math.nan
    return value


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module, layers: dict[str, Layer], owners: dict[int, str],
                 slopes: Mapping[int, float] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.slopes = dict(slopes or {})  # id(PReLU) -> its mean slope, read before a meta pass
        self.meta = False  # a meta pass: move real operands of an op with meta ones to meta
        self.meta_calls = _MetaCalls()
        self.layers = layers
        self.by_module = {id(la.module): la for la in layers.values()}
        self.owners = owners  # id(param) -> layer name
        # id(tensor) -> (tensor, layer name): computed from a layer's parameters alone (a tied
        # table transposed and concatenated into a head's matrix): a use of that layer
        self.derived: dict[int, tuple[torch.Tensor, tuple[str, ...]]] = {}
        self.info: dict[int, tuple[torch.Tensor, _Info]] = {}
        self.depth = 0  # > 0 while inside a leaf layer's forward
        self.counter = 0
        self.adds: list[tuple[_Info, _Info, dict[str, _Info]]] = []  # with each source's output
        self.outputs: dict[str, _Info] = {}  # each weight layer's latest output
        # reads of each layer's output with no activation in between: all, and by a norm alone
        self.raw_reads: Counter[str] = Counter()
        self.norm_reads: Counter[str] = Counter()
        self.functional: dict[str, list[str]] = {}
        self.stash: dict[int, list[_Info]] = {}
        self.act_modules: dict[int, str] = {}
        # id(parameter or buffer) -> qualified name: such a tensor used as a plain operand roots
        # a stream. Read at the first operation, so that a pass on copies of the state
        # (torch.func.functional_call) names the copies it runs on
        self.tensor_names: dict[int, str] | None = None
        self.sums: list[frozenset[str]] = []  # embedding sums, as they were added up
        self.roots = 0  # example tensors rooted so far
        self._first_slot: tuple | None = None  # (module, key) of the first parameter

    # -- tensor bookkeeping
    def get(self, t: object) -> _Info | None:
        if isinstance(t, torch.Tensor):
            entry = self.info.get(id(t))
            if entry is not None and entry[0] is t:
                return entry[1]
        return None

    def put(self, outputs: object, info: _Info) -> None:
        """Attach ``info`` to every floating tensor in ``outputs``.

        Integer and boolean tensors (token ids, masks, indices) carry no signal: a mask built
        from the input and added to attention scores is no path of the stream. ``_EMPTY`` (the
        example's tensors) roots a stream of its own at each tensor.
        """
        for t in _leaves(outputs):
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                if info is _EMPTY:
                    self.info[id(t)] = (t, _rooted(f"input {self.roots}"))
                    self.roots += 1
                else:
                    self.info[id(t)] = (t, info)

    def infos(self, args: object, params: bool = False) -> list[_Info]:
        """The infos of the tensors in ``args``; with ``params``, parameters and buffers too
        (:meth:`leaf_infos` of its leaves)."""
        return self.leaf_infos(_leaves(args), params)

    def leaf_infos(self, leaves: list, params: bool = False) -> list[_Info]:
        """The infos of the tensors among ``leaves``; with ``params``, parameters and buffers too.

        A parameter or floating buffer used as a plain tensor (``x + self.pos_embed``, a fixed
        sinusoidal table) roots a stream of its own; its embedding source is the layer that owns
        it, or its qualified name when no layer does.
        """
        out = []
        for t in leaves:
            info = self.get(t)
            if info is None and params and isinstance(t, torch.Tensor) and t.is_floating_point():
                name = self.owners.get(id(t)) or self.state_name(t)
                if name is not None:
                    info = _rooted(f"param {name}", frozenset({name}))
                    self.info[id(t)] = (t, info)
            if info is not None:
                out.append(info)
        return out

    def state_name(self, t: torch.Tensor) -> str | None:
        """The qualified name of a parameter or buffer of the model, ``None`` for other tensors.

        Names are read from the model as it is now: a pass on copies of the state
        (``torch.func.functional_call``) swaps them in after the mode is entered.
        """
        first = self.first_param()
        if self.tensor_names is None or (first is not None and id(first) not in self.tensor_names):
            named = [*self.model.named_buffers(), *self.model.named_parameters()]
            self.tensor_names = {id(x): n for n, x in named}
        return self.tensor_names.get(id(t))

    def first_param(self) -> torch.Tensor | None:
        """``next(model.parameters())`` as the model is now, read from its slot (found once)."""
        if self._first_slot is None:
            slot = next(((m, k) for m in self.model.modules() for k, v in m._parameters.items()
                         if v is not None), ())  # fmt: skip
            self._first_slot = slot
        if not self._first_slot:
            return None
        module, key = self._first_slot
        return module._parameters.get(key)

    # -- layer calls
    def consume(self, layer: Layer, inputs: list[_Info]) -> None:
        """``layer`` reads tensors: settle the activation of every weight layer feeding it."""
        if layer.order < 0:
            layer.order = self.counter
            self.counter += 1
        layer.calls += 1
        self.count_raw_reads(layer, inputs)
        if layer.kind in ("norm", "activation", "scalar"):
            return
        for info in inputs:
            for source, (act, param) in info.pending.items():
                self.layers[source].consumed = True
                self.settle(self.layers[source], act, param)

    def count_raw_reads(self, layer: Layer, inputs: list[_Info]) -> None:
        """Count the reads of weight layers' outputs that no activation separates from them, and
        those among them by a scale-invariant norm that reads that one output alone
        (:attr:`Layer.normalized`; LocalResponseNorm is not scale-invariant)."""
        for info in inputs:
            raw = [
                s for s, (act, _) in info.pending.items() if act is None and s not in info.normed
            ]
            alone = len(info.pending) == 1 and not info.bare and len(raw) == 1
            scale_free = (
                alone
                and layer.kind == "norm"
                and not isinstance(layer.module, nn.LocalResponseNorm)
            )
            self.raw_reads.update(raw)
            self.norm_reads.update(raw if scale_free else ())

    def normalized(self, name: str) -> bool:
        """Whether every read of layer ``name``'s raw output was a norm's (and there was one)."""
        return 0 < self.norm_reads[name] == self.raw_reads[name]

    def settle(self, layer: Layer, act: str | None, param: float | None) -> None:
        if not layer._seen_activation:
            layer._seen_activation = True
            layer.activation, layer.activation_param = act, param
        if act not in layer.conflicts:
            layer.conflicts.append(act)

    def produce(self, layer: Layer, inputs: list[_Info]) -> _Info:
        base = _merge(inputs)
        if layer.kind == "scalar":
            return base
        streams = {r: _Path(layer.name, p.weight + layer.weight_depth, p)
                   for r, p in base.streams.items()} or {
            layer.name: _Path(layer.name, layer.weight_depth, None)}  # fmt: skip
        if layer.kind == "norm":  # transparent for activations
            return _Info(
                base.pending, streams, base.embed, bare=base.bare, normed=frozenset(base.pending)
            )
        if layer.kind == "activation":
            act = "leaky_relu"
            slope = self.slopes.get(id(layer.module), 0.25)
            pending = self.activate(base, act, slope).pending
            return _Info(pending, base.streams, base.embed, bare=base.bare)
        out = _Info({layer.name: (None, None)}, streams, frozenset({layer.name}))
        self.outputs[layer.name] = out
        return out

    @staticmethod
    def activate(info: _Info, act: str, param: float | None) -> _Info:
        if act == "linear":  # nn.Identity (e.g. a removed norm): no activation, nothing settles
            return info
        pending = {k: (v if v[0] is not None else (act, param)) for k, v in info.pending.items()}
        return _Info(pending, info.streams, info.embed, bare=info.bare)

    # -- module hooks
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        layer = self.by_module.get(id(module))
        if layer is None:
            return
        if self.depth == 0:
            inputs = self.infos((args, kwargs))
            self.consume(layer, inputs)
            merged = _merge(inputs)
            if layer.calls == 1:
                layer.input_scale = merged.scale
                layer.input_keep = merged.keep
            self.stash.setdefault(id(module), []).append(merged)
        self.depth += 1

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        layer = self.by_module.get(id(module))
        if layer is None:
            return
        self.depth -= 1
        if self.depth == 0:
            base = self.stash[id(module)].pop()
            self.put(output, self.produce(layer, [base]))

    # -- activation modules: one activation, whatever functions they are built of
    def act_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth == 0:
            self.stash.setdefault(id(module), []).append(_merge(self.infos((args, kwargs))))
        self.depth += 1

    def act_post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            base = self.stash[id(module)].pop()
            slope = getattr(module, "negative_slope", None)
            self.put(output, self.activate(base, self.act_modules[id(module)], slope))

    # -- functions
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _METADATA:
            return func(*args, **kwargs)
        leaves = None  # the operands, flattened once for every use below
        if self.meta:
            out = _shortcut(func, args, kwargs)
            if out is None:
                leaves = _leaves((args, kwargs))
                out = self.meta_calls(func, *_meta_operands(args, kwargs, func, leaves))
        else:
            out = func(*args, **kwargs)
        if self.depth > 0 or func in _VALUE_FREE:
            return out
        if func in _SHAPE_OF and args:
            leaves = _leaves((args[0],))
        elif leaves is None:
            leaves = _leaves((args, kwargs))
        if func in _MIXING:
            owners = self.param_owners(leaves)
            if owners:
                inputs = self.leaf_infos(leaves)
                produced = []
                for owner in owners:
                    layer = self.layers[owner]
                    self.consume(layer, inputs)
                    self.functional.setdefault(owner, []).append(
                        getattr(func, "__name__", str(func))
                    )
                    produced.append(self.produce(layer, inputs))
                self.put(out, _merge(produced))
                return out
        owners = self.weights_only_owners(leaves)
        if owners:
            for t in _leaves(out):
                if isinstance(t, torch.Tensor):
                    self.derived[id(t)] = (t, owners)
        inputs = self.leaf_infos(leaves, params=True)
        if self.attention(func, args, kwargs, inputs, out):
            return out
        if func in DROPOUT_FUNCTIONS and len(inputs) == 1:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            if isinstance(p, (int, float)) and 0 <= p < 1:
                self.put(out, replace(inputs[0], keep=inputs[0].keep * (1.0 - float(p))))
                return out
        act = ACTIVATION_FUNCTIONS.get(func)
        if act is not None:
            param = None
            if act == "leaky_relu":
                param = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
                param = param if isinstance(param, float) else None
            self.put(out, self.activate(_merge(inputs), act, param))
            return out
        if func in ADD_FUNCTIONS and len(inputs) == 2:
            a, b = inputs
            if self.is_embedding_sum(a, b):
                self.sums.append(a.embed | b.embed)
                self.put(out, _merge(inputs, a.embed | b.embed))
                return out
            feeds = {k: self.outputs[k] for k in (*a.pending, *b.pending) if k in self.outputs}
            self.adds.append((a, b, feeds))
        if func in MUL_FUNCTIONS and len(inputs) == 2:
            self.note_multiplier(*inputs)
        if func in _CONCAT and inputs and all(i.embed for i in inputs):
            self.put(out, _merge(inputs, frozenset().union(*(i.embed for i in inputs))))
            return out
        if inputs:
            self.put(out, _merge(inputs))
        return out

    def note_multiplier(self, a: _Info, b: _Info) -> None:
        """``layer(x) * s`` with ``s`` model state alone (a parameter or buffer, reshaped or not):
        record ``s`` on the layer as the multiplier of its output (a layer scale)."""
        for out, scale in ((a, b), (b, a)):
            if len(out.pending) != 1 or len(scale.embed) != 1 or not scale.streams:
                continue
            if not all(r.startswith(_STATE_ROOT) for r in scale.streams):
                continue
            (source,) = out.pending
            if self.outputs.get(source) is out:
                (self.layers[source].multiplier,) = scale.embed

    def attention(self, func, args: tuple, kwargs: dict, inputs: list[_Info], out: object) -> bool:
        """Follow constant factors and attention scores; ``True`` when ``out`` is handled.

        ``x * c`` and ``x / c`` with ``c`` a number (or a one-element tensor no stream reaches)
        multiply ``x``'s :attr:`_Info.scale`; ``q @ k^T`` of two layer outputs marks the result
        as scores of ``q``'s layer, whose factor later multiplications and divisions follow
        through masks added to them; a softmax of scores, or ``scaled_dot_product_attention``
        (its ``scale``, else ``1/sqrt(E)``), records ``(d_k, factor)`` on the query's layer.
        """
        if func in SCALE_FUNCTIONS and len(inputs) == 1:
            c = _constant(func, args, kwargs)
            if c is None:
                return False
            info = inputs[0]
            scores = info.scores and (*info.scores[:2], info.scores[2] * c)
            self.put(out, replace(info, scale=info.scale * c, scores=scores))
            return True
        if func in MATMUL_FUNCTIONS and len(inputs) == 2:
            q, k = inputs
            query = _single(q.pending)
            scores = None
            if query is not None and k.pending and isinstance(args[0], torch.Tensor):
                scores = (query, int(args[0].shape[-1]), q.scale * k.scale)
            self.put(out, replace(_merge(inputs), scores=scores))
            return True
        if func in SOFTMAX_FUNCTIONS and inputs and inputs[0].scores is not None:
            self.record(*inputs[0].scores)
        if func in ATTENTION_FUNCTIONS and len(inputs) >= 2:
            query = _single(inputs[0].pending)
            q = args[0] if args else kwargs.get("query")
            if query is not None and isinstance(q, torch.Tensor):
                d_k = int(q.shape[-1])
                scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
                c = d_k**-0.5 if scale is None else float(scale)
                self.record(query, d_k, c * inputs[0].scale * inputs[1].scale)
        return False

    def record(self, query: str, d_k: int, factor: float) -> None:
        layer = self.layers[query]
        if layer.attention is None:  # the first call's
            layer.attention = (d_k, factor)

    def is_embedding_sum(self, a: _Info, b: _Info) -> bool:
        """``a + b`` adds two independent streams, each a plain embedding-like source, one at
        least a lookup table or a parameter: tokens + positions, patches + position parameter."""
        if not (a.embed and b.embed) or a.streams.keys() & b.streams.keys():
            return False
        return any(n not in self.layers or self.layers[n].kind == "embedding"
                   for n in a.embed | b.embed)  # fmt: skip

    def param_owners(self, leaves: list) -> tuple[str, ...]:
        """The layers whose parameters (or tensors computed from their parameters alone) are
        among an op's operands ``leaves``, in order."""
        out: dict[str, None] = {}
        for t in leaves:
            if isinstance(t, nn.Parameter) and id(t) in self.owners:
                out[self.owners[id(t)]] = None
            derived = self.derived.get(id(t)) if isinstance(t, torch.Tensor) else None
            if derived is not None and derived[0] is t:
                out.update(dict.fromkeys(derived[1]))
        return tuple(out)

    def weights_only_owners(self, leaves: list) -> tuple[str, ...]:
        """:meth:`param_owners` when every floating operand is a layer's parameter or computed
        from them alone (``W.t()``, ``torch.cat([E.t(), W])``: MobileBERT's head matrix), so
        that the mixing op it later feeds counts as a use of those layers; else ``()``."""
        floats = [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]
        for t in floats:
            derived = self.derived.get(id(t))
            if id(t) not in self.owners and (derived is None or derived[0] is not t):
                return ()
        return self.param_owners(leaves)
