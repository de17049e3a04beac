r"""Scalar modules for residual networks: Fixup's biases and multiplier, SkipInit/ReZero's gate.

For people who build the model themselves, and the wrappers that the residual methods
(:func:`initlab.skipinit`, :func:`initlab.fixup`, :func:`initlab.tfixup`) put in place of existing
layers (a documented transformation; see each class):

=================  ===================================  ==========================================
module              forward                              used by
=================  ===================================  ==========================================
:class:`Bias`       ``x + b`` (``b`` one scalar, 0)      Fixup rule 3 (Zhang et al. 2019)
:class:`Scale`      ``x * s`` (``s`` one scalar, 1)      Fixup rule 3; ReZero (``s = 0``)
:class:`ScalarGate` ``alpha * module(x)`` (alpha 0)      SkipInit (De & Smith 2020), ReZero
:class:`ScalarAffine` ``module(x + b_in) * s + b_out``   Fixup (the official block's scalars)
:class:`NoNorm`     ``x`` (a removed normalization)      Fixup / T-Fixup without normalization
=================  ===================================  ==========================================

Why a zero branch is not a symmetry problem: a residual block computes ``x + F(x)``. Zeroing the
last layer of ``F`` (or its gate ``alpha``) makes the *block* the identity at init, but the skip
path still carries ``x``, which differs between units and between examples, so the gradients of
the zeroed layer, ``dL/dW = (dL/dy) h^T`` with ``h`` the branch's (random, non-zero) hidden
activations, differ per unit; only the *last* layer of each branch is zero, never a whole stack.

The wrappers keep the wrapped module as the child ``module``, so state_dict keys change
predictably: ``"blocks.0.fc2.weight"`` becomes ``"blocks.0.fc2.module.weight"`` and the new
scalars appear as ``"blocks.0.fc2.alpha"`` (gate) or ``"...bias_in"``, ``"...scale"``,
``"...bias_out"`` (affine). Attribute reads the wrapper does not answer (``.weight``,
``.batch_first``...) are forwarded to the wrapped module, so architecture code that inspects its
layers keeps working. Each wrapper carries a no-op forward pre-hook so that PyTorch's fused
inference fast paths (``nn.TransformerEncoderLayer`` in eval mode), which read the wrapped weights
directly and would skip the scalar, are not taken. :func:`unwrap` undoes the transformation,
folding the scalars into the weights where that is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import InitlabError

__all__ = ["Bias", "NoNorm", "ScalarAffine", "ScalarGate", "Scale", "is_wrapper", "unwrap"]


def _scalar(value: float | nn.Parameter, like: nn.Module | None = None) -> nn.Parameter:
    """A one-element parameter, on the device (and floating dtype) of ``like``'s parameters."""
    if isinstance(value, nn.Parameter):
        if value.numel() != 1:
            raise InitlabError(
                f"a shared scalar must have one element, got shape {tuple(value.shape)}"
            )
        return value
    ref = next((p for p in like.parameters() if p.is_floating_point()), None) if like else None
    if ref is None or ref.device.type == "meta":
        return nn.Parameter(torch.full((1,), float(value)))
    return nn.Parameter(torch.full((1,), float(value), device=ref.device, dtype=ref.dtype))


def _no_fast_path(module: nn.Module, args: tuple) -> None:
    """A forward pre-hook that does nothing: its presence turns off PyTorch's fused fast paths."""
    return None


