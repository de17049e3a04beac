"""The registry: :data:`PRESETS` (name, function, source, options) and :func:`preset_rules`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InitlabError, check_choice
from ..graph import Graph
from .finding import (
    Rules,
)
from .language import bert, gpt2, megatron, olmo2, olmo_mitchell, torchtitan
from .recurrent import lstm_forget_bias
from .vision import resnet_zero_residual, vit, vit_jax, vit_moco


@dataclass(frozen=True)
class Preset:
    """A registered preset: ``fn(model, graph, **options) -> rules`` and where it comes from."""

    name: str
    fn: Callable[..., Rules]
    source: str
    options: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("gpt2", gpt2, "karpathy/nanoGPT model.py; transformers models/gpt2/modeling_gpt2.py",
               ("sigma", "n_layers")),
        Preset("megatron", megatron, "NVIDIA/Megatron-LM megatron/core/utils.py", ("sigma", "n_layers")),
        Preset("bert", bert, "transformers modeling_utils.py, models/bert/modeling_bert.py", ("sigma",)),
        Preset("hf", bert, "transformers modeling_utils.py (PreTrainedModel._init_weights)", ("sigma",)),
        Preset("olmo-mitchell", olmo_mitchell, "allenai/OLMo olmo/model.py (init_fn=mitchell)", ("cutoff",)),
        Preset("olmo2", olmo2, "allenai/OLMo olmo/model.py (init_fn=normal, cutoff 3); OLMo-core",
               ("sigma", "cutoff")),
        Preset("torchtitan", torchtitan, "pytorch/torchtitan torchtitan/models/llama3/model/model.py",
               ("sigma", "depth_init", "cutoff")),
        Preset("vit", vit, "pytorch-image-models timm/models/vision_transformer.py (mode '')"),
        Preset("vit-jax", vit_jax, "pytorch-image-models timm/models/vision_transformer.py (mode 'jax')",
               ("nlhb", "num_classes")),
        Preset("vit-moco", vit_moco, "pytorch-image-models timm/models/vision_transformer.py (mode 'moco')"),
        Preset("resnet-zero-residual", resnet_zero_residual,
               "pytorch/vision torchvision/models/resnet.py (zero_init_residual=True)"),
        Preset("lstm-forget-bias", lstm_forget_bias, "Jozefowicz et al. 2015", ("value",)),
    ]
}  # fmt: skip


def preset_rules(name: str, model: nn.Module, graph: Graph | None = None, **options: Any) -> Rules:
    """The rules of preset ``name`` for ``model`` (a dict for :func:`initlab.plan`'s ``rules=``).

    Args:
        name: a :data:`PRESETS` name.
        model: the model the rules are for (names, classes and depth are read from it).
        graph: its traced graph; some presets use it to find heads and residual branches.
        **options: the preset's options (e.g. ``sigma=0.02``, ``depth_init=False``).

    >>> import torch
    >>> from initlab.planning import init
    >>> net = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
    >>> p = init(net, example=torch.tensor([[1, 2]]), rules=preset_rules("gpt2", net, n_layers=1))
    >>> p["1.weight"].std, p["0.weight"].std
    (0.02, 0.02)
    """
    preset = PRESETS[check_choice("preset", name, list(PRESETS))]
    extra = sorted(set(options) - set(preset.options))
    if extra:
        raise InitlabError(
            f"preset {name!r} has no option(s) {extra}; it accepts {list(preset.options) or 'none'}"
        )
    return preset.fn(model, graph, **options)
