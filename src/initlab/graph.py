"""The model's structure, learned from one traced forward pass.

:func:`trace` runs the model once on an example under a :class:`~torch.overrides.TorchFunctionMode`
and forward hooks, and follows every tensor from the input to the output. It records:

* the **layers**: modules that own parameters directly and have no parametrized children
  (``Linear``, ``Conv*``, norms, ``Embedding``...; ``MultiheadAttention`` and recurrent modules
  count as one layer), in the order they first run, with how often each ran;
* the **activation** that follows each layer before the next weight layer, whether a module
  (``nn.Tanh``) or a function (``torch.tanh``, ``F.relu``, ``x.relu()``...). Norm layers are
  transparent: in ``conv -> BatchNorm -> ReLU`` the conv is followed by ReLU;
* **roles**: ``head`` (reaches the output through no other weight layer), ``embedding``, ``norm``,
  and ``residual_out`` (the last layer of a branch whose output is added to a skip path);
* **residual branches**: every ``x + f(x)`` on one stream: the operands of ``a + b`` fork from a
  common tensor, one side holds a weight layer after the fork, and that side's last weight layers
  are all on it (the sum is the branch's output). The longer side is the branch, with its layers
  and its number of weight layers ``m``. Not branches: masks and biases added to attention scores
  (integer and boolean tensors carry no signal, nor do ``x.new_zeros(...)`` and ``zeros_like``),
  sums of independent streams (two inputs, tokens + positions), recurrences inside one layer
  (a selective scan's ``y + D x``, where the convolution before the fork still feeds ``y``).
  A cross-attention branch counts on the stream it is added to; parallel branches summed
  before the skip (``x + attn(x) + mlp(x)``) are one branch each;
* **embedding sums**: embedding-like sources whose outputs are added as independent streams
  (token + position + segment tables, a patch convolution + a position parameter), see
  :attr:`Graph.embedding_sums`;
* functional uses of parameters (``F.linear(h, self.wte.weight)`` for a tied head,
  ``x @ self.W``), parameters shared by several modules, and layers the example never reached.

Tracing observes; it does not change the model: the pass runs in eval mode (no dropout, no
BatchNorm statistic updates), without touching the global RNG, and every hook comes off.
Data-dependent Python control flow is fine: only the path the example takes is recorded.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .errors import InitlabError

__all__ = ["ACTIVATION_FUNCTIONS", "ADD_FUNCTIONS", "Branch", "Graph", "Layer", "is_norm", "trace"]

_NORMS = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
)  # fmt: skip
_LEAF_TYPES = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (torch's, ``RMSNorm``, or a class named ``*Norm``).

    >>> is_norm(nn.BatchNorm2d(3)), is_norm(nn.LayerNorm(4)), is_norm(nn.Linear(2, 2))
    (True, True, False)
    """
    if isinstance(module, _NORMS):
        return True
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None and isinstance(module, rms):
        return True
    name = type(module).__name__
    own = list(module.parameters(recurse=False))
    return name.lower().endswith("norm") and bool(own) and all(p.dim() <= 1 for p in own)


# ---------------------------------------------------------------------------------------------
# what we record


@dataclass
class Layer:
    """A parametrized layer as the trace saw it.

    Attributes:
        name: qualified module name (``""`` for the root).
        module: the module.
        kind: ``"weight"`` (a layer that mixes units), ``"norm"``, ``"embedding"``,
            ``"activation"`` (a parametrized activation such as ``nn.PReLU``), or ``"scalar"``
            (only one-number parameters: Fixup's biases and multipliers, SkipInit's alpha),
            which the trace treats as transparent.
        calls: how many times it ran in the traced pass (0: never reached).
        activation: the activation applied to its output before the next weight layer
            (``None``: linear). When calls disagree, the first is kept and ``conflicts`` lists all.
        roles: ``head``, ``residual_out``, ``embedding``, ``norm`` as found.
        order: position of its first call (``-1`` when never reached).
        activation_param: the activation's parameter when it has one (LeakyReLU's slope).
    """

    name: str
    module: nn.Module
    kind: str
    calls: int = 0
    activation: str | None = None
    roles: set[str] = field(default_factory=set)
    order: int = -1
    activation_param: float | None = None
    conflicts: list[str | None] = field(default_factory=list)
    consumed: bool = False  # some weight layer read its output
    _seen_activation: bool = False

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """Parameters of this layer by local name (MHA's ``out_proj.weight`` included)."""
        return dict(self.module.named_parameters())

    @property
    def weight_depth(self) -> int:
        """Weight layers this layer counts as on a path: MHA is two (in and out projections)."""
        if self.kind != "weight":
            return 0
        return 2 if isinstance(self.module, nn.MultiheadAttention) else 1