def _map_first(output: Any, fn: Any) -> Any:
    """Apply ``fn`` to a tensor output, or to the first element of a tuple (``nn.MultiheadAttention``)."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (fn(output[0]), *output[1:])
    raise InitlabError(
        f"cannot scale an output of type {type(output).__name__}: expected a tensor or a tuple "
        "whose first element is a tensor"
    )


class Bias(nn.Module):
    """A learnable scalar bias: ``x + bias`` (Fixup's rule 3; ``bias`` starts at ``init``).

    >>> b = Bias()
    >>> b(torch.ones(2)).tolist(), [k for k in b.state_dict()]
    ([1.0, 1.0], ['bias'])
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.bias = _scalar(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.reshape(())  # 0-dim: broadcasts over nested tensors too


class Scale(nn.Module):
    """A learnable scalar multiplier: ``x * scale`` (Fixup's rule 3 at 1; ReZero's alpha at 0).

    Pass an ``nn.Parameter`` to share one scalar between several places (ReZero shares one per
    layer between its attention and feed-forward sub-layers).

    >>> Scale(0.5)(torch.ones(2)).tolist()
    [0.5, 0.5]
    """

    def __init__(self, init: float | nn.Parameter = 1.0) -> None:
        super().__init__()
        self.scale = _scalar(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.reshape(())


class _Wrapper(nn.Module):
    """Holds ``module`` and forwards attribute reads it does not answer to it."""

    module: nn.Module

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if isinstance(module, _Wrapper):
            raise InitlabError(
                f"{type(module.module).__name__} is already wrapped by {type(module).__name__}; "
                "call initlab.nn.unwrap(model) first"
            )
        self.module = module
        self.register_forward_pre_hook(_no_fast_path)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module" or name.startswith("__"):
                raise
            return getattr(super().__getattr__("module"), name)


class ScalarGate(_Wrapper):
    r"""``alpha * module(*args)``: SkipInit's (De & Smith 2020) and ReZero's gate on a branch end.

    .. math:: y = x + \alpha F(x), \qquad \alpha = 0 \text{ at init}

    For a module that returns a tuple (``nn.MultiheadAttention``) only the first element is
    scaled. Pass the same ``nn.Parameter`` as ``alpha`` to several gates to share it (ReZero).

    Args:
        module: the branch's last layer.
        alpha: initial value (0 in both papers; SkipInit allows up to ``1/sqrt(blocks)``) or a
            shared parameter.

    >>> gate = ScalarGate(nn.Linear(3, 3))
    >>> sorted(gate.state_dict()), gate.in_features
    (['alpha', 'module.bias', 'module.weight'], 3)
    >>> float(gate(torch.randn(2, 3)).detach().abs().sum())
    0.0
    """

    def __init__(self, module: nn.Module, alpha: float | nn.Parameter = 0.0) -> None:
        super().__init__(module)
        self.alpha = _scalar(alpha, module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _map_first(self.module(*args, **kwargs), lambda y: y * self.alpha.reshape(()))


class ScalarAffine(_Wrapper):
    r"""``module(x + bias_in) * scale + bias_out``: Fixup's scalars around one layer.

    The official Fixup block (``hongyi-zhang/Fixup``, ``fixup_resnet_cifar.py``) is
    ``conv1(x + b1a) -> relu(. + b1b) -> conv2(. + b2a) -> . * scale + b2b``; it is
    ``ScalarAffine(conv1, bias_in=0, bias_out=0)`` then
    ``ScalarAffine(conv2, bias_in=0, scale=1, bias_out=0)``. Each scalar is present only when
    given (``None``: absent, no parameter).

    Args:
        module: the layer; with ``bias_in`` it must take its input as the first positional arg.
        bias_in, scale, bias_out: initial values, or ``None`` for none.

    >>> aff = ScalarAffine(nn.Linear(2, 2), bias_in=0.0, scale=1.0, bias_out=0.0)
    >>> sorted(aff.state_dict())
    ['bias_in', 'bias_out', 'module.bias', 'module.weight', 'scale']
    """

    def __init__(self, module: nn.Module, *, bias_in: float | None = None, scale: float | None = None,
                 bias_out: float | None = None) -> None:  # fmt: skip
        super().__init__(module)
        self.bias_in = _scalar(bias_in, module) if bias_in is not None else None
        self.scale = _scalar(scale, module) if scale is not None else None
        self.bias_out = _scalar(bias_out, module) if bias_out is not None else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.bias_in is not None:
            if not args or not isinstance(args[0], torch.Tensor):
                raise InitlabError(
                    f"ScalarAffine({type(self.module).__name__}) with bias_in needs the input as "
                    "the first positional argument"
                )
            args = (args[0] + self.bias_in.reshape(()), *args[1:])
        out = self.module(*args, **kwargs)

        def post(y: torch.Tensor) -> torch.Tensor:
            if self.scale is not None:
                y = y * self.scale.reshape(())
            if self.bias_out is not None:
                y = y + self.bias_out.reshape(())
            return y

        return _map_first(out, post)


class NoNorm(nn.Identity):
    """A normalization layer removed (Fixup and T-Fixup train without normalization).

    Returns its input. It keeps the removed layer's ``eps`` and ``normalized_shape`` (or
    ``num_features``) so architecture code that reads them (``nn.TransformerEncoderLayer`` compares
    ``norm1.eps`` with ``norm2.eps``) keeps working, has no parameters, and carries the no-op
    pre-hook that turns off PyTorch's fused paths (which would read its missing weight).

    >>> NoNorm(nn.LayerNorm(4)).eps
    1e-05
    """

    def __init__(self, removed: nn.Module | None = None) -> None:
        super().__init__()
        self.removed = type(removed).__name__ if removed is not None else "norm"
        self.eps = float(getattr(removed, "eps", 1e-5) or 1e-5)
        for attr in ("normalized_shape", "num_features", "num_groups", "num_channels"):
            if removed is not None and hasattr(removed, attr):
                setattr(self, attr, getattr(removed, attr))
        self.register_forward_pre_hook(_no_fast_path)

    def extra_repr(self) -> str:
        return f"removed={self.removed}"


def is_wrapper(module: nn.Module) -> bool:
    """Whether ``module`` is one of initlab's wrappers (:class:`ScalarGate`, :class:`ScalarAffine`)."""
    return isinstance(module, _Wrapper)


def _foldable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and type(module).forward in (
        nn.Linear.forward,
        nn.Conv1d.forward,
        nn.Conv2d.forward,
        nn.Conv3d.forward,
    )


def unwrap(model: nn.Module, *, fold: bool = True) -> nn.Module:
    """Put every wrapped module back in place of its wrapper (in place; returns ``model``).

    With ``fold=True`` the scalars are folded into the wrapped layer where that is exact: a gate
    ``alpha * (Wx + b)`` becomes ``W' = alpha W``, ``b' = alpha b``; an affine
    ``(W(x + b_in) + b) s + b_out`` becomes ``W' = s W``, ``b' = s (b + b_in W 1) + b_out`` (needs a
    bias; a conv with padding does not fold ``b_in`` exactly at the borders, so it is refused).
    Anything that cannot be folded exactly raises :class:`InitlabError` and leaves the model as it was.

    >>> net = nn.Sequential(ScalarGate(nn.Linear(2, 2), alpha=0.5))
    >>> x = torch.randn(3, 2); y = net(x)
    >>> torch.allclose(unwrap(net)(x), y), type(net[0]).__name__
    (True, 'Linear')
    """
    targets = [(n, m) for n, m in model.named_modules() if n and is_wrapper(m)]
    plans = []
    for name, w in targets:
        inner = w.module
        changed = fold and any(
            p is not None and (p.numel() != 1 or p.item() != v)
            for p, v in ((getattr(w, "alpha", None), 1.0), (getattr(w, "scale", None), 1.0),
                         (getattr(w, "bias_in", None), 0.0), (getattr(w, "bias_out", None), 0.0))
        )  # fmt: skip
        if changed and not _foldable(inner):
            raise InitlabError(f"{name}: cannot fold scalars into {type(inner).__name__} exactly; "
                               "pass fold=False to drop them")  # fmt: skip
        if changed and getattr(w, "bias_in", None) is not None and float(w.bias_in) != 0.0:
            pad = getattr(inner, "padding", 0)
            if isinstance(inner, nn.modules.conv._ConvNd) and (pad != "valid" and any(
                    p != 0 for p in (pad if isinstance(pad, tuple) else (pad,)))):  # fmt: skip
                raise InitlabError(
                    f"{name}: a padded conv cannot absorb a non-zero input bias exactly"
                )
        biases = [
            float(getattr(w, k)) for k in ("bias_in", "bias_out") if getattr(w, k, None) is not None
        ]
        if changed and inner.bias is None and any(b != 0.0 for b in biases):
            raise InitlabError(
                f"{name}: {type(inner).__name__} has no bias to absorb the scalar biases"
            )
        plans.append((name, w, inner, changed))
    with torch.no_grad():
        for name, w, inner, changed in plans:
            if changed:
                weight = inner.weight
                mult = (
                    w.alpha
                    if isinstance(w, ScalarGate)
                    else (w.scale if w.scale is not None else None)
                )
                shift = torch.zeros(weight.shape[0], dtype=weight.dtype)
                if isinstance(w, ScalarAffine) and w.bias_in is not None:
                    dims = list(range(1, weight.dim()))
                    shift = weight.sum(dim=dims) * w.bias_in
                if inner.bias is not None:
                    inner.bias.add_(shift)
                if mult is not None:
                    weight.mul_(mult)
                    if inner.bias is not None:
                        inner.bias.mul_(mult)
                if (
                    isinstance(w, ScalarAffine)
                    and w.bias_out is not None
                    and inner.bias is not None
                ):
                    inner.bias.add_(w.bias_out)
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, inner)
    return model
