"""Data-driven, learned and residual-aware initialization, one module per family.

* :mod:`~initlab.methods.lsuv`: LSUV (Mishkin & Matas, 2016);
* :mod:`~initlab.methods.gradinit`: GradInit (Zhu et al., 2021);
* :mod:`~initlab.methods.metainit`: MetaInit (Dauphin & Schoenholz, 2019);
* :mod:`~initlab.methods.skipinit`: SkipInit (De & Smith, 2020) and ReZero (Bachlechner et al., 2020);
* :mod:`~initlab.methods.fixup`: Fixup (Zhang, Dauphin & Ma, 2019);
* :mod:`~initlab.methods.tfixup`: T-Fixup (Huang et al., 2020);
* :mod:`~initlab.methods.zero`: ZerO (Zhao, Schäfer & Anandkumar, 2022);
* :mod:`~initlab.methods._branches`: what the residual methods share (branches, their result).

The functions are public as ``initlab.lsuv``, ``initlab.gradinit``, ``initlab.metainit``,
``initlab.skipinit``, ``initlab.fixup``, ``initlab.tfixup`` and ``initlab.zerO_init``; this
package exports only the types they return, so ``initlab.methods.lsuv`` is always the module.
"""

from ._branches import ResidualResult
from .gradinit import GradInitResult, GradInitStep
from .lsuv import LSUVLayer, LSUVResult
from .metainit import MetaInitResult

__all__ = [
    "GradInitResult",
    "GradInitStep",
    "LSUVLayer",
    "LSUVResult",
    "MetaInitResult",
    "ResidualResult",
]
