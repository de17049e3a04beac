"""The plan's types: :class:`PlanEntry` (one parameter's decision) and :class:`Plan` (all of them)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import optim
from ..connectivity import Fans
from ..errors import InitlabError
from ..graph import Graph
from ..materialize import MetaState
from ..schemes import SCHEMES
from .apply import _apply
from .drawing import draw

RESIDUAL_SCALED = "default x L^-1/2 (residual_scale)"
"""The ``source`` of a residual branch end whose gain :func:`plan` scaled by ``L^-1/2``."""
RESIDUAL_LAYER_SCALED = "default, plain gain: a layer scale <= L^-1/2 follows (residual_scale)"
"""The ``source`` of a residual branch end kept at its plain gain because a learned layer scale
of at most ``L^-1/2`` multiplies its output (see :func:`initlab.planning.policy._policy`)."""
RESIDUAL_ZEROED = "default: branch end at 0, no normalization (residual_scale)"
"""The ``source`` of a residual branch end :func:`plan` zeroed (a model without normalization)."""
RESIDUAL_INNER = "default x L^-1/(2m-2), no normalization (residual_scale)"
"""The ``source`` of a branch's inner weight layer scaled by Fixup's rule."""
NORMALIZED = "default x normalized_scale: only a norm reads its output (scale-free)"
"""The ``source`` of a weight layer whose output only a normalization reads
(:attr:`initlab.graph.Layer.normalized`), drawn at :data:`~initlab.planning.policy.NORMALIZED_GAIN`
of its gain."""
UNSCALED_QUERY = "default x 1/(factor sqrt(d_k)): attention scores without 1/sqrt(d_k)"
"""The ``source`` of a query projection whose scores the model does not scale by ``1/sqrt(d_k)``."""


_FOOTERS: tuple[tuple[str, Callable[[int, int], str]], ...] = (
    (RESIDUAL_SCALED, lambda n, L: f"{n} residual branch ends at gain x L^-1/2 = {L**-0.5:.4g} "
                                   "(residual_scale=False for the plain gain)"),
    (NORMALIZED, lambda n, L: f"{n} weight layer(s) that only a norm reads at gain x "
                              "normalized_scale (0.25 by default): the norm divides their scale "
                              "out, Adam's relative step grows (normalized_scale=1 for the plain "
                              "gain, e.g. for SGD at a large lr)"),
    (RESIDUAL_ZEROED, lambda n, L: f"no normalization: {n} residual branch ends at 0, the "
                                   "branches' other weight layers x L^-1/(2m-2), Fixup's rule "
                                   "(residual_scale=False for the plain gain); train the biases at "
                                   "lr/10 as Fixup does, plan.param_groups(lr): the branch ends' "
                                   "biases move as one"),
)  # fmt: skip
"""The plan's footer lines: for each decision source the plan holds, what it did and how to turn
it off (``n`` entries, ``L`` residual branches)."""


@dataclass(frozen=True)
class PlanEntry:
    """The decision for one parameter.

    Attributes:
        name: qualified parameter name (the first one, for tied parameters).
        shape: its shape.
        module: the owning module's qualified name; ``module_type`` its class name.
        role: the primary role; ``roles`` all of them.
        activation: the traced activation after the layer (``None``: linear).
        fan_in, fan_out, chunks: the fans used (``None`` when the scheme needs none).
        receptive_field: kernel taps per channel pair (1 for dense layers); with the fans it
            tells structured schemes how many groups a grouped convolution stacks.
        scheme: the scheme's registry name, ``"keep"``, or ``"custom"`` for a callable rule.
        kwargs: the scheme's options.
        gain: the gain the scheme uses.
        std: the std the scheme aims at (``None`` when not defined).
        source: what decided: ``"default"`` or the rule, e.g. ``"rule 'head'"``.
        tied: other names of the same tensor.
        note: anything worth telling (frozen, unreached, called twice...).
    """

    name: str
    shape: tuple[int, ...]
    module: str
    module_type: str
    role: str
    roles: tuple[str, ...]
    activation: str | None
    fan_in: int | None
    fan_out: int | None
    chunks: int
    scheme: str
    kwargs: Mapping[str, Any]
    gain: float
    std: float | None
    source: str = "default"
    tied: tuple[str, ...] = ()
    note: str = ""
    fn: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    receptive_field: int = 1

    @property
    def fans(self) -> Fans | None:
        """The fans as a :class:`~initlab.Fans`, when the entry has them."""
        if self.fan_in is None or self.fan_out is None:
            return None
        return Fans(self.fan_in, self.fan_out, self.receptive_field, self.chunks)

    def draw(self, tensor: torch.Tensor, seed: int) -> torch.Tensor:
        """Write this entry's values into ``tensor`` (see :func:`draw`)."""
        return draw(self, tensor, seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fn"}
        d["shape"], d["roles"], d["tied"] = list(self.shape), list(self.roles), list(self.tied)
        d["kwargs"] = {k: _jsonable(v) for k, v in self.kwargs.items()}
        return d


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


class Plan:
    """The per-parameter decisions for one model. Iterate it for :class:`PlanEntry` values."""

    def __init__(self, model: nn.Module, graph: Graph, entries: dict[str, PlanEntry], seed: int,
                 scheme: str, device: torch.device | None = None,
                 head_moment: float = 1.0) -> None:  # fmt: skip
        self.model = model
        self.graph = graph
        self.entries = entries
        self.seed = seed
        self.scheme = scheme
        self.device = device
        self.head_moment = head_moment
        """The second moment of the head's input that the default head gain assumes: the
        mean-field prediction in a plain chain where it exceeds 1 (see
        :func:`initlab.planning.policy._chain_moment`), else 1."""

    def __iter__(self) -> Iterator[PlanEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PlanEntry:
        if name not in self.entries:
            from ..errors import closest

            hint = closest(name, self.entries)
            raise KeyError(
                f"no parameter {name!r} in the plan" + (f"; did you mean {hint!r}?" if hint else "")
            )
        return self.entries[name]

    def replace(self, name: str, **changes: Any) -> Plan:
        """A new plan with one entry changed (``scheme``, ``gain``, ``kwargs``...); std recomputed."""
        entry = dataclasses.replace(self[name], **changes)
        if entry.scheme not in ("keep", "custom"):
            entry = dataclasses.replace(entry, std=_expected_std(entry))
        return Plan(self.model, self.graph, {**self.entries, name: entry}, self.seed, self.scheme,
                    self.device, self.head_moment)  # fmt: skip

    def param_groups(self, lr: float, *, weight_decay: float = 0.0,
                     scalar_lr_mult: float = 0.1) -> list[dict[str, Any]]:  # fmt: skip
        """The model's parameters in two optimizer groups: biases and scalars at
        ``lr * scalar_lr_mult`` (lr/10), the rest at ``lr``; see :func:`initlab.optim.param_groups`.

        Fixup's recipe, for the default's Fixup rule (a residual net without normalization): its
        branch ends start at zero, so their biases all get the stream's gradient and move as one.
        """
        return optim.param_groups(self.model, lr, weight_decay=weight_decay,
                                  scalar_lr_mult=scalar_lr_mult)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: seed, scheme, the graph's findings and every entry."""
        L, m = self.graph.residual_depth
        return {
            "seed": self.seed,
            "scheme": self.scheme,
            "model": type(self.model).__name__,
            "residual": {"branches": L, "layers_per_branch": m},
            "unreached": list(self.graph.unreached),
            "entries": [e.to_dict() for e in self],
        }

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def __str__(self) -> str:
        header = ("parameter", "shape", "module", "role", "act", "fan_in", "fan_out", "chunks",
                  "scheme", "gain", "std")  # fmt: skip
        rows = [header]
        for e in self:
            rows.append((
                e.name + (" (tied)" if e.tied else ""), "x".join(map(str, e.shape)) or "scalar",
                e.module_type, e.role, (e.activation or "-") if e.role != "bias" else "-",
                _fan_text(e.fan_in), _fan_text(e.fan_out), str(e.chunks),
                e.scheme + _kw_text(e.kwargs), f"{e.gain:.4g}" if _uses_gain(e) else "-",
                f"{e.std:.4g}" if e.std is not None else "-",
            ))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"  {e.name}: {e.note}" for e in self if e.note]
        L, m = self.graph.residual_depth
        foot = [f"seed {self.seed}; {len(self)} parameters; residual branches L={L}, m={m}"]
        counts = Counter(e.source for e in self)
        foot += [say(counts[source], L) for source, say in _FOOTERS if counts[source]]
        return "\n".join(lines + foot + (["notes:", *notes] if notes else []))

    __repr__ = __str__

    def apply(self, *, transactional: bool = True, meta_state: MetaState | None = None) -> Plan:
        """Draw every parameter in place (materializing meta tensors); transactional.

        Everything that can fail runs before a weight changes, so on any error the model is as
        it was, without a copy of its weights: the extra memory is a scratch copy of each
        parameter whose draw runs more than an elementwise fill (a rule callable, orthogonal,
        identity...), none for elementwise schemes. ``transactional=False`` skips those copies
        and draws such parameters in place (an error may then leave them half-written).

        On a meta-device model, buffers and the parameters the plan keeps get the values the
        model built on ``device`` would have (:mod:`initlab.materialize`: the model's own init
        code, torch's resets, or ``meta_state``, a state dict or ``fn(name, meta_tensor)``);
        what has no source is named in an error raised before anything is allocated.
        DTensor parameters (FSDP2) draw only their local shard.
        """
        _apply(self, transactional, meta_state)
        return self


def _fan_text(fan: int | None) -> str:
    return "-" if fan is None else str(fan)


def _uses_gain(e: PlanEntry) -> bool:
    return e.scheme == "custom" or (e.scheme in SCHEMES and SCHEMES[e.scheme].uses_gain)


def _kw_text(kwargs: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k != "gain"}
    if not shown:
        return ""
    return (
        "("
        + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
        )
        + ")"
    )


def _expected_std(e: PlanEntry) -> float | None:
    return _scheme_std(e.scheme, e.kwargs, e.shape, e.fans, e.gain)


def _scheme_std(name: str, kwargs: Mapping[str, Any], shape: tuple[int, ...], fans: Fans | None,
                gain: float) -> float | None:  # fmt: skip
    """The std scheme ``name`` aims at with these options, shape, fans and gain (``None``: none
    defined, or ``keep``/``custom``)."""
    if name in ("keep", "custom"):
        return None
    scheme = SCHEMES[name]
    kw = {k: v for k, v in kwargs.items() if k != "gain"}
    try:
        return scheme.expected_std(shape, fans, gain, **kw)
    except (InitlabError, TypeError):
        return None
