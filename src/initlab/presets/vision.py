"""Presets of vision families: timm's ViT modes and torchvision's zero-residual ResNet."""

from __future__ import annotations

import math

from torch import nn

from ..errors import InitlabError
from ..graph import Graph, is_norm
from .finding import (
    Rules,
    _named_params,
    _norm_rules,
    _normal,
    _trunc_abs,
    _uniform,
)


def _vit_tokens(model: nn.Module) -> Rules:
    rules: Rules = {}
    for n, _, leaf, _ in _named_params(model):
        if leaf == "pos_embed":
            rules[n] = _trunc_abs(0.02)
        elif leaf in ("cls_token", "reg_token", "dist_token"):
            rules[n] = _normal(1e-6)
    return rules


def _vit(model: nn.Module, mode: str, head_bias: float) -> Rules:
    rules: Rules = _norm_rules(model)
    for n, m, leaf, p in _named_params(model):
        mod = n.rpartition(".")[0]
        if isinstance(m, nn.Linear):
            is_head = mod.startswith("head")
            if leaf == "weight":
                if mode == "":
                    rules[n] = _trunc_abs(0.02)
                elif mode == "jax" and is_head:
                    rules[n] = "zeros"
                elif mode == "moco" and "qkv" in mod:  # Xavier per Q, K, V slice
                    rules[n] = _uniform(math.sqrt(6.0 / (p.shape[0] // 3 + p.shape[1])))
                else:  # Xavier uniform on the whole matrix (a fused qkv included)
                    rules[n] = _uniform(math.sqrt(6.0 / (p.shape[0] + p.shape[1])))
            elif leaf == "bias":
                if mode == "jax" and is_head:
                    rules[n] = ("constant", {"val": float(head_bias)})
                elif mode == "jax" and "mlp" in mod:
                    rules[n] = _normal(1e-6)
                else:
                    rules[n] = "zeros"
        elif isinstance(m, nn.Conv2d) and mode == "jax":
            rules[n] = "lecun_normal" if leaf == "weight" else "zeros"
        elif isinstance(m, nn.Conv2d):
            rules[n] = "keep"  # timm leaves the patch embedding at PyTorch's default
    rules.update(_vit_tokens(model))
    return rules


def vit(model: nn.Module, graph: Graph | None = None) -> Rules:
    """timm ViT, ``weight_init=''``: Linear ``trunc_normal_(std=.02)``, biases 0, patch conv kept.

    ``pos_embed`` ``trunc_normal_(std=.02)``, ``cls_token`` / ``reg_token`` N(0, 1e-6); norms 1/0.
    Source: Dosovitskiy et al. 2021; huggingface/pytorch-image-models
    ``timm/models/vision_transformer.py`` (``VisionTransformer.init_weights``,
    ``init_weights_vit_timm``). timm's ``fix_init`` (proj / sqrt(2 l)) is not applied.
    """
    return _vit(model, "", 0.0)


def vit_jax(model: nn.Module, graph: Graph | None = None, *, nlhb: bool = False,
            num_classes: int | None = None) -> Rules:  # fmt: skip
    r"""timm ViT, ``weight_init='jax'`` (the original JAX/Flax big_vision init).

    Linear Xavier uniform (bound :math:`\sqrt{6/(n_{in}+n_{out})}`, a fused ``qkv`` as one
    matrix); MLP biases N(0, 1e-6), other biases 0; the head weight 0 and bias 0 (``nlhb=True``:
    :math:`-\log C`); patch conv LeCun normal (truncated at 2 sigma, std corrected); ``pos_embed``
    0.02, ``cls_token`` 1e-6. Source: huggingface/pytorch-image-models
    ``timm/models/vision_transformer.py`` (``init_weights_vit_jax``, ``lecun_normal_`` in
    ``timm/layers/weight_init.py``).
    """
    head_bias = 0.0
    if nlhb:
        heads = [
            m for n, m in model.named_modules() if n.startswith("head") and isinstance(m, nn.Linear)
        ]
        c = num_classes or (heads[-1].out_features if heads else None)
        if not c:
            raise InitlabError(
                "vit-jax with nlhb=True needs num_classes= (no Linear named 'head' found)"
            )
        head_bias = -math.log(c)
    return _vit(model, "jax", head_bias)


def vit_moco(model: nn.Module, graph: Graph | None = None) -> Rules:
    r"""timm ViT, ``weight_init='moco'`` (MoCo v3): Xavier uniform, ``qkv`` per Q/K/V slice.

    ``qkv``: bound :math:`\sqrt{6 / (n_{out}/3 + n_{in})}`; other Linear Xavier uniform; biases 0;
    patch conv kept; ``pos_embed`` 0.02, ``cls_token`` 1e-6. Source: Chen et al. 2021;
    huggingface/pytorch-image-models ``timm/models/vision_transformer.py`` (``init_weights_vit_moco``);
    facebookresearch/moco-v3 ``vits.py``. Deviation: moco-v3 also re-inits the patch conv
    (Xavier over ``3*16*16`` and ``embed_dim``) and uses sin-cos position embeddings; timm does not,
    and we follow timm.
    """
    return _vit(model, "moco", 0.0)


def resnet_zero_residual(model: nn.Module, graph: Graph | None = None) -> Rules:
    """torchvision ResNet with ``zero_init_residual=True``.

    Conv ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` (std sqrt(2 / fan_out)); norms
    1/0; the last norm of every residual branch (``bn3`` of Bottleneck, ``bn2`` of BasicBlock:
    found from the traced branches, else by those names) weight 0, so each block starts as the
    identity; the ``fc`` head left at PyTorch's default (``keep``), as torchvision does.

    Source: Goyal et al. 2017, "Accurate, Large Minibatch SGD"; pytorch/vision
    ``torchvision/models/resnet.py`` (``ResNet.__init__``).
    """
    rules: Rules = _norm_rules(model)
    last_norms: set[str] = set()
    if graph is not None:
        last_norms = {
            b.last
            for b in graph.branches
            if b.last in graph.layers and graph.layers[b.last].kind == "norm"
        }
    if not last_norms:
        for n, m in model.named_modules():
            cls = type(m).__name__
            if cls == "Bottleneck" and hasattr(m, "bn3"):
                last_norms.add(f"{n}.bn3" if n else "bn3")
            elif cls == "BasicBlock" and hasattr(m, "bn2"):
                last_norms.add(f"{n}.bn2" if n else "bn2")
    for n, m, leaf, _ in _named_params(model):
        if isinstance(m, nn.modules.conv._ConvNd):
            rules[n] = (
                ("kaiming_normal_fan_out", {"gain": math.sqrt(2.0)})
                if leaf == "weight"
                else "zeros"
            )
        elif isinstance(m, nn.Linear):
            rules[n] = "keep"
        elif is_norm(m) and leaf == "weight" and n.rpartition(".")[0] in last_norms:
            rules[n] = "zeros"
    return rules
