r"""GradInit: learn one scale per parameter tensor so the first optimizer step goes far (Zhu et al., NeurIPS 2021).

Algorithm 1 of the paper, as the official code ``zhuchen03/gradinit`` runs it (``gradinit_utils.py``,
``gradinit_optimizers.py``). Each scalable tensor is :math:`\theta_i = \alpha_i \theta_i^0`,
:math:`\alpha_i = 1` at the start. For :math:`t = 1..T`:

* :math:`S = (b_0, b_1)`, :math:`L_t = L(S; \theta)`, :math:`g = \nabla_\theta L_t` (kept
  differentiable in :math:`\alpha`).
* If :math:`\|g\|_p > \gamma` (:math:`p = 2` for SGD, :math:`p = 1` for Adam): one step of the scale
  optimizer on :math:`\nabla_\alpha \|g\|_p` (a descent step on the gradient norm, second order).
* Else: :math:`\theta' = \theta - \eta\,\mathcal A[g]` with :math:`\mathcal A[g]` detached
  (:math:`g/\|g\|_2` for SGD with ``normalize_grad``, :math:`g` without it, :math:`\operatorname{sign} g`
  for Adam); one step on :math:`\nabla_\alpha L(\tilde S; \theta')/\eta` with
  :math:`\tilde S = (b_0, b_2)`: half shared with :math:`S`, half fresh.
* Scale optimizer (``RescaleAdam`` of the official code): Adam on each scalar (betas 0.9/0.999,
  eps 1e-8), the scalar's gradient clipped to ``[-grad_clip, grad_clip]``; constraint and objective
  steps keep **separate first moments and step counts** but **one shared second moment**, updated
  on every step: the first bias correction counts the steps of the kind taken, the second counts
  all steps (:class:`_RescaleAdam` has the formula). Then
  :math:`\alpha \leftarrow \max(\alpha - \text{step}, \underline\alpha)`; :math:`\underline\alpha`
  = ``min_scale`` for weights, 0 for biases; a scale that reached 0 stays there.

Defaults: ``gamma`` from the paper's relation :math:`\eta\gamma^2 = 0.1` (SGD) and
:math:`\eta\gamma = 0.1` (Adam) (for the released CIFAR setting :math:`\eta = 0.1` this gives the
scripts' :math:`\gamma = 1`). The relation caps the look-ahead's first-order decrease
:math:`\eta\, g^\top\mathcal A[g]` at 0.1 for the raw gradient; with the normalized direction
the same cap would read :math:`\eta\gamma = 0.1`. initlab keeps the paper's SGD relation in both
cases (they agree at :math:`\eta = 0.1`); on the depth challenge at :math:`\eta = 0.01`
(100-layer tanh MLP from an orthogonal gain-1 init, seed 0) the looser :math:`\gamma = 10`
trained worse (0.15 against 0.72 test accuracy); ``iters=390`` (one CIFAR epoch at batch 128, the released scripts);
``scale_lr=1e-2`` (the released VGG-19 w/o BN script); ``normalize_grad=True`` (the released SGD
scripts); ``min_scale=0.01``; ``grad_clip=1``.

Where initlab differs from the official code, and where it only looks as if it did:

* **Functional**: the scales are applied through :func:`torch.func.functional_call`; the model is
  never changed while optimizing and is written once at the end (the repo rescales ``p.data``).
  Mathematically the same: the repo's scalar gradient ``<dL/dp, p> ||p0|| / ||p||`` equals
  :math:`\partial L/\partial\alpha`.
* **Norm layers**: scaled by default (``scale_norms=True``), as the official CIFAR code scales
  BatchNorm weights (its BN biases start at 0 and are skipped); ``scale_norms=False`` leaves
  them as they are. Either way they count in :math:`g`, its norm and the look-ahead step.
* **Which tensors**: every trainable tensor with nonzero norm gets a scale, and every trainable
  tensor counts in :math:`g` and the look-ahead. The official code scales the parameters whose
  name holds ``weight`` or ``bias`` and computes :math:`g` over ``Conv2d``, ``Linear``,
  ``BatchNorm2d`` and its Fixup ``Scale``/``Bias`` modules only; on such models (all the CIFAR
  nets of the paper) the two agree. The floor 0 applies to tensors whose leaf name contains
  ``bias``, ``min_scale`` to all others (the official two parameter groups).
* **Arithmetic**: :math:`\partial L/\partial\alpha` comes from autograd in the model's dtype and
  the scale optimizer runs in float64 (the official code: the float32 inner product
  ``<dL/dp, p> ||p0|| / ||p||`` turned into a Python float); runs agree to rounding, which the
  clipped, sign-like Adam steps can amplify over hundreds of iterations.
* **BatchNorm** runs on batch statistics without updating running statistics, dropout off (as the
  repo: ``model.eval()`` plus BN in training mode); the running statistics are untouched because
  functional calls see copies of the buffers.
* **Data**: ``data`` is cycled (a new epoch when it runs out); each iteration draws ``b0, b1`` and,
  on objective steps, ``b2`` (the repo's ``batch_no_overlap=False``). Inputs may be tensors, tuples
  of positional args or dicts of keyword args (as :func:`initlab.trace`); two batches are
  concatenated along dim 0 (dicts key by key). With ``loss_fn=None`` the loss is the model's own
  ``output.loss`` (a transformers model given ``labels``), computed on the concatenated batch.
* **Distributed**: every rank evaluates its own batches; the gradient norm that decides the branch
  and the scale gradients are averaged over ranks (all-reduce) before the step, so all ranks take
  the same branch and end with identical scales. The bound then applies to the mean of the per-rank
  norms (the repo runs on one process with ``DataParallel``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InitlabError, check_choice
from ..graph import is_norm
from ..hooks import eval_mode
from ..placement import check_placement
from ..transaction import transaction
from . import _scales
from ._common import Batches, all_reduce_mean_, norm_param_names, progress_bar

__all__ = ["GradInitResult", "GradInitStep", "gradinit"]


@dataclass(frozen=True)
class GradInitStep:
    """One GradInit iteration.

    Attributes:
        loss: :math:`L(S; \\theta)` on the first batch.
        grad_norm: :math:`\\|g\\|_p` (all-reduced mean under distributed).
        constrained: ``True`` when the norm exceeded gamma and the step lowered the gradient norm.
        lookahead_loss: :math:`L(\\tilde S; \\theta - \\eta A[g])` on objective steps, else NaN.
    """

    loss: float
    grad_norm: float
    constrained: bool
    lookahead_loss: float


@dataclass(frozen=True)
class GradInitResult:
    """Outcome of :func:`gradinit`.

    Attributes:
        scales: final :math:`\\alpha` per scaled parameter name.
        history: one :class:`GradInitStep` per iteration.
        gamma, lr, optimizer: the settings used (gamma resolved from its default).
        skipped: trainable parameters that got no scale (norm layers, zero norm), with the reason.
    """

    scales: dict[str, float]
    history: tuple[GradInitStep, ...]
    gamma: float
    lr: float
    optimizer: str
    skipped: dict[str, str]

    @property
    def losses(self) -> list[float]:
        return [h.loss for h in self.history]

    @property
    def grad_norms(self) -> list[float]:
        return [h.grad_norm for h in self.history]


def default_gamma(lr: float, optimizer: str) -> float:
    """The paper's relation of the gradient bound and the learning rate.

    :math:`\\eta\\gamma^2 = 0.1` for SGD, :math:`\\eta\\gamma = 0.1` for Adam.

    >>> default_gamma(0.1, "sgd"), default_gamma(1e-3, "adam")
    (1.0, 100.0)
    """
    return math.sqrt(0.1 / lr) if optimizer == "sgd" else 0.1 / lr


class _RescaleAdam:
    r"""The official ``RescaleAdam`` on a vector of scalars :math:`\alpha`.

    Per scalar, with :math:`g` the gradient clipped to ``[-grad_clip, grad_clip]``, :math:`k` the
    kind of step (constraint or objective), :math:`t_k` the steps of that kind and
    :math:`t = t_c + t_o` all steps so far (this one included):

    .. math::
        m_k \leftarrow \beta_1 m_k + (1-\beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad
        \alpha \leftarrow \max\Big(\alpha - \frac{\tau}{1-\beta_1^{t_k}}
        \frac{m_k}{\sqrt{v/(1-\beta_2^{t})}+\epsilon}, \underline\alpha\Big).

    Two first moments, ONE second moment updated on every step. A scalar that reached 0 (a bias
    at its floor) is skipped from then on, as the official code skips tensors of zero norm.
    """

    def __init__(self, n: int, lr: float, floor: torch.Tensor, grad_clip: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:  # fmt: skip
        self.lr, self.floor, self.clip, self.betas, self.eps = lr, floor, grad_clip, betas, eps
        zeros = torch.zeros(n, dtype=torch.float64, device=floor.device)
        self.m = {True: zeros.clone(), False: zeros.clone()}
        self.v = zeros.clone()
        self.t = {True: zeros.clone(), False: zeros.clone()}

    def step(self, alpha: torch.Tensor, grad: torch.Tensor, constraint: bool) -> None:
        a = alpha.detach().to(torch.float64)
        active = a != 0
        g = grad.to(torch.float64)
        if self.clip > 0:
            g = g.clamp(-self.clip, self.clip)
        b1, b2 = self.betas
        self.t[constraint] += active
        m = self.m[constraint]
        m.copy_(torch.where(active, b1 * m + (1 - b1) * g, m))
        self.v.copy_(torch.where(active, b2 * self.v + (1 - b2) * g * g, self.v))
        t_kind = self.t[constraint].clamp(min=1)  # inactive scalars: any count, result unused
        t_all = (self.t[True] + self.t[False]).clamp(min=1)
        denom = (self.v / (1 - b2**t_all)).sqrt() + self.eps
        new = torch.maximum(a - self.lr / (1 - b1**t_kind) * m / denom, self.floor)
        alpha.data.copy_(torch.where(active, new, a).to(alpha.dtype))


def gradinit(
    model: nn.Module,
    loss_fn: _scales.LossFn | None,
    data: Iterable[Any],
    *,
    lr: float,
    optimizer: Literal["sgd", "adam"] = "sgd",
    iters: int = 390,
    gamma: float | None = None,
    scale_lr: float = 1e-2,
    min_scale: float = 0.01,
    grad_clip: float = 1.0,
    normalize_grad: bool = True,
    scale_norms: bool = True,
    progress: bool | None = None,
) -> GradInitResult:
    """Learn per-tensor scales by Algorithm 1 of GradInit and write them into ``model``.

    See the module docstring for the algorithm, defaults and every deviation from the official code.

    Args:
        model: the network (already initialized, e.g. by :func:`initlab.init`).
        loss_fn: ``loss_fn(output, target) -> scalar``; ``None``: the model's own ``output.loss``
            (a transformers model whose input dict holds ``labels``).
        data: an iterable of batches (a DataLoader, a list, a generator); it is cycled. A batch is
            an ``(inputs, target)`` pair, where ``inputs`` is anything :func:`initlab.trace`
            accepts (a tensor, a tuple of positional args, a dict of keyword args), or a dict of
            keyword args alone (``model(**batch)``; target ``None``). Each iteration uses two
            batches (three on objective steps), concatenated along dim 0 key by key.
        lr: the learning rate :math:`\\eta` of the training optimizer the init is fitted to.
        optimizer: the training optimizer: ``"sgd"`` (L2 norm) or ``"adam"`` (L1 norm, sign step).
        iters: GradInit iterations :math:`T`.
        gamma: bound on the gradient norm (default from the paper's relation with ``lr``).
        scale_lr: learning rate :math:`\\tau` of the scales (RescaleAdam).
        min_scale: floor of the weights' scales (biases: 0).
        grad_clip: clip of each scale's gradient (0: none).
        normalize_grad: SGD look-ahead with :math:`g/\\|g\\|_2` (the released scripts).
        scale_norms: scale norm-layer parameters too (default, as the official code);
            ``False`` leaves them as they are (they still count in the gradient norm).
        progress: show a progress bar (``None``: when stderr is a TTY).

    Returns:
        :class:`GradInitResult` (scales and history).

    >>> g = torch.Generator().manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> data = [(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
    >>> res = gradinit(net, nn.functional.cross_entropy, data, lr=0.1, iters=5)
    >>> all(s >= 0.01 for s in res.scales.values()), len(res.history)
    (True, 5)
    """
    optimizer = check_choice("optimizer", optimizer, ["sgd", "adam"])  # type: ignore[assignment]
    if not (lr > 0 and math.isfinite(lr)):
        raise InitlabError(
            f"gradinit: lr must be a positive number (the training learning rate), got {lr}"
        )
    if iters < 0 or scale_lr < 0 or min_scale < 0:
        raise InitlabError(
            f"gradinit: iters, scale_lr and min_scale must be >= 0 (got {iters}, {scale_lr}, {min_scale})"
        )
    gamma = default_gamma(lr, optimizer) if gamma is None else float(gamma)
    if not gamma > 0:
        raise InitlabError(f"gradinit: gamma must be > 0, got {gamma}")

    check_placement(model, who="initlab.gradinit")
    if not any(p.requires_grad for p in model.parameters()):
        raise InitlabError("gradinit: the model has no trainable parameter")
    norms = set() if scale_norms else norm_param_names(model)
    s = _scales.select(model, lambda n, p: "norm layer (scale_norms=False)" if n in norms else None)
    p0 = next(iter(s.trainable.values()))
    alpha = torch.ones(len(s.names), dtype=p0.dtype, device=p0.device, requires_grad=True)
    floor = torch.tensor(
        [0.0 if "bias" in n.rsplit(".", 1)[-1] else min_scale for n in s.names], dtype=torch.float64
    )
    opt = _RescaleAdam(len(s.names), scale_lr, floor.to(p0.device), grad_clip)
    batches = Batches(data, "gradinit: data")
    pnorm = 2 if optimizer == "sgd" else 1

    def draw() -> tuple[Any, Any]:
        return _scales.draw(batches, "gradinit")

    def loss_on(
        params: dict[str, torch.Tensor], a: tuple[Any, Any], b: tuple[Any, Any]
    ) -> torch.Tensor:
        x, y = _scales.cat(a[0], b[0], "gradinit"), _scales.cat(a[1], b[1], "gradinit")
        return _scales.loss_of(_scales.forward(model, s, params, x), y, loss_fn, "gradinit")

    history: list[GradInitStep] = []
    # dropout off, norms on batch statistics (running stats go to copies), as the official code
    with transaction(model), eval_mode(model, train_if=is_norm):
        for _ in progress_bar(iters, progress, "gradinit"):
            b0, b1 = draw(), draw()
            theta = _scales.theta(s, alpha)
            loss = loss_on(theta, b0, b1)
            names = list(theta)
            grads = torch.autograd.grad(
                loss, [theta[n] for n in names], create_graph=True, allow_unused=True
            )
            grads = [
                torch.zeros_like(theta[n]) if g is None else g
                for n, g in zip(names, grads, strict=True)
            ]
            if pnorm == 2:
                gnorm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
            else:
                gnorm = sum(g.abs().sum() for g in grads)
            shared = all_reduce_mean_(gnorm.detach().clone().reshape(1)).item()
            if not math.isfinite(shared) or not math.isfinite(loss.item()):
                raise InitlabError(
                    f"gradinit: non-finite loss ({loss.item()}) or gradient norm ({shared}) at "
                    f"iteration {len(history) + 1}; the model diverges at its current init: "
                    "initialize it first (initlab.init) or lower scale_lr"
                )
            if shared > gamma:
                (ga,) = torch.autograd.grad(gnorm, alpha, allow_unused=True)
                ga = torch.zeros_like(alpha) if ga is None else ga
                opt.step(alpha, all_reduce_mean_(ga.detach().clone()), constraint=True)
                history.append(GradInitStep(loss.item(), shared, True, float("nan")))
                continue
            with torch.no_grad():
                if optimizer == "adam":
                    step = [g.sign() for g in grads]
                elif normalize_grad:
                    step = [g / gnorm for g in grads]
                else:
                    step = [g.detach() for g in grads]
            step = [d.detach() for d in step]
            theta2 = {n: theta[n] - lr * d for n, d in zip(names, step, strict=True)}
            new_loss = loss_on(theta2, b0, draw())
            (ga,) = torch.autograd.grad(new_loss / lr, alpha, allow_unused=True)
            ga = torch.zeros_like(alpha) if ga is None else ga
            opt.step(alpha, all_reduce_mean_(ga.detach().clone()), constraint=False)
            history.append(GradInitStep(loss.item(), shared, False, new_loss.item()))
        _scales.write(s, alpha.detach().tolist())
    scales = dict(zip(s.names, alpha.detach().tolist(), strict=True))
    return GradInitResult(scales, tuple(history), gamma, float(lr), optimizer, s.skipped)
