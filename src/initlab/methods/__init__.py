"""Data-driven and learned initialization: LSUV, GradInit, MetaInit."""

from .gradinit import GradInitResult, gradinit
from .lsuv import LSUVLayer, LSUVResult, lsuv
from .metainit import MetaInitResult, metainit

__all__ = ["GradInitResult", "LSUVLayer", "LSUVResult", "MetaInitResult", "gradinit", "lsuv", "metainit"]