@dataclass(frozen=True)
class Branch:
    """A residual branch: ``out = skip + branch``.

    Attributes:
        layers: names of the layers on the branch, in order (norms included).
        weight_layers: names of its weight layers (what Fixup's ``m`` counts; MHA counts twice).
        last: the branch's last layer (the ``residual_out``), norms included.
        last_weight: its last weight layer (what Fixup and zero_module zero).
        skip_layers: layers on the skip path since the fork (a projection shortcut), if any.
    """

    layers: tuple[str, ...]
    weight_layers: tuple[str, ...]
    last: str
    last_weight: str | None
    skip_layers: tuple[str, ...] = ()

    @property
    def m(self) -> int:
        """Number of weight layers on the branch (MHA counts as two)."""
        return len(self.weight_layers)


@dataclass
class Graph:
    """The traced structure of a model. See :func:`trace`."""

    model: nn.Module
    layers: dict[str, Layer]
    branches: list[Branch]
    shared: dict[str, list[str]]
    functional_uses: dict[str, list[str]]
    unreached: list[str]
    loose: list[str]
    embedding_sums: tuple[tuple[str, ...], ...] = ()
    """Groups of embedding-like sources whose outputs the forward adds together (tokens +
    positions + segments; a patch-embedding conv + a position table), found from the traced
    additions of independent streams, not from names. A member is a layer's qualified module
    name (a key of :attr:`layers`: ``"transformer.wte"``, or a weight layer such as a patch
    convolution), or, for a parameter the model adds directly and no layer owns (a ViT's
    ``pos_embed``), its qualified parameter name (``"vit.embeddings.position_embeddings"``), or
    for a floating buffer added the same way (a fixed sinusoidal table, which initlab does not
    draw) its qualified buffer name. Tokens concatenated into the sum (a class token) are
    members too. A group holds at least one lookup table, parameter or buffer: two linear layers
    on two inputs added together are no embedding sum."""

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.order())

    def order(self) -> list[Layer]:
        """Reached layers in execution order, then the unreached ones."""
        reached = sorted(
            (la for la in self.layers.values() if la.order >= 0), key=lambda la: la.order
        )
        return reached + [la for la in self.layers.values() if la.order < 0]

    def layer_of(self, param_name: str) -> Layer | None:
        """The layer that owns a qualified parameter name."""
        for layer in sorted(self.layers.values(), key=lambda la: -len(la.name)):
            prefix = f"{layer.name}." if layer.name else ""
            if param_name.startswith(prefix) and param_name[len(prefix) :] in layer.params:
                return layer
        return None

    @property
    def heads(self) -> list[Layer]:
        """Layers with the ``head`` role."""
        return [la for la in self.order() if "head" in la.roles]

    @property
    def residual_depth(self) -> tuple[int, int]:
        """``(L, m)``: the number of residual branches and their (most common) weight-layer count."""
        if not self.branches:
            return 0, 0
        ms = [b.m for b in self.branches]
        return len(self.branches), max(set(ms), key=ms.count)

    def summary(self) -> str:
        """A few lines saying what the trace found and what it could not see."""
        lines = [f"{len([la for la in self.layers.values() if la.calls])} layers reached, "
                 f"{len(self.branches)} residual branches"]  # fmt: skip
        heads = ", ".join(la.name or "<root>" for la in self.heads) or "none found"
        lines.append(f"head: {heads}")
        if self.unreached:
            lines.append(f"never reached by the example: {', '.join(self.unreached)}")
        if self.shared:
            lines.extend(
                f"shared parameter {k} also at {', '.join(v)}" for k, v in self.shared.items()
            )
        many = [la.name for la in self.layers.values() if la.calls > 1]
        if many:
            lines.append(f"called several times: {', '.join(many)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the tracer

ACTIVATION_FUNCTIONS: dict[Any, str] = {}
for _fn, _name in [
    (F.relu, "relu"), (torch.relu, "relu"), (torch.relu_, "relu"), (torch.Tensor.relu, "relu"),
    (torch.Tensor.relu_, "relu"), (F.relu_, "relu"), (F.relu6, "relu6"), (F.leaky_relu, "leaky_relu"),
    (F.leaky_relu_, "leaky_relu"), (F.gelu, "gelu"), (F.silu, "silu"), (F.mish, "mish"),
    (F.elu, "elu"), (F.elu_, "elu"), (F.selu, "selu"), (torch.selu, "selu"), (F.celu, "celu"),
    (F.softplus, "softplus"), (F.hardswish, "hardswish"), (F.hardsigmoid, "hardsigmoid"),
    (F.hardtanh, "hardtanh"), (F.hardtanh_, "hardtanh"), (torch.tanh, "tanh"),
    (torch.Tensor.tanh, "tanh"), (torch.Tensor.tanh_, "tanh"), (F.tanh, "tanh"),
    (torch.sigmoid, "sigmoid"), (torch.Tensor.sigmoid, "sigmoid"), (torch.Tensor.sigmoid_, "sigmoid"),
    (F.sigmoid, "sigmoid"), (F.softsign, "softsign"), (F.logsigmoid, "logsigmoid"),
    (torch.sin, "sin"), (torch.Tensor.sin, "sin"), (F.tanhshrink, "tanhshrink"),
    (F.prelu, "leaky_relu"), (F.rrelu, "leaky_relu"),
]:  # fmt: skip
    ACTIVATION_FUNCTIONS[_fn] = _name
_CONCAT = {torch.cat, torch.concat, torch.concatenate, torch.stack}
# functions whose result does not depend on their input's values (shape-only creation): a mask
# built with ``x.new_zeros(...)`` or ``torch.zeros_like(x)`` carries none of ``x``'s signal
_VALUE_FREE = {torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full,
               torch.Tensor.new_empty, torch.Tensor.new_tensor, torch.zeros_like, torch.ones_like,
               torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
               torch.randint_like}  # fmt: skip
ADD_FUNCTIONS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
         torch.Tensor.__radd__, torch.Tensor.__iadd__}  # fmt: skip
