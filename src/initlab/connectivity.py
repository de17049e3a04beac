r"""Fans by connectivity: how many inputs feed each output unit and how many outputs each input feeds.

``fan_in`` is the number of inputs that each output unit sums over; ``fan_out`` is the number of
output units that each input unit contributes to. Both count one *chunk* when a tensor stacks
several matrices (the three Q/K/V projections of ``nn.MultiheadAttention.in_proj_weight``, the
gates of an LSTM), because each chunk is its own linear map.

Where :mod:`torch.nn.init` guesses fans from a tensor's shape
(``fan_in = size(1) * prod(size[2:])``, ``fan_out = size(0) * prod(size[2:])``), initlab reads the
module, which gets these cases right:

==========================  =======================================  ==================================
layer (weight shape)         initlab fan_in / fan_out                  torch's guess
==========================  =======================================  ==================================
Conv (out, in/g, *k)         in/g * prod(k)  /  out/g * prod(k)        in/g * prod(k) / out * prod(k)
ConvTranspose (in, out/g,k)  in/g * prod(k)  /  out/g * prod(k)        out/g * prod(k) / in * prod(k)
LSTM weight_ih (4H, I)       I / H, 4 chunks                           I / 4H
MHA in_proj_weight (3E, E)   E / E, 3 chunks                           E / 3E
Embedding (N, D)             N / D (one-hot times matrix)              D / N
==========================  =======================================  ==================================

Kernel taps are counted without regard to stride or dilation (the convention of torch, Keras and
the papers). A raw tensor, or a module initlab does not know, falls back to torch's shape
convention; pass ``Fans`` explicitly to any scheme to override.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InitlabError

__all__ = ["FUSED_QKV_NAMES", "Fans", "fans", "is_fused_qkv", "parameter", "tensor_fans"]

FUSED_QKV_NAMES = ("qkv", "c_attn", "wqkv", "query_key_value", "in_proj")
"""Module names of fused Q/K/V projections: timm's ``qkv`` (also ``to_qkv``, ``attn_qkv``),
GPT-2's ``c_attn``, MosaicBERT/MPT's ``Wqkv``, GPT-NeoX/Falcon's ``query_key_value`` and
``in_proj``. One Linear computes the three maps, so its weight stacks three chunks."""
_FUSED_QKV = re.compile(rf"(^|_)({'|'.join(FUSED_QKV_NAMES)})$")


@dataclass(frozen=True)
class Fans:
    """Fans of one parameter, per chunk.

    Attributes:
        fan_in: inputs summed by each output unit (per chunk).
        fan_out: output units each input unit feeds (per chunk).
        receptive_field: kernel taps per (input, output) channel pair; 1 for dense layers.
        chunks: number of independent matrices stacked along dim 0 (3 for packed QKV, 4 for LSTM).
    """

    fan_in: int
    fan_out: int
    receptive_field: int = 1
    chunks: int = 1

    def __post_init__(self) -> None:
        if self.fan_in < 1 or self.fan_out < 1 or self.chunks < 1 or self.receptive_field < 1:
            raise InitlabError(f"fans must be positive integers, got {self}")

    @property
    def fan_avg(self) -> float:
        """``(fan_in + fan_out) / 2``, the Glorot average."""
        return (self.fan_in + self.fan_out) / 2

    def mode(self, mode: str) -> float:
        """The fan that a variance-scaling ``mode`` ("fan_in", "fan_out", "fan_avg") selects."""
        if mode == "fan_in":
            return float(self.fan_in)
        if mode == "fan_out":
            return float(self.fan_out)
        if mode == "fan_avg":
            return self.fan_avg
        from .errors import check_choice

        check_choice("mode", mode, ["fan_in", "fan_out", "fan_avg"])
        raise AssertionError  # unreachable


def tensor_fans(tensor: torch.Tensor, chunks: int = 1) -> Fans:
    """torch's shape convention: ``fan_in = size(1) * rf``, ``fan_out = size(0) / chunks * rf``.

    ``rf = prod(size[2:])``. Use it only when no module is at hand: it is wrong for grouped and
    transposed convolutions, and for stacked matrices unless ``chunks`` says how many.

    >>> tensor_fans(torch.empty(12, 2, 3, 3))
    Fans(fan_in=18, fan_out=108, receptive_field=9, chunks=1)
    """
    if tensor.dim() < 2:
        raise InitlabError(
            f"fans need a tensor with at least 2 dimensions, got shape {tuple(tensor.shape)}; "
            "a 1-D tensor (a bias or a norm weight) has no fan_in/fan_out: use a constant or "
            "normal scheme, or pass fans=Fans(...) explicitly"
        )
    rf = math.prod(tensor.shape[2:]) if tensor.dim() > 2 else 1
    out = tensor.shape[0]
    if out % chunks:
        raise InitlabError(
            f"dim 0 of shape {tuple(tensor.shape)} is not divisible by {chunks} chunks"
        )
    return Fans(tensor.shape[1] * rf, out // chunks * rf, rf, chunks)


_RNN_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?$")


def parameter(module: nn.Module, name: str) -> torch.Tensor:
    """``module``'s tensor ``name``, or an error that lists the names it has."""
    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        names = [n for n, _ in module.named_parameters(recurse=False)]
        raise InitlabError(
            f"{type(module).__name__} has no parameter {name!r}; its parameters are {names}. "
            "Pass name=... with one of them."
        )
    return tensor


