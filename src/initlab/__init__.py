"""initlab: initialize PyTorch networks so they start training well."""

from .doctor import Finding, Report, doctor
from .errors import InitlabError
from .fans import Fans, fans
from .gains import gain
from .graph import Graph, trace
from .methods import (
    GradInitResult,
    LSUVResult,
    MetaInitResult,
    gradinit,
    lsuv,
    metainit,
)
from .methods.residual import fixup, skipinit, tfixup, zerO_init
from .plan import Plan, PlanEntry, init, plan
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

_RENAMED = {
    "zero_": "initlab.zerO_ (ZerO init) or initlab.zeros_ (fill with 0)",
    "zero_init": "initlab.zerO_init (ZerO for a whole residual network)",
}


def __getattr__(name: str) -> object:
    """Old names that read like "zeros" but meant ZerO: point to the new ones."""
    if name in _RENAMED:
        raise AttributeError(f"initlab.{name} was renamed: use {_RENAMED[name]}")
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "SCHEMES",
    "Fans",
    "Finding",
    "GradInitResult",
    "Graph",
    "InitlabError",
    "LSUVResult",
    "MetaInitResult",
    "Plan",
    "PlanEntry",
    "Report",
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