_MIXING = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
           torch.Tensor.__rmatmul__, torch.mm, torch.bmm, torch.einsum, F.conv1d, F.conv2d,
           F.conv3d, F.embedding, F.bilinear, torch.addmm}  # fmt: skip


@dataclass(frozen=True)
class _Path:
    """A persistent linked list of layer calls on a tensor's longest path from the input."""

    layer: str
    weight: int  # weight layers on the path up to here
    prev: _Path | None

    def names(self) -> list[str]:
        out, node = [], self
        while node is not None:
            out.append(node.layer)
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
    them after an embedding sum; empty once two streams are mixed any other way.
    """

    pending: Mapping[str, tuple[str | None, float | None]]  # layer -> (activation, its param)
    streams: Streams
    embed: frozenset[str] = frozenset()

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
    return _Info({}, {path.layer: path}, embed)


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
    return _Info(pending, _merge_streams(infos), embed if embed is not None else frozenset())


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module, layers: dict[str, Layer], owners: dict[int, str]) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.by_module = {id(la.module): la for la in layers.values()}
        self.owners = owners  # id(param) -> layer name
        self.info: dict[int, tuple[torch.Tensor, _Info]] = {}
        self.depth = 0  # > 0 while inside a leaf layer's forward
        self.counter = 0
        self.adds: list[tuple[_Info, _Info, dict[str, _Info]]] = []  # with each source's output
        self.outputs: dict[str, _Info] = {}  # each weight layer's latest output
        self.functional: dict[str, list[str]] = {}
        self.stash: dict[int, list[_Info]] = {}
        self.act_modules: dict[int, str] = {}
        # id(parameter or buffer) -> qualified name: such a tensor used as a plain operand roots
        # a stream. Read at the first operation, so that a pass on copies of the state
        # (torch.func.functional_call) names the copies it runs on
        self.tensor_names: dict[int, str] | None = None
        self.sums: list[frozenset[str]] = []  # embedding sums, as they were added up
        self.roots = 0  # example tensors rooted so far

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
        for t in tree_flatten(outputs)[0]:
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                if info is _EMPTY:
                    self.info[id(t)] = (t, _rooted(f"input {self.roots}"))
                    self.roots += 1
                else:
                    self.info[id(t)] = (t, info)

    def infos(self, args: object, params: bool = False) -> list[_Info]:
        """The infos of the tensors in ``args``; with ``params``, parameters and buffers too.

        A parameter or floating buffer used as a plain tensor (``x + self.pos_embed``, a fixed
        sinusoidal table) roots a stream of its own; its embedding source is the layer that owns
        it, or its qualified name when no layer does.
        """
        out = []
        for t in tree_flatten(args)[0]:
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
        first = next(self.model.parameters(), None)
        if self.tensor_names is None or (first is not None and id(first) not in self.tensor_names):
            named = [*self.model.named_buffers(), *self.model.named_parameters()]
            self.tensor_names = {id(x): n for n, x in named}
        return self.tensor_names.get(id(t))

    # -- layer calls
    def consume(self, layer: Layer, inputs: list[_Info]) -> None:
        """``layer`` reads tensors: settle the activation of every weight layer feeding it."""
        if layer.order < 0:
            layer.order = self.counter
            self.counter += 1
        layer.calls += 1
        if layer.kind in ("norm", "activation", "scalar"):
            return
        for info in inputs:
            for source, (act, param) in info.pending.items():
                self.layers[source].consumed = True
                self.settle(self.layers[source], act, param)

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
            return _Info(base.pending, streams, base.embed)
        if layer.kind == "activation":
            act = "leaky_relu"
            slope = (
                float(layer.module.weight.detach().float().mean())
                if isinstance(layer.module, nn.PReLU) and layer.module.weight.device.type != "meta"
                else 0.25
            )
            return _Info(self.activate(base, act, slope).pending, base.streams, base.embed)
        out = _Info({layer.name: (None, None)}, streams, frozenset({layer.name}))
        self.outputs[layer.name] = out
        return out

    @staticmethod
    def activate(info: _Info, act: str, param: float | None) -> _Info:
        if act == "linear":  # nn.Identity (e.g. a removed norm): no activation, nothing settles
            return info
        pending = {k: (v if v[0] is not None else (act, param)) for k, v in info.pending.items()}
        return _Info(pending, info.streams, info.embed)

    # -- module hooks
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        layer = self.by_module.get(id(module))
        if layer is None:
            return
        if self.depth == 0:
            inputs = self.infos((args, kwargs))
            self.consume(layer, inputs)
            self.stash.setdefault(id(module), []).append(_merge(inputs))
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
        out = func(*args, **kwargs)
        if self.depth > 0 or func in _VALUE_FREE:
            return out
        if func in _MIXING:
            owner = self.param_owner((args, kwargs))
            if owner is not None:
                inputs = self.infos((args, kwargs))
                layer = self.layers[owner]
                self.consume(layer, inputs)
                self.functional.setdefault(owner, []).append(getattr(func, "__name__", str(func)))
                self.put(out, self.produce(layer, inputs))
                return out
        inputs = self.infos((args, kwargs), params=True)
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
        if func in _CONCAT and inputs and all(i.embed for i in inputs):
            self.put(out, _merge(inputs, frozenset().union(*(i.embed for i in inputs))))
            return out
        if inputs:
            self.put(out, _merge(inputs))
        return out

    def is_embedding_sum(self, a: _Info, b: _Info) -> bool:
        """``a + b`` adds two independent streams, each a plain embedding-like source, one at
        least a lookup table or a parameter: tokens + positions, patches + position parameter."""
        if not (a.embed and b.embed) or a.streams.keys() & b.streams.keys():
            return False
        return any(n not in self.layers or self.layers[n].kind == "embedding"
                   for n in a.embed | b.embed)  # fmt: skip

    def param_owner(self, args: object) -> str | None:
        for t in tree_flatten(args)[0]:
            if isinstance(t, nn.Parameter) and id(t) in self.owners:
                return self.owners[id(t)]
        return None


_ACT_WORDS = {"gelu": "gelu", "newgelu": "gelu_tanh", "fastgelu": "gelu_tanh",
              "gelutanh": "gelu_tanh", "pytorchgelutanh": "gelu_tanh", "quickgelu": "quick_gelu",
              "silu": "silu", "swish": "silu", "relu": "relu", "tanh": "tanh",
              "sigmoid": "sigmoid", "mish": "mish", "relusquared": "relu"}  # fmt: skip


def activation_module_name(module: nn.Module) -> str | None:
    """The activation a parameterless module computes, from its class (``NewGELUActivation``)."""
    if any(True for _ in module.parameters()) or any(True for _ in module.children()):
        return None
    from .gains import _MODULE_NAMES

    for klass, name in _MODULE_NAMES.items():
        if isinstance(module, klass):
            return name
    key = type(module).__name__.lower().replace("_", "").removesuffix("activation")
    return _ACT_WORDS.get(key)


def _kind(module: nn.Module) -> str:
    own = list(module.parameters(recurse=False))
    if own and all(p.numel() == 1 for p in own) and not isinstance(module, _LEAF_TYPES):
        return "scalar"  # a learnable scalar multiplier or bias (Fixup, SkipInit): transparent
    if is_norm(module):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.PReLU,)):
        return "activation"
    return "weight"


def _find_layers(model: nn.Module) -> tuple[dict[str, Layer], list[str]]:
    """Leaf parametrized modules, and the 'loose' parameters of containers that also own some."""
    layers: dict[str, Layer] = {}
    loose: list[str] = []
    inside_leaf: set[str] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if any(name.startswith(p + ".") for p in inside_leaf):
            continue
        own = list(module.named_parameters(recurse=False))
        has_param_children = any(True for c in module.children() for _ in c.parameters())
        if isinstance(module, _LEAF_TYPES) or (own and not has_param_children):
            if id(module) not in {id(la.module) for la in layers.values()}:
                layers[name] = Layer(name, module, _kind(module))
            inside_leaf.add(name)
        elif own:
            prefix = f"{name}." if name else ""
            loose.extend(prefix + n for n, _ in own)
    return layers, loose


def _example_args(example: object) -> tuple[tuple, dict]:
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, tuple):
        return example, {}
    if isinstance(example, list) and example and all(isinstance(e, torch.Tensor) for e in example):
        return tuple(example), {}
    return (example,), {}


def _to_device(example: object, device: torch.device) -> object:
    def move(t: object) -> object:
        return t.to(device) if isinstance(t, torch.Tensor) else t

    if isinstance(example, Mapping):
        return {k: move(v) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(move(v) for v in example)
    return move(example)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def run_forward(model: nn.Module, example: object) -> object:
    """Call ``model`` on ``example`` (a tensor, a tuple of args, or a dict of kwargs).

    A failure of the kinds a wrong example causes (``TypeError``, ``RuntimeError``, ``ValueError``,
    ``IndexError``) is re-raised as :class:`InitlabError` that says what initlab passed; anything
    else (a data loader's own exception, ``KeyboardInterrupt``) propagates unchanged.
    """
    args, kwargs = _example_args(example)
    try:
        return model(*args, **kwargs)
    except (TypeError, RuntimeError, ValueError, IndexError) as exc:  # what a misfit raises
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
        raise InitlabError(
            f"the example did not fit {type(model).__name__}.forward: {type(exc).__name__}: {exc}. "
            f"initlab called model(*args, **kwargs) with args {shapes} and kwargs {sorted(kwargs)}; "
            "pass example= as the exact input of one forward call (a tensor, a tuple of "
            "positional args, or a dict of keyword args)"
        ) from exc


def trace(model: nn.Module, example: object) -> Graph:
    """Trace one forward pass of ``model`` on ``example`` and return its :class:`Graph`.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> g = trace(net, torch.randn(2, 4))
    >>> [(la.name, la.activation, sorted(la.roles)) for la in g]
    [('0', 'tanh', []), ('2', None, ['head'])]
    """
    if not isinstance(model, nn.Module):
        raise InitlabError(f"expected an nn.Module, got {type(model).__name__}")
    layers, loose = _find_layers(model)
    owners: dict[int, str] = {}
    shared: dict[str, list[str]] = {}
    first_name: dict[int, str] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first_name and first_name[id(p)] != pname:
            shared.setdefault(first_name[id(p)], []).append(pname)
        first_name.setdefault(id(p), pname)
    for name, layer in layers.items():
        for p in layer.module.parameters():
            owners.setdefault(id(p), name)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "meta":
        example = _to_device(example, device)
    tracer = _Tracer(model, layers, owners)
    handles = []
    try:
        for module in model.modules():
            act = activation_module_name(module)
            if act is not None and id(module) not in tracer.by_module:
                tracer.act_modules[id(module)] = act
                handles.append(
                    module.register_forward_pre_hook(tracer.act_pre_hook, with_kwargs=True)
                )
                handles.append(module.register_forward_hook(tracer.act_post_hook, with_kwargs=True))
        for layer in layers.values():
            handles.append(
                layer.module.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True)
            )
            handles.append(layer.module.register_forward_hook(tracer.post_hook, with_kwargs=True))
        args, kwargs = _example_args(example)
        with _eval_mode(model), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. the transformer fast-path notice
            tracer.put((args, kwargs), _EMPTY)
            with tracer:
                output = run_forward(model, example)
    finally:
        for h in handles:
            h.remove()
    # roles
    for layer in layers.values():
        if layer.kind in ("norm", "embedding"):
            layer.roles.add(layer.kind)
    branches = _branches(tracer.adds, layers)
    for b in branches:
        layers[b.last].roles.add("residual_out")
    # the head: feeds the output through no other weight layer, and not merely along skip paths
    for info in tracer.infos(output):
        for source in info.pending:
            layer = layers[source]
            tied_head = layer.kind == "embedding" and any(
                f != "embedding" for f in tracer.functional.get(source, [])
            )
            direct = layer.kind == "weight" and not layer.consumed
            if (direct or tied_head) and "residual_out" not in layer.roles:
                layer.roles.add("head")
    unreached = [la.name for la in layers.values() if la.calls == 0]
    sums = _embedding_groups(tracer.sums, layers, [n for n, _ in model.named_parameters()])
    return Graph(model, layers, branches, shared, tracer.functional, unreached, loose, sums)


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
    come from. Parallel branches summed before the skip (``x + attn(x) + mlp(x)``) are one
    branch each.
    """
    found: dict[tuple[str, ...], Branch] = {}
    for a, b, feeds in adds:
        shared = a.streams.keys() & b.streams.keys()
        if not shared:
            continue  # independent streams: no fork, no skip connection
        root = max(shared, key=lambda r: a.streams[r].weight + b.streams[r].weight)
        pa, pb = a.streams[root].names(), b.streams[root].names()
        common = _common(pa, pb)
        sa, sb = pa[common:], pb[common:]
        wa = [n for n in sa if layers[n].kind == "weight"]
        wb = [n for n in sb if layers[n].kind == "weight"]
        if not wa and not wb:
            continue
        a_is_branch = (len(wa), len(sa)) > (len(wb), len(sb))
        branch, skip, skip_path = (sa, sb, pb) if a_is_branch else (sb, sa, pa)
        feeding = set((a if a_is_branch else b).pending)
        if feeding & set(pa[:common]):
            continue  # the sum is not the branch's output: the fork's own layers still feed it
        if len(feeding) > 1 and not (wb if a_is_branch else wa):
            for key in [k for k, br in found.items() if _joins(br, feeding, layers)]:
                del found[key]  # the join of parallel branches, first taken for a shortcut
            ends = [feeds[n].streams.get(root) for n in sorted(feeding) if n in feeds]
            for path in [p for p in ends if p is not None]:
                names = path.names()
                _record(found, names[_common(names, skip_path) :], (), layers)
        elif feeding <= set(branch):
            _record(found, branch, skip, layers)
    return list(found.values())


def _common(pa: list[str], pb: list[str]) -> int:
    n = 0
    while n < min(len(pa), len(pb)) and pa[n] == pb[n]:
        n += 1
    return n


def _record(found: dict[tuple[str, ...], Branch], branch: list[str], skip: list[str],
            layers: dict[str, Layer]) -> None:  # fmt: skip
    weights = [n for n in branch if layers[n].kind == "weight"]
    if not weights or tuple(branch) in found:
        return
    units = [n for n in weights for _ in range(layers[n].weight_depth)]
    found[tuple(branch)] = Branch(tuple(branch), tuple(units), branch[-1], weights[-1], tuple(skip))


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
