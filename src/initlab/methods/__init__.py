"""Data-driven and learned initialization: LSUV, GradInit, MetaInit."""

from .gradinit import GradInitResult, GradInitStep, gradinit
from .lsuv import LSUVLayer, LSUVResult, lsuv
from .metainit import MetaInitResult, gradient_quotient, metainit

__all__ = [
    "GradInitResult",
    "GradInitStep",
    "LSUVLayer",
    "LSUVResult",
    "MetaInitResult",
    "gradient_quotient",
    "gradinit",
    "lsuv",
    "metainit",
]
