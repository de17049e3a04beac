"""Parameters already loaded from a checkpoint, and ``"keep"`` rules for them."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .finding import (
    Rules,
)


def initialized_params(model: nn.Module, missing_keys: Iterable[str] | None = None) -> list[str]:
    """Names of the parameters loaded from a checkpoint (to keep when re-initializing the rest).

    Without ``missing_keys``: the parameters transformers (>= 5) marks as loaded,
    ``param._is_hf_initialized = True`` (set on each tensor read from the checkpoint in
    ``core_model_loading.py``, and on tied tensors). The *module* flag of the same name is no use
    here: ``PreTrainedModel._initialize_weights`` sets it on every module it visits, those it has
    just initialized because their weights were missing included. With transformers < 5, which
    marks only modules, pass the loading report instead: ``model, info =
    from_pretrained(..., output_loading_info=True)`` and ``missing_keys=info["missing_keys"]``;
    every parameter not missing counts as loaded.
    """
    if missing_keys is not None:
        missing = set(missing_keys)
        return [n for n, _ in model.named_parameters() if n not in missing]
    return [n for n, p in model.named_parameters() if getattr(p, "_is_hf_initialized", False)]


def skip_initialized_rules(model: nn.Module, missing_keys: Iterable[str] | None = None) -> Rules:
    """``{name: "keep"}`` for every parameter of :func:`initialized_params`; merge it last."""
    return {n: "keep" for n in initialized_params(model, missing_keys)}
