"""The model's structure, learned from one traced forward pass.

:func:`trace` runs the model once on an example under a :class:`~torch.overrides.TorchFunctionMode`
and forward hooks, and follows every tensor from the input to the output. It records:

* the **layers**: modules that own parameters directly and have no parametrized children
  (``Linear``, ``Conv*``, norms, ``Embedding``...; ``MultiheadAttention`` and recurrent modules
  count as one layer), in the order they first run, with how often each ran;
* the **activation** that follows each layer before the next weight layer, whether a module
  (``nn.Tanh``) or a function (``torch.tanh``, ``F.relu``, ``x.relu()``...). Norm layers are
  transparent: in ``conv -> BatchNorm -> ReLU`` the conv is followed by ReLU;
* **normalized** layers (:attr:`Layer.normalized`): weight layers whose output only a
  normalization reads, directly (a conv before its BatchNorm, a query projection before a
  QK-norm): their scale does not change the forward pass;
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
BatchNorm statistic updates), without touching the global RNG, and every hook comes off. It
computes nothing either: it runs on meta copies of the parameters and buffers, so its cost does
not grow with the model's compute; a model that reads values in ``forward`` is traced with a real
pass instead (see :func:`trace`).
Data-dependent Python control flow is fine: only the path the example takes is recorded.

The package: :mod:`~initlab.graph.types` (:class:`Layer`, :class:`Branch`, :class:`Graph`,
:func:`is_norm`), :mod:`~initlab.graph.activations` (the activation and addition tables),
:mod:`~initlab.graph.tracer` (the tracing mode and its bookkeeping), :mod:`~initlab.graph.meta`
(the meta pass), :mod:`~initlab.graph.branches` (residual branches, embedding sums) and
:mod:`~initlab.graph.tracing` (:func:`trace`, :func:`run_forward`).
"""

from __future__ import annotations

from .activations import ACTIVATION_FUNCTIONS, ADD_FUNCTIONS
from .activations import activation_module_name as activation_module_name
from .meta import _MetaCalls as _MetaCalls
from .tracing import TraceMode as TraceMode
from .tracing import run_forward as run_forward
from .tracing import trace
from .types import Branch, Graph, Layer, is_norm

__all__ = ["ACTIVATION_FUNCTIONS", "ADD_FUNCTIONS", "Branch", "Graph", "Layer", "is_norm", "trace"]
