"""The public API: ``initlab.__all__`` exactly, and no public name that hides a submodule."""

from __future__ import annotations

import importlib
import pkgutil
import types

import initlab

PUBLIC = {
    # functions that touch a model or decide for it
    "doctor", "fixup", "gradinit", "init", "lsuv", "metainit", "plan", "skipinit", "tfixup",
    "trace", "zerO_init",
    # facts and files
    "fans", "gain", "load_init", "load_rules", "param_groups", "preset_rules", "save_plan",
    "save_rules",
    # schemes, in place on a tensor
    "constant_", "delta_orthogonal_", "dirac_", "identity_", "kaiming_normal_",
    "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "normal_", "ones_", "orthogonal_",
    "sparse_", "trunc_normal_", "uniform_", "variance_scaling_", "xavier_normal_",
    "xavier_uniform_", "zerO_", "zeros_",
    # the types those return, and the registries
    "Branch", "Fans", "Finding", "GradInitResult", "GradInitStep", "Graph", "InitlabError",
    "LSUVLayer", "LSUVResult", "Layer", "MetaInitResult", "Plan", "PlanEntry", "Report",
    "ResidualResult", "PRESETS", "SCHEMES", "__version__",
}  # fmt: skip


def _packages() -> list[types.ModuleType]:
    """initlab and each of its subpackages (the bench's is skipped: its extras are optional)."""
    found = [initlab]
    for info in pkgutil.walk_packages(initlab.__path__, "initlab."):
        if info.ispkg and not info.name.startswith("initlab.bench"):
            found.append(importlib.import_module(info.name))
    return found


def test_all_is_pinned() -> None:
    assert set(initlab.__all__) == PUBLIC
    assert len(initlab.__all__) == len(PUBLIC)  # no duplicates
    missing = [name for name in initlab.__all__ if not hasattr(initlab, name)]
    assert missing == []


def test_lazy_table_and_type_checking_imports_agree() -> None:
    """``__getattr__``'s table, the ``TYPE_CHECKING`` imports and ``__all__`` name the same
    things from the same modules, and each value really lives in its module."""
    import ast
    import importlib
    from pathlib import Path

    assert set(initlab._HOME) | {"__version__"} == set(initlab.__all__)
    tree = ast.parse(Path(initlab.__file__).read_text())
    guarded = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    typed = {
        a.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    }
    assert typed == initlab._HOME
    for name, module in initlab._HOME.items():
        assert getattr(importlib.import_module(f"initlab.{module}"), name) is getattr(initlab, name)


def test_every_returned_public_type_is_exported() -> None:
    """The result types of the public functions are reachable from ``initlab`` itself."""
    returned = {
        initlab.trace: "Graph",
        initlab.plan: "Plan",
        initlab.doctor: "Report",
        initlab.lsuv: "LSUVResult",
        initlab.gradinit: "GradInitResult",
        initlab.metainit: "MetaInitResult",
        initlab.fixup: "ResidualResult",
        initlab.fans: "Fans",
    }
    for fn, name in returned.items():
        assert fn.__annotations__["return"] in (name, getattr(initlab, name)), fn.__name__
        assert name in initlab.__all__


def test_no_public_name_hides_a_submodule() -> None:
    """``import initlab.X as m`` must give the module X, never a function of the same name."""
    clashes = []
    for package in _packages():
        public = set(getattr(package, "__all__", ()))
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in public:
                clashes.append(f"{package.__name__}.{info.name}")
            attribute = getattr(package, info.name, None)
            if attribute is not None and not isinstance(attribute, types.ModuleType):
                clashes.append(f"{package.__name__}.{info.name} is {attribute!r}")
    assert clashes == []


def test_an_unknown_option_lists_every_real_one() -> None:
    """The error names the scheme's options and all of plan()'s own, read from its signature."""
    import inspect

    import pytest
    import torch
    from torch import nn

    with pytest.raises(initlab.InitlabError, match="unknown option") as info:
        initlab.plan(nn.Linear(2, 2), "normal", example=torch.zeros(1, 2), sdt=0.02)
    message = str(info.value)
    assert "['sdt']" in message and "['mean', 'std']" in message
    own = [
        p.name
        for p in inspect.signature(initlab.plan).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    assert {"example", "preset", "skip_initialized", "graph"} <= set(own)
    assert all(name in message for name in own)
