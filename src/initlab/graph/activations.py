"""What counts as an activation, an addition or a weight use for the tracer: the function tables
and :func:`activation_module_name` for activation modules."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
# methods that read only the shape (or dtype) of their second operand: ``y.reshape_as(x)`` carries
# ``y``'s signal, not ``x``'s (LeViT reshapes a BatchNorm's output like the linear output it read)
_SHAPE_OF = {torch.Tensor.reshape_as, torch.Tensor.view_as, torch.Tensor.expand_as,
             torch.Tensor.type_as}  # fmt: skip
ADD_FUNCTIONS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
         torch.Tensor.__radd__, torch.Tensor.__iadd__}  # fmt: skip
MUL_FUNCTIONS = {torch.mul, torch.multiply, torch.Tensor.mul, torch.Tensor.mul_,
                 torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__imul__}  # fmt: skip
"""Elementwise products: ``gamma * f(x)`` (a layer scale) or ``x * c`` (a constant factor)."""
DIV_FUNCTIONS = {torch.div, torch.divide, torch.true_divide, torch.Tensor.div, torch.Tensor.div_,
                 torch.Tensor.__truediv__, torch.Tensor.__itruediv__}  # fmt: skip
"""Divisions of a tensor (``x / c``; ``c / x`` is ``__rtruediv__``, not here)."""
SCALE_FUNCTIONS = MUL_FUNCTIONS | DIV_FUNCTIONS
"""A tensor times (or over) a constant: the tracer follows the factor (``_Info.scale``)."""
MATMUL_FUNCTIONS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm}
"""Products of two streams: ``q @ k^T`` makes attention scores."""
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax, torch.Tensor.softmax}
ATTENTION_FUNCTIONS = {F.scaled_dot_product_attention}
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                     F.feature_alpha_dropout, torch.dropout}  # fmt: skip
"""Dropout: in train mode it multiplies the second moment of what it passes by ``1 / (1 - p)``."""
_MIXING = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
           torch.Tensor.__rmatmul__, torch.mm, torch.bmm, torch.einsum, F.conv1d, F.conv2d,
           F.conv3d, F.embedding, F.bilinear, torch.addmm}  # fmt: skip


_ACT_WORDS = {"gelu": "gelu", "newgelu": "gelu_tanh", "fastgelu": "gelu_tanh",
              "gelutanh": "gelu_tanh", "pytorchgelutanh": "gelu_tanh", "quickgelu": "quick_gelu",
              "silu": "silu", "swish": "silu", "relu": "relu", "tanh": "tanh",
              "sigmoid": "sigmoid", "mish": "mish", "relusquared": "relu"}  # fmt: skip


def activation_module_name(module: nn.Module) -> str | None:
    """The activation a parameterless module computes, from its class (``NewGELUActivation``)."""
    if any(c is not None for c in module._modules.values()) or any(
        p is not None for p in module._parameters.values()
    ):  # a container, or a module with parameters (no walk: this runs for every module)
        return None
    from ..gains import _MODULE_NAMES

    for klass, name in _MODULE_NAMES.items():
        if isinstance(module, klass):
            return name
    key = type(module).__name__.lower().replace("_", "").removesuffix("activation")
    return _ACT_WORDS.get(key)
