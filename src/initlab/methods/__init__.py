"""Data-driven, learned and residual-aware initialization, one module per family.

* :mod:`~initlab.methods.lsuv`: LSUV (Mishkin & Matas, 2016);
* :mod:`~initlab.methods.gradinit`: GradInit (Zhu et al., 2021);
* :mod:`~initlab.methods.metainit`: MetaInit (Dauphin & Schoenholz, 2019);
* :mod:`~initlab.methods.residual`: SkipInit, ReZero, Fixup, T-Fixup and ZerO.

The functions are public as ``initlab.lsuv``, ``initlab.gradinit``, ``initlab.metainit``,
``initlab.skipinit``, ``initlab.fixup``, ``initlab.tfixup`` and ``initlab.zerO_init``; this
package exports only the types they return, so ``initlab.methods.lsuv`` is always the module.
"""

from .gradinit import GradInitResult, GradInitStep
from .lsuv import LSUVLayer, LSUVResult
from .metainit import MetaInitResult
from .residual import ResidualResult

__all__ = [
    "GradInitResult",
    "GradInitStep",
    "LSUVLayer",
    "LSUVResult",
    "MetaInitResult",
    "ResidualResult",
]
