"""Callable rules: values that depend on the parameter (an LSTM forget gate, a padding row)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InitlabError


@dataclass(frozen=True)
class ForgetGateBias:
    """Fill an LSTM ``bias_ih`` (gates i, f, g, o stacked): forget gate ``value``, the rest 0.

    >>> b = torch.empty(8); ForgetGateBias()(b, None)
    tensor([0., 0., 1., 1., 0., 0., 0., 0.])
    """

    value: float = 1.0

    def __call__(
        self, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if tensor.dim() != 1 or tensor.shape[0] % 4:
            raise InitlabError(
                f"forget-gate bias needs a 1-D LSTM bias of 4H values, got shape {tuple(tensor.shape)}"
            )
        h = tensor.shape[0] // 4
        with torch.no_grad():
            tensor.zero_()
            tensor[h : 2 * h] = self.value
        return tensor


@dataclass(frozen=True)
class NormalPadded:
    """N(0, std) with the embedding's ``padding_idx`` row set to 0 (HF ``_init_weights``)."""

    std: float
    padding_idx: int

    def __call__(
        self, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        with torch.no_grad():
            work = torch.empty(tensor.shape, dtype=torch.float32)
            work.normal_(0.0, self.std, generator=generator)
            work[self.padding_idx] = 0.0
            return tensor.copy_(work)
