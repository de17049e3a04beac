"""The traced structure: :class:`Layer`, :class:`Branch`, :class:`Graph`, and :func:`is_norm`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

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
    own = [p for p in module._parameters.values() if p is not None]
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
        multiplier: the model state that multiplies its output elementwise right after it
            (``gamma * layer(x)``: a layer scale), when there is one: a qualified parameter or
            buffer name, or the name of the layer that owns it.
        input_keep: the product of ``1 - p`` over the dropouts on this layer's input since the
            last layer before it (first call): in train mode its input's second moment is
            ``1 / input_keep`` times the eval-mode one (the trace runs in eval mode).
        input_scale: a constant the forward multiplies this layer's input by, after the last
            layer or norm before it (T5 scales the decoder's output by ``d_model**-0.5`` before
            its tied head); 1 when none, ``nan`` when a factor of unknown value (first call).
        attention: ``(d_k, factor)`` when this layer's output is the query of attention scores
            (``q @ k^T`` then softmax, or ``scaled_dot_product_attention``): ``d_k`` the
            contracted width and ``factor`` every constant the scores were multiplied by
            (``1/sqrt(d_k)`` in most models; 1 in T5, which folds it into the query's init).
        normalized: every call's output went straight into a normalization layer (BatchNorm,
            LayerNorm, GroupNorm, RMSNorm; no activation, sum or other reader in between, view
            and permute aside) and nothing else read it: the forward pass does not depend on
            this layer's weight scale, which sets only the relative size of each optimizer step.
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
    input_scale: float = 1.0
    input_keep: float = 1.0
    attention: tuple[int, float] | None = None
    consumed: bool = False  # some weight layer read its output
    normalized: bool = False
    multiplier: str | None = None
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
    note: str | None = None  # how the pass ran, when it was not on meta as planned
    longest_path: int = 0
    """Weight layers on the longest path from an input to the output (a layer called twice on
    it counts twice). Equal to the number of weight layers in a chain; smaller where layers run
    side by side (SqueezeNet's Fire modules, Inception's branches, concatenated)."""
    _owners: dict[str, Layer] | None = field(default=None, init=False, repr=False, compare=False)

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
        return self.owners().get(param_name)

    def owners(self) -> dict[str, Layer]:
        """Every qualified parameter name a layer owns -> that layer (the innermost one).

        Built once per graph from the layers' own parameter names, so a lookup is one dict read
        instead of a scan over the layers (planning a 160-parameter ResNet-50 scanned ~17 k
        layers). The innermost layer wins: layers are visited longest name first (stable, so
        among names of equal length the first traced layer wins), as a scan in that order
        would find them. Names, not tensors, are indexed, so the index stays valid when a meta
        parameter is swapped for its allocated value.
        """
        if self._owners is None:
            index: dict[str, Layer] = {}
            for layer in sorted(self.layers.values(), key=lambda la: -len(la.name)):
                prefix = f"{layer.name}." if layer.name else ""
                for local in layer.params:
                    index.setdefault(prefix + local, layer)
            self._owners = index
        return self._owners

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
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)
