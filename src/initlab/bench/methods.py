"""The initialization methods the bench compares, each a function ``fn(model, ctx) -> None``.

Every method gets the same :class:`Context` (model input example, training batches, loss, recipe
and seed) and initializes the model in place. Methods whose implementation is missing from this
installation are reported as unavailable, never dropped silently.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..graph import is_norm
from ..planning import init as initlab_init


@dataclass(frozen=True)
class Recipe:
    """One training recipe, the same for every method of a comparison.

    ``warmup_epochs`` ramps the learning rate linearly from 0; ``extra_epochs`` trains longer
    (GradInit's table's "+1 epoch" rows, which give the baseline GradInit's extra compute): those epochs
    come first (at constant lr, or warming up), then the ``epochs`` of the usual schedule.
    ``cosine`` anneals the lr to 0 per step over those ``epochs`` (the GradInit CIFAR recipe).
    ``clip`` bounds the gradient's L2 norm per step (0: off; GradInit's scripts clip at 1 for
    nets without BatchNorm). ``bias_lr_mult`` multiplies the lr of parameters whose name holds
    ``bias`` or ``scale`` (Fixup's recipe and GradInit's for no-BN ResNets: lr / 10). Weight decay
    skips norm-layer parameters. ``augment`` applies the CIFAR augmentation of GradInit's scripts
    (random crop with 4-pixel padding, horizontal flip, Cutout 16) to image batches.
    """

    lr: float = 0.01
    momentum: float = 0.9
    batch: int = 64
    epochs: int = 5
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    extra_epochs: int = 0
    cosine: bool = False
    clip: float = 0.0
    bias_lr_mult: float = 1.0
    augment: bool = False


@dataclass
class Context:
    """What a method may use: an example batch, a stream of training batches, the loss, the recipe."""

    example: torch.Tensor
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    recipe: Recipe
    seed: int
    num_classes: int = 10
    steps_per_epoch: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    """Per-suite method settings: ``base`` (``"kaiming"`` or ``"initlab"``, the init the learned
    methods start from) and ``gradinit_scale_lr`` (the scale lr of GradInit's released script for
    the architecture)."""

    @property
    def budget(self) -> int:
        """Iterations a learned method gets: one epoch's worth of steps, the '+1 epoch' budget.

        GradInit's released CIFAR scripts run 390 iterations, one epoch at batch 128; the bench
        gives every learned method (GradInit, MetaInit) the same one-epoch budget so that it
        compares fairly with the Kaiming '+1 epoch' rows.
        """
        return self.steps_per_epoch


def torch_default(model: nn.Module, ctx: Context) -> None:
    """PyTorch's own defaults (Kaiming-uniform with a=sqrt(5)): leave the model as built."""


def kaiming(model: nn.Module, ctx: Context) -> None:
    """The papers' baseline: ``torch.nn.init.kaiming_normal_`` (fan_in, ReLU gain) on every
    conv/linear weight, biases 0, norms 1/0; exactly what a practitioner writes by hand."""
    g = torch.Generator().manual_seed(ctx.seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                w = torch.empty(m.weight.shape)  # drawn on the CPU generator, whatever the device
                nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif is_norm(m) and getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()


def initlab_auto(model: nn.Module, ctx: Context) -> None:
    """``initlab.init(model, example=...)``: the default policy (see :func:`initlab.plan.plan`)."""
    initlab_init(model, example=ctx.example, seed=ctx.seed)


def initlab_zero_residual(model: nn.Module, ctx: Context) -> None:
    """``initlab.init`` with the residual branch ends zeroed (zero_module / zero_init_residual)."""
    initlab_init(model, example=ctx.example, seed=ctx.seed, rules={"residual_out": "zeros"})


def _batches(ctx: Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return itertools.cycle(list(ctx.batches()))


def lsuv(model: nn.Module, ctx: Context) -> None:
    """LSUV (Mishkin & Matas 2016) after initlab's orthogonal pre-init, on one training batch."""
    from ..methods.lsuv import lsuv as run

    x, _ = next(iter(ctx.batches()))
    run(model, x, seed=ctx.seed, progress=False)


def _base(model: nn.Module, ctx: Context) -> None:
    """The init a learned method starts from: the suite's ``base`` option (default initlab's)."""
    (kaiming if ctx.options.get("base") == "kaiming" else initlab_auto)(model, ctx)


def _halves(ctx: Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches cut in two: GradInit's S is two half-batches (the official loader
    has batch size ``batch / 2``), so S holds one training batch's worth of examples."""
    for x, y in _batches(ctx):
        if len(x) < 2:  # a last batch of one example cannot be halved
            yield x, y
            continue
        h = len(x) // 2
        yield x[:h], y[:h]
        yield x[h:], y[h:]


def gradinit(model: nn.Module, ctx: Context) -> None:
    """The suite's base init, then GradInit (Zhu et al. 2021) for the recipe's optimizer and lr:
    SGD target, eta = the training lr, gamma from eta (1 at lr 0.1, the scripts' value),
    normalized direction, min scale 0.01, the script's scale lr for the architecture (option
    ``gradinit_scale_lr``, default 1e-2), norm gammas scaled (the official code's default), one
    epoch of iterations on half-batches."""
    from ..methods.gradinit import gradinit as run

    _base(model, ctx)
    run(model, ctx.loss_fn, _halves(ctx), lr=ctx.recipe.lr, optimizer="sgd", iters=ctx.budget,
        scale_lr=ctx.options.get("gradinit_scale_lr", 1e-2), progress=False)  # fmt: skip


def metainit(model: nn.Module, ctx: Context) -> None:
    """The suite's base init, then MetaInit (Dauphin & Schoenholz 2019) as in the paper: random
    N(0, 1) inputs and random labels, lr 0.1, momentum 0.9; iterations: the one-epoch budget."""
    from ..methods.metainit import metainit as run

    _base(model, ctx)
    shape = (ctx.recipe.batch, *ctx.example.shape[1:])
    run(model, ctx.loss_fn, None, iters=ctx.budget, input_shape=shape,
        num_classes=ctx.num_classes, seed=ctx.seed, progress=False)  # fmt: skip


def zer_o(model: nn.Module, ctx: Context) -> None:
    """ZerO (Zhao et al. 2022) for the whole model."""
    from ..methods.zero import zerO_init

    zerO_init(model, ctx.example)


def fixup(model: nn.Module, ctx: Context) -> None:
    """Fixup (Zhang et al. 2019)."""
    from ..methods.fixup import fixup as run

    run(model, ctx.example, seed=ctx.seed)


def skipinit(model: nn.Module, ctx: Context) -> None:
    """initlab.init, then SkipInit (De & Smith 2020): a zero scalar on every residual branch."""
    from ..methods.skipinit import skipinit as run

    initlab_init(model, example=ctx.example, seed=ctx.seed)
    run(model, ctx.example)


METHODS: dict[str, Callable[[nn.Module, Context], None]] = {
    "torch-default": torch_default,
    "kaiming": kaiming,
    "initlab": initlab_auto,
    "initlab-zero-residual": initlab_zero_residual,
    "lsuv": lsuv,
    "gradinit": gradinit,
    "metainit": metainit,
    "zerO": zer_o,
    "fixup": fixup,
    "skipinit": skipinit,
}
