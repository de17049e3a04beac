"""Short training runs on the held-out zoo (issue #14): ``initlab.init``'s default against each
model's own init after 200 Adam steps, on the architectures of ``zoo.py`` that the models suite
does not train.

Every causal LM and image classifier of ``zoo.py``'s specs (2 layers, width 64), run as
``initlab bench --suite models`` runs its rows (``initlab.bench.architectures.run_one``): US first
names as next-character blocks (28 symbols) or digits as 32x32 images (10 classes); Adam lr 1e-3,
batch 32, 200 steps; the held-out loss, mean ± standard error over the seeds. A row passes when
initlab's held-out loss is at most the own init's plus one standard error of the difference.
About 15 s per model and seed on one thread (both inits)::

    PYTHONPATH=src python benchmarks/zoo_training.py                 # every LM and classifier
    PYTHONPATH=src python benchmarks/zoo_training.py --models opt,deit --seeds 3

``--zoo vision`` trains ``vision_zoo.py``'s torchvision-style classifiers instead (their authors'
init in the constructor: Kaiming fan-out convs, N(0, 0.01) heads), the same way (about 7 min)::

    PYTHONPATH=src python benchmarks/zoo_training.py --zoo vision
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

from initlab.bench import architectures as A

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vision_zoo  # the torchvision-style models
import zoo  # the specs (its folder is on sys.path)

KINDS = ("lm", "vision")
"""The kinds trained here: the suite's tasks fit them as they are (masked LMs and seq2seq models
need their own targets)."""


def architecture(name: str) -> A.Architecture:
    """The zoo model ``name`` as one of the models suite's architectures."""
    spec = zoo.SPECS[name]
    vision = spec.kind == "vision"

    def build(classes: int) -> torch.nn.Module:
        return A.hf_model(spec.cls, spec.config, spec.kwargs, classes, vision=vision, special_id=0)

    return A.Architecture(name, spec.kind, build)


def vision_zoo_architecture(name: str) -> A.Architecture:
    """``vision_zoo.py``'s model ``name`` (10 classes, 32x32) as a models-suite architecture."""
    if name not in vision_zoo.MODELS or name in vision_zoo.SEGMENTATION:
        raise SystemExit(f"no classifier {name!r} in vision_zoo.py; pick from "
                         f"{', '.join(sorted(set(vision_zoo.MODELS) - vision_zoo.SEGMENTATION))}")  # fmt: skip

    def build(classes: int) -> torch.nn.Module:
        if classes != vision_zoo.CLASSES:
            raise ValueError(
                f"vision_zoo.py's models have {vision_zoo.CLASSES} classes, not {classes}"
            )
        return vision_zoo.MODELS[name]()

    return A.Architecture(name, "vision", build, needs_hf=False)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (0 for one value)."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def verdict(ours: list[float], own: list[float]) -> bool:
    """Whether initlab's mean is at most the own init's plus one standard error of the paired
    difference (seed by seed: both start from the same seed and see the same batches)."""
    diff = [a - b for a, b in zip(ours, own, strict=True)]
    if any(not math.isfinite(d) for d in diff):
        return all(math.isfinite(a) for a in ours)
    m, se = mean_se(diff)
    return m <= se


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", default="", help="comma-separated zoo names (default: every LM and classifier)"
    )
    ap.add_argument("--zoo", choices=("hf", "vision"), default="hf",
                    help="hf: zoo.py's transformers models; vision: vision_zoo.py's CNNs")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.zoo == "vision":
        names = [n for n in args.models.split(",") if n] or [
            n for n in vision_zoo.MODELS if n not in vision_zoo.SEGMENTATION
        ]
        build = vision_zoo_architecture
    else:
        names = [n for n in args.models.split(",") if n] or [
            n for n, s in zoo.SPECS.items() if s.kind in KINDS and n not in A.ARCHITECTURES
        ]
        build = architecture
    tasks = {"lm": A.char_blocks(17), "vision": A.digit_images()}
    print("| model | kind | initlab | own | passes |\n|---|---|---|---|---|", flush=True)
    failed = 0
    for name in names:
        arch = build(name)
        losses: dict[str, list[float]] = {"initlab": [], "own": []}
        try:
            for seed in range(args.seeds):
                for how in losses:
                    out = A.run_one(arch, how, tasks[arch.kind], seed, args.steps)
                    ok = len(out["losses"]) == args.steps
                    losses[how].append(out["val_loss"] if ok else math.nan)
        except Exception as exc:  # a model that does not train here is a row, not a crash
            print(
                f"| {name} | {arch.kind} | error: {type(exc).__name__}: {exc} | | no |", flush=True
            )
            failed += 1
            continue
        passes = verdict(losses["initlab"], losses["own"])
        failed += not passes
        cells = ["{:.3f} ± {:.3f}".format(*mean_se(v)) for v in losses.values()]
        print(f"| {name} | {arch.kind} | {cells[0]} | {cells[1]} | {'yes' if passes else '**no**'} |",
              flush=True)  # fmt: skip
    print(f"\n{len(names) - failed} of {len(names)} pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
