"""initlab: initialize PyTorch networks so they start training well.

The public names below load on first use (PEP 562): ``import initlab`` costs a few milliseconds
and imports neither torch nor anything else heavy, so ``initlab --version`` is instant; the first
``initlab.plan`` (or ``from initlab import plan``) imports the modules it needs. Where each name
lives:

* :mod:`initlab.connectivity` (fans), :mod:`initlab.gains`, :mod:`initlab.rng`,
  :mod:`initlab.errors`, :mod:`initlab.transaction` (the one undo), :mod:`initlab.hooks`,
  :mod:`initlab.nn`: the leaf facts;
* :mod:`initlab.schemes` (tensor schemes) and :mod:`initlab.graph` (the traced structure);
* :mod:`initlab.planning` (rules -> one decision per parameter, and drawing it),
  :mod:`initlab.shard`, :mod:`initlab.presets`, :mod:`initlab.serialize`;
* :mod:`initlab.methods` (LSUV, GradInit, MetaInit, the residual methods) and
  :mod:`initlab.diagnosis` (the doctor);
* :mod:`initlab.bench` (data, models, suites) and :mod:`initlab.cli` on top, never imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time, ``__getattr__`` below
    from .connectivity import Fans, fans
    from .diagnosis import Finding, Report, doctor
    from .errors import InitlabError
    from .gains import gain
    from .graph import Branch, Graph, Layer, trace
    from .methods._branches import ResidualResult
    from .methods.fixup import fixup
    from .methods.gradinit import GradInitResult, GradInitStep, gradinit
    from .methods.lsuv import LSUVLayer, LSUVResult, lsuv
    from .methods.metainit import MetaInitResult, metainit
    from .methods.skipinit import skipinit
    from .methods.tfixup import tfixup
    from .methods.zero import zerO_init
    from .optim import param_groups
    from .planning import Plan, PlanEntry, init, plan
    from .presets import PRESETS, preset_rules
    from .schemes import (
        SCHEMES,
        constant_,
        delta_orthogonal_,
        dirac_,
        identity_,
        kaiming_normal_,
        kaiming_uniform_,
        lecun_normal_,
        lecun_uniform_,
        normal_,
        ones_,
        orthogonal_,
        sparse_,
        trunc_normal_,
        uniform_,
        variance_scaling_,
        xavier_normal_,
        xavier_uniform_,
        zerO_,
        zeros_,
    )
    from .serialize import load_init, load_rules, save_plan, save_rules

__version__ = "0.1.0"

# public name -> the submodule that defines it
_HOME = {
    name: module
    for module, names in {
        "connectivity": ("Fans", "fans"),
        "diagnosis": ("Finding", "Report", "doctor"),
        "errors": ("InitlabError",),
        "gains": ("gain",),
        "graph": ("Branch", "Graph", "Layer", "trace"),
        "methods.gradinit": ("GradInitResult", "GradInitStep", "gradinit"),
        "methods.lsuv": ("LSUVLayer", "LSUVResult", "lsuv"),
        "methods.metainit": ("MetaInitResult", "metainit"),
        "methods._branches": ("ResidualResult",),
        "methods.fixup": ("fixup",),
        "methods.skipinit": ("skipinit",),
        "methods.tfixup": ("tfixup",),
        "methods.zero": ("zerO_init",),
        "optim": ("param_groups",),
        "planning": ("Plan", "PlanEntry", "init", "plan"),
        "presets": ("PRESETS", "preset_rules"),
        "schemes": (
            "SCHEMES", "constant_", "delta_orthogonal_", "dirac_", "identity_", "kaiming_normal_",
            "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "normal_", "ones_",
            "orthogonal_", "sparse_", "trunc_normal_", "uniform_", "variance_scaling_",
            "xavier_normal_", "xavier_uniform_", "zerO_", "zeros_",
        ),
        "serialize": ("load_init", "load_rules", "save_plan", "save_rules"),
    }.items()
    for name in names
}  # fmt: skip


_RENAMED = {
    "zero_": "initlab.zerO_ (ZerO init) or initlab.zeros_ (fill with 0)",
    "zero_init": "initlab.zerO_init (ZerO for a whole residual network)",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines public ``name`` on first use, and cache the value."""
    module = _HOME.get(name)
    if name in _RENAMED:
        raise AttributeError(f"initlab.{name} was renamed: use {_RENAMED[name]}")
    if module is None:
        raise AttributeError(f"module 'initlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "PRESETS",
    "SCHEMES",
    "Branch",
    "Fans",
    "Finding",
    "GradInitResult",
    "GradInitStep",
    "Graph",
    "InitlabError",
    "LSUVLayer",
    "LSUVResult",
    "Layer",
    "MetaInitResult",
    "Plan",
    "PlanEntry",
    "Report",
    "ResidualResult",
    "__version__",
    "constant_",
    "delta_orthogonal_",
    "dirac_",
    "doctor",
    "fans",
    "fixup",
    "gain",
    "gradinit",
    "identity_",
    "init",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "load_init",
    "load_rules",
    "lsuv",
    "metainit",
    "normal_",
    "ones_",
    "orthogonal_",
    "param_groups",
    "plan",
    "preset_rules",
    "save_plan",
    "save_rules",
    "skipinit",
    "sparse_",
    "tfixup",
    "trace",
    "trunc_normal_",
    "uniform_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zerO_",
    "zerO_init",
    "zeros_",
]