_ORIGINAL = re.compile(r"^parametrizations\.([^.]+)\.original(\d*)$")


def originals(holder: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a parametrization list's originals (``original``, or ``original0``,
    ``original1``, ...), in order."""
    return [(k, t) for k, t in holder.named_parameters(recurse=False) if k.startswith("original")]


def main_original(holder: nn.Module) -> tuple[int, torch.Tensor] | None:
    """The original that stands for a parametrization list's tensor, with its index: the only
    one, or the first of the largest (weight norm's direction ``v``, not its norm ``g``)."""
    found = originals(holder)
    if not found:
        return None
    index = max(range(len(found)), key=lambda i: found[i][1].numel())
    return index, found[index][1]


def weight_norm_hooks(module: nn.Module) -> list[Any]:
    """The forward pre-hooks of weight norms registered the older way on ``module``
    (``torch.nn.utils.weight_norm``; each has ``name`` and ``dim``)."""
    return [h for h in module._forward_pre_hooks.values() if type(h).__name__ == "WeightNorm"]


def parametrized_original(module: nn.Module, name: str) -> tuple[str, bool] | None:
    """For ``name`` an original tensor of one of ``module``'s parametrizations
    (:mod:`torch.nn.utils.parametrize`: ``parametrizations.weight.original``, or
    ``original0``, ``original1``, ... when its ``right_inverse`` returns several), the
    parametrized tensor's name and whether this original stands for it: the only one, or the
    largest (weight norm's direction ``v``, not its norm ``g``). ``None`` for any other name.

    >>> lin = nn.utils.parametrizations.weight_norm(nn.Linear(3, 4))
    >>> [parametrized_original(lin, n) for n, _ in lin.named_parameters()]
    [None, ('weight', False), ('weight', True)]
    """
    match = _ORIGINAL.match(name)
    holder = getattr(module, "parametrizations", None)
    if match is None or not isinstance(holder, nn.ModuleDict) or match[1] not in holder:
        return None
    main = main_original(holder[match[1]])
    if main is None:
        return None
    index = int(match[2]) if match[2] else 0
    return match[1], index == main[0]


def weight_norm_hook(module: nn.Module, name: str) -> tuple[str, bool] | None:
    """For ``name`` one of the two parameters of a weight norm registered the older way
    (``torch.nn.utils.weight_norm``: ``weight_g`` and ``weight_v``, and a forward pre-hook that
    recomputes ``weight`` from them), the weight's name and whether this is the direction ``v``
    (which stands for it, as in :func:`parametrized_original`); ``None`` for any other name.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     lin = nn.utils.weight_norm(nn.Linear(3, 4))
    >>> [weight_norm_hook(lin, n) for n in ("bias", "weight_g", "weight_v")]
    [None, ('weight', False), ('weight', True)]
    """
    base, _, part = name.rpartition("_")
    if part not in ("g", "v") or not base:
        return None
    if any(getattr(hook, "name", None) == base for hook in weight_norm_hooks(module)):
        return base, part == "v"
    return None


def stored_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module``'s tensor ``name`` as stored, without running a parametrization (which may
    change buffers: spectral norm's power iteration in train mode): a parametrized tensor is
    read as its main original (same shape), see :func:`parametrized_original`."""
    holder = getattr(module, "parametrizations", None)
    if isinstance(holder, nn.ModuleDict) and name in holder:
        main = main_original(holder[name])
        return main[1] if main is not None else None
    if weight_norm_hook(module, f"{name}_v") is not None:
        return module._parameters[f"{name}_v"]
    tensor = getattr(module, name, None)
    return tensor if isinstance(tensor, torch.Tensor) else None


def is_fused_qkv(module_name: str) -> bool:
    """Whether a module's (qualified) name names a fused Q/K/V projection.

    The last name component, lower-cased, is one of :data:`FUSED_QKV_NAMES` or ends with
    ``_`` + one of them. The name is a hint only: callers also check the shape (``out = 3 in``).

    >>> [is_fused_qkv(n) for n in ("blocks.0.attn.qkv", "h.0.attn.c_attn", "layer.Wqkv")]
    [True, True, True]
    >>> [is_fused_qkv(n) for n in ("attn.to_qkv", "attn.q_proj", "qkv.proj", "fc")]
    [True, False, False, False]
    """
    return _FUSED_QKV.search(module_name.rpartition(".")[2].lower()) is not None


def _conv_fans(module: nn.modules.conv._ConvNd) -> Fans:
    rf = math.prod(module.kernel_size)
    g = module.groups
    return Fans(module.in_channels // g * rf, module.out_channels // g * rf, rf)


def _rnn_fans(module: nn.Module, name: str) -> Fans:
    """Recurrent weights stack one (hidden, fan_in) matrix per gate: i,f,g,o (LSTM), r,z,n (GRU)."""
    match = _RNN_PARAM.match(name)
    if match is None:
        raise InitlabError(f"{type(module).__name__} has no recurrent parameter {name!r}")
    weight = getattr(module, "weight" + name.removeprefix(match.group(1)))
    if match.group(2) == "hr":  # LSTM projection (proj_size, hidden_size): one plain matrix
        return Fans(weight.shape[1], weight.shape[0])
    hidden = module.hidden_size
    return Fans(weight.shape[1], hidden, 1, weight.shape[0] // hidden)


def fans(
    module: nn.Module | torch.Tensor, name: str = "weight", *, chunks: int | None = None
) -> Fans:
    """Fans of ``module``'s parameter ``name``, by connectivity and per chunk.

    Args:
        module: a layer, or a bare tensor (which falls back to :func:`tensor_fans`).
        name: the parameter's name on the module; a bias gets the fans of its weight.
        chunks: override the number of stacked matrices (e.g. 3 for a fused ``qkv`` Linear).

    >>> fans(nn.Conv2d(6, 12, 3, groups=3))
    Fans(fan_in=18, fan_out=36, receptive_field=9, chunks=1)
    >>> fans(nn.LSTM(10, 20), "weight_ih_l0")
    Fans(fan_in=10, fan_out=20, receptive_field=1, chunks=4)
    >>> fans(nn.MultiheadAttention(16, 4), "in_proj_weight")
    Fans(fan_in=16, fan_out=16, receptive_field=1, chunks=3)
    """
    if isinstance(module, torch.Tensor):
        return tensor_fans(module, chunks or 1)
    original = parametrized_original(module, name)
    if original is not None:  # a parametrization's original: the fans of the tensor it stands for
        name = original[0]
        tensor = stored_tensor(module, name)
    else:
        tensor = parameter(module, name)
    result = _module_fans(module, name, tensor)
    if chunks is not None and chunks != result.chunks:
        whole_out = result.fan_out * result.chunks // result.receptive_field
        if whole_out % chunks:
            raise InitlabError(
                f"{type(module).__name__}.{name}: {whole_out} output units do not split into "
                f"{chunks} chunks"
            )
        result = Fans(
            result.fan_in,
            whole_out // chunks * result.receptive_field,
            result.receptive_field,
            chunks,
        )
    return result


def _module_fans(module: nn.Module, name: str, tensor: torch.Tensor) -> Fans:
    is_bias = name.startswith("bias")
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_fans(module)
    if isinstance(module, nn.Linear):
        return Fans(module.in_features, module.out_features)
    if isinstance(module, nn.Bilinear):
        # y_k = sum_ij x1_i W_kij x2_j: each output sums in1*in2 products; each x1 unit reaches
        # out*in2 weights (torch's convention, from the first input's side).
        return Fans(
            module.in1_features * module.in2_features, module.out_features * module.in2_features
        )
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        # a lookup is one_hot(x) @ W: each of the D outputs reads N inputs (one active).
        return Fans(module.num_embeddings, module.embedding_dim)
    if isinstance(module, nn.MultiheadAttention):
        e = module.embed_dim
        if name in ("in_proj_weight", "in_proj_bias"):
            return Fans(e, e, 1, 3)
        if name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            weight = getattr(module, name)
            return Fans(weight.shape[1], weight.shape[0])
        if name in ("bias_k", "bias_v"):
            return Fans(e, e)
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return _rnn_fans(module, name)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        # transformers' GPT-2 Conv1D stores its weight as (in, out), the transpose of nn.Linear
        weight = module.weight
        return Fans(weight.shape[0], weight.shape[1])
    if is_bias:
        weight = stored_tensor(module, "weight")
        if (
            isinstance(weight, torch.Tensor)
            and weight.dim() >= 2
            and weight.shape[0] == tensor.shape[0]
        ):
            return _module_fans(module, "weight", weight)
    return tensor_fans(tensor)
