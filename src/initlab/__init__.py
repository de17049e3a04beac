"""initlab: initialize PyTorch networks so they start training well."""

from .connectivity import Fans, fans
from .diagnosis import Finding, Report, doctor
from .errors import InitlabError
from .gains import gain
from .graph import Branch, Graph, Layer, trace
from .methods.gradinit import GradInitResult, GradInitStep, gradinit
from .methods.lsuv import LSUVLayer, LSUVResult, lsuv
from .methods.metainit import MetaInitResult, metainit
from .methods.residual import ResidualResult, fixup, skipinit, tfixup, zero_init
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
    zero_,
    zeros_,
)
from .serialize import load_init, load_rules, save_plan, save_rules

__version__ = "0.1.0"

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
    "zero_",
    "zero_init",
    "zeros_",
]
