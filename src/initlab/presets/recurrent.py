"""Presets of recurrent networks: the LSTM forget-gate bias."""

from __future__ import annotations

from torch import nn

from ..errors import InitlabError
from ..graph import Graph
from .callables import ForgetGateBias
from .finding import (
    Rules,
    _named_params,
)


def lstm_forget_bias(model: nn.Module, graph: Graph | None = None, *, value: float = 1.0) -> Rules:
    """LSTM forget-gate bias: ``bias_ih[H:2H] = value``, the rest of ``bias_ih`` and ``bias_hh`` 0.

    PyTorch stacks the gates as (i, f, g, o); only ``bias_ih`` carries the 1 (setting both would
    give 2). Weights are left to the plan (``weight_hh`` orthogonal by default). Only ``nn.LSTM``
    and ``nn.LSTMCell`` are touched (a GRU's gates are r, z, n).

    Source: Jozefowicz, Zaremba & Sutskever 2015, "An Empirical Exploration of Recurrent Network
    Architectures" (section 2.2); Gers, Schmidhuber & Cummins 2000.
    """
    rules: Rules = {}
    fill = ForgetGateBias(value)
    for n, m, leaf, _ in _named_params(model):
        if isinstance(m, (nn.LSTM, nn.LSTMCell)) and leaf.startswith("bias_ih"):
            rules[n] = fill
        elif isinstance(m, (nn.LSTM, nn.LSTMCell)) and leaf.startswith("bias_hh"):
            rules[n] = "zeros"
    if not rules:
        raise InitlabError(
            f"preset 'lstm-forget-bias': {type(model).__name__} has no nn.LSTM / nn.LSTMCell with biases"
        )
    return rules
