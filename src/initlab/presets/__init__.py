r"""Presets: the initialization recipes of well-known model families, as plan rules.

A preset is a function ``fn(model, graph, **options) -> rules`` that looks at the model (its
parameter names, module classes, the number of blocks, each block's index) and returns rules in the
format of :func:`initlab.plan`: one rule per parameter it decides, keyed by the exact
qualified parameter name, so that the recipe is reproduced whatever the other rules say. Parameters
a recipe leaves alone get no rule (the plan's defaults, or ``"keep"`` where the recipe keeps
PyTorch's own default initialization).

=======================  ======================================================================
preset                   what it does (source)
=======================  ======================================================================
``gpt2``                 weights, embeddings N(0, 0.02); residual projections (``c_proj``)
                         N(0, 0.02/sqrt(2L)); biases 0; norms 1/0 (nanoGPT ``model.py``,
                         HF ``modeling_gpt2.py``; Radford et al. 2019)
``megatron``             the same with ``sigma``: ``init_method_normal`` /
                         ``scaled_init_method_normal`` (Megatron-LM ``megatron/core/utils.py``)
``bert`` (``hf``)        N(0, 0.02) for weights and embeddings (padding row 0), biases 0, norms
                         1/0 (HF ``PreTrainedModel._init_weights``, ``modeling_bert.py``; what
                         HF Llama / Mistral / BERT do by default)
``olmo-mitchell``        in-projections, embeddings, head 1/sqrt(fan_in); attn/ff out
                         1/sqrt(2 fan_in (l+1)); cut at 3 sigma (allenai/OLMo ``olmo/model.py``)
``olmo2``                N(0, 0.02) cut at 3 sigma everywhere (OLMo 2; OLMo-core)
``torchtitan``           wq, wk, wv, w1 0.02; wo, w2, w3 0.02/sqrt(2(l+1)); embeddings N(0, 1);
                         head d^-1/2 cut at 3 sigma (pytorch/torchtitan ``models/llama3/model``)
``vit``                  timm '' mode: Linear trunc-normal 0.02, pos_embed 0.02, cls 1e-6
``vit-jax``              timm 'jax' mode: Xavier uniform, head 0, patch conv LeCun normal
``vit-moco``             timm 'moco' mode: Xavier uniform per Q/K/V slice
``resnet-zero-residual`` conv Kaiming normal fan_out; norms 1/0; last norm of each residual
                         branch 0 (torchvision ``models/resnet.py``; Goyal et al. 2017)
``lstm-forget-bias``     LSTM ``bias_ih`` forget gate 1, other biases 0 (Jozefowicz et al. 2015)
=======================  ======================================================================

``L`` (number of blocks) and ``l`` (a block's index from 0) come from the model
(:func:`find_blocks`): the blocks are sibling modules of one class held in an ``nn.ModuleList``
(``transformer.h``, ``model.layers``), an ``nn.ModuleDict`` (torchtitan's ``layers["0"]``), an
``nn.Sequential`` or numbered attributes (``layer0``, ``h_1``). With the traced graph, the group
holding the most residual branches wins and ``l`` is the order in which the forward pass reaches
them; without it, the longest group in the order of its numbers. With no such group, ``L`` is
half the traced number of residual branches (two per transformer block).

Checkpoints: :func:`initialized_params` lists the parameters Hugging Face marks as loaded
(``param._is_hf_initialized``, transformers >= 5; or all but the loading report's
``missing_keys``), and :func:`skip_initialized_rules` turns them into ``"keep"`` rules.

The package: :mod:`~initlab.presets.finding` (blocks and parameter roles),
:mod:`~initlab.presets.callables` (callable rules), one module per family group
(:mod:`~initlab.presets.language`, :mod:`~initlab.presets.vision`,
:mod:`~initlab.presets.recurrent`), :mod:`~initlab.presets.registry` (:data:`PRESETS`,
:func:`preset_rules`) and :mod:`~initlab.presets.checkpoints`.
"""

from __future__ import annotations

from .callables import ForgetGateBias
from .callables import NormalPadded as NormalPadded
from .checkpoints import initialized_params, skip_initialized_rules
from .finding import Blocks, find_blocks, num_blocks
from .finding import Rules as Rules
from .language import bert as bert
from .language import gpt2 as gpt2
from .language import megatron as megatron
from .language import olmo2 as olmo2
from .language import olmo_mitchell as olmo_mitchell
from .language import torchtitan as torchtitan
from .recurrent import lstm_forget_bias as lstm_forget_bias
from .registry import PRESETS, Preset, preset_rules
from .vision import resnet_zero_residual as resnet_zero_residual
from .vision import vit as vit
from .vision import vit_jax as vit_jax
from .vision import vit_moco as vit_moco

__all__ = [
    "PRESETS",
    "Blocks",
    "ForgetGateBias",
    "Preset",
    "find_blocks",
    "initialized_params",
    "num_blocks",
    "preset_rules",
    "skip_initialized_rules",
]
