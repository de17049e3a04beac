r"""MetaInit: tune the norms of the weights to minimize the gradient quotient (Dauphin & Schoenholz, NeurIPS 2019).

The paper's Figure 2 algorithm (no official repository; ``diggerdu/MetaInit`` copies it):

.. math::
    GQ(\theta) = \frac{1}{N} \sum_i \left| \frac{g_i - (Hg)_i}{g_i + \epsilon\,\operatorname{sign}(g_i)} - 1 \right|,
    \qquad \operatorname{sign}(0) = +1,

over all trainable parameters (biases too), :math:`g = \nabla L`, :math:`Hg = \nabla(\|g\|^2/2)` by
double backward, :math:`\epsilon = 10^{-5}`. For each tensor :math:`W` with ``dim >= 2``, with
:math:`n = \|W\|_F`:

.. math::
    d = \operatorname{sign}(\langle \nabla_W GQ, W\rangle / n),\quad
    m \leftarrow \mu m - \text{lr}\, d,\quad W \leftarrow W\,(n + m)/n

(signSGD with momentum on the norm, lr 0.1 an absolute change of the norm, momentum 0.9, 500
steps). Inputs are N(0, 1) of ``input_shape`` and random labels in ``[0, num_classes)`` unless
``data`` is given; ``model.eval()``. No floor on the norm (as the paper).

**Modes: every module in eval mode, norms included** (:func:`initlab.hooks.eval_mode` without a
predicate), where GradInit and LSUV keep the norms in train mode. Chosen because the paper's code
(``diggerdu/MetaInit``, ``metainit``) calls ``model.eval()`` and nothing else, and because its
inputs are random N(0, 1) batches, not the data: batch statistics of noise would describe nothing
training sees, while in eval mode a norm is the fixed affine map it is at init. Every module gets
its own mode back afterwards.

Deviations from the paper's code (each deliberate):

* **Functional**: each tuned tensor is :math:`W = \alpha W_0` applied through
  :func:`torch.func.functional_call`; the model is written once at the end. The direction
  :math:`\operatorname{sign}\langle\nabla_W GQ, W\rangle` and the norm update are the paper's.
* **Randomness** comes from :func:`initlab.rng.generator` (``seed``, iteration, rank), not the
  global RNG.
* **Data**: optional real ``(input, target)`` batches (cycled), e.g. for models whose input is
  not a float tensor (token ids); inputs may be tensors, tuples or dicts of keyword args (as
  :func:`initlab.trace`), and with ``loss_fn=None`` the loss is the model's own ``output.loss``.
* **Distributed**: the gradient of GQ with respect to the scales is averaged over ranks before
  the sign (all ranks then take the same step); with random inputs each rank draws its own batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InitlabError
from ..hooks import eval_mode
from ..placement import check_placement
from ..rng import generator
from ..transaction import transaction
from . import _scales
from ._common import Batches, all_reduce_mean_, distributed, progress_bar

__all__ = ["MetaInitResult", "gradient_quotient", "metainit"]


@dataclass(frozen=True)
class MetaInitResult:
    """Outcome of :func:`metainit`.

    Attributes:
        history: the gradient quotient at each step (before that step's update).
        norms: final Frobenius norm per tuned tensor.
        scales: final :math:`\\|W\\|/\\|W_0\\|` (signed if a norm crossed zero) per tuned tensor.
    """

    history: tuple[float, ...]
    norms: dict[str, float]
    scales: dict[str, float]


def gradient_quotient(
    loss: torch.Tensor, params: Sequence[torch.Tensor], eps: float = 1e-5
) -> torch.Tensor:
    """The gradient quotient of the MetaInit paper (Figure 2), differentiable in ``params``.

    >>> w = torch.tensor([2.0], requires_grad=True)
    >>> round(gradient_quotient((w**2).sum(), [w]).item(), 4)  # g = 2w = 4, Hg = 8: |(4 - 8)/4 - 1| = 2
    2.0
    """
    grad = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grad = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grad, strict=True)]
    prod = torch.autograd.grad(
        sum((g**2).sum() / 2 for g in grad), params, create_graph=True, allow_unused=True
    )
    prod = [torch.zeros_like(p) if h is None else h for p, h in zip(params, prod, strict=True)]
    out = sum(
        ((g - h) / (g + eps * (2 * (g >= 0).to(g.dtype) - 1).detach()) - 1).abs().sum()
        for g, h in zip(grad, prod, strict=True)
    )
    return out / sum(p.numel() for p in params)


def metainit(
    model: nn.Module,
    loss_fn: _scales.LossFn | None,
    data: Iterable[Any] | None = None,
    *,
    iters: int = 500,
    lr: float = 0.1,
    momentum: float = 0.9,
    eps: float = 1e-5,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> MetaInitResult:
    """MetaInit (Figure 2 of the paper), in place and transactional. See the module docstring.

    Args:
        model: the network.
        loss_fn: ``loss_fn(output, target) -> scalar`` (the paper: cross-entropy); ``None``: the
            model's own ``output.loss`` (a transformers model whose input dict holds ``labels``).
        data: optional iterable of batches (cycled): ``(inputs, target)`` pairs, where ``inputs``
            is anything :func:`initlab.trace` accepts (a tensor, a tuple of positional args, a
            dict of keyword args), or dicts of keyword args alone (``model(**batch)``; target
            ``None``). Default: random N(0, 1) inputs of ``input_shape`` (batch dimension
            included) and uniform labels below ``num_classes``.
        iters: steps (paper: 500).
        lr: absolute change of a tensor's norm per step (paper: 0.1).
        momentum: momentum of the sign steps (paper: 0.9).
        eps: the quotient's epsilon (paper: 1e-5).
        input_shape, num_classes: shape of the random inputs and number of classes.
        seed: seed of the random inputs.
        progress: show a progress bar (``None``: when stderr is a TTY).

    Returns:
        :class:`MetaInitResult` with the quotient's history.

    >>> net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    >>> res = metainit(net, nn.functional.cross_entropy, input_shape=(32, 8), num_classes=4, iters=20)
    >>> len(res.history)
    20
    """
    if data is None and (input_shape is None or num_classes is None):
        raise InitlabError(
            "metainit: pass data=, or input_shape= and num_classes= for random inputs (the paper's)"
        )
    if iters < 0 or lr < 0 or not 0 <= momentum < 1 or eps <= 0:
        raise InitlabError(
            f"metainit: need iters >= 0, lr >= 0, 0 <= momentum < 1, eps > 0 (got {iters}, {lr}, {momentum}, {eps})"
        )
    check_placement(model, who="initlab.metainit")
    s = _scales.select(model, lambda n, p: None if p.dim() >= 2 else "dim < 2 (a bias or gain)")
    if not s.names:
        raise InitlabError("metainit: no trainable tensor with dim >= 2 and nonzero norm to tune")
    tuned = s.names
    p0 = next(iter(s.trainable.values()))
    alpha = torch.ones(len(tuned), dtype=torch.float64)
    memory = [0.0] * len(tuned)
    batches = Batches(data, "metainit: data") if data is not None else None
    rank = dist.get_rank() if distributed() else 0

    def batch(i: int) -> tuple[Any, Any]:
        if batches is not None:
            return _scales.draw(batches, "metainit")
        g = generator(seed, "metainit", rank, i)
        x = torch.randn(*input_shape, generator=g).to(device=p0.device, dtype=p0.dtype)  # type: ignore[misc]
        y = torch.randint(0, int(num_classes), (int(input_shape[0]),), generator=g).to(p0.device)  # type: ignore[index, arg-type]
        return x, y

    history: list[float] = []
    with transaction(model), eval_mode(model):
        for i in progress_bar(iters, progress, "metainit"):
            x, y = batch(i)
            a = alpha.to(p0.dtype).to(p0.device).requires_grad_(True)
            theta = _scales.theta(s, a)
            out = _scales.forward(model, s, theta, x)
            loss = _scales.loss_of(out, y, loss_fn, "metainit")
            gq = gradient_quotient(loss, list(theta.values()), eps)
            if not math.isfinite(gq.item()):
                raise InitlabError(
                    f"metainit: the gradient quotient is {gq.item()} at step {i}; check the model's init and data"
                )
            history.append(gq.item())
            (ga,) = torch.autograd.grad(gq, a)
            ga = all_reduce_mean_(ga.detach().to(torch.float64).clone())
            with torch.no_grad():
                for j, n in enumerate(tuned):
                    sj = float(alpha[j])
                    norm = abs(sj) * s.base_norm[n]
                    # W = a W0: <dGQ/dW, W> = a dGQ/da, so d = sign(a dGQ/da) (torch.sign: 0 -> 0)
                    d = math.copysign(1.0, float(ga[j]) * sj) if float(ga[j]) * sj != 0 else 0.0
                    memory[j] = momentum * memory[j] - lr * d
                    new_norm = norm + memory[j]
                    alpha[j] = sj * new_norm / norm
        _scales.write(s, alpha.tolist())
    norms = {n: abs(float(alpha[j])) * s.base_norm[n] for j, n in enumerate(tuned)}
    return MetaInitResult(tuple(history), norms, {n: float(alpha[j]) for j, n in enumerate(tuned)})
