"""What importing initlab loads: nothing heavy, and never the bench or the command line."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

HEAVY = ("torch.distributed.tensor", "matplotlib", "transformers", "initlab.bench", "initlab.cli")


def _loaded_after(code: str) -> set[str]:
    """The modules in ``sys.modules`` after a fresh interpreter runs ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_initlab_loads_nothing_heavy() -> None:
    """Touching every public name imports the whole library, and still none of the heavy modules."""
    loaded = _loaded_after("import initlab\nfor n in initlab.__all__: getattr(initlab, n)")
    assert "initlab.planning" in loaded and "initlab.diagnosis" in loaded  # the probe did run
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_bare_import_and_the_cli_do_not_load_torch() -> None:
    """``import initlab`` resolves names lazily, so ``initlab --version`` never imports torch."""
    loaded = _loaded_after("import initlab, initlab.cli")
    assert "initlab.cli" in loaded
    assert "torch" not in loaded


# ---------------------------------------------------------------------------------------------
# the floors: a module imports only from its own floor or the floors below (README, Architecture)

SRC = Path(initlab_spec.origin).parent if (initlab_spec := find_spec("initlab")) else Path()
FLOORS = {
    "errors": 1, "connectivity": 1, "gains": 1, "rng": 1, "transaction": 1, "hooks": 1, "nn": 1, "placement": 1,
    "optim": 1,
    "schemes": 2, "graph": 2, "materialize": 2,
    "planning": 3, "shard": 3, "presets": 3, "serialize": 3,
    "methods": 4, "diagnosis": 4,
    "bench": 5, "": 5,  # "": the package's __init__, the public API
    "cli": 6, "__main__": 6,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The initlab modules ``name`` imports anywhere in its file (lazy imports included)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # imports under ``if TYPE_CHECKING:`` never run: no dependency
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "initlab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "initlab":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or {target}
    return found - {name}


def _floor(module: str) -> tuple[str, int]:
    key = module.split(".")[1] if "." in module else ""
    assert key in FLOORS, f"{module}: give it a floor in FLOORS (and in README's Architecture)"
    return key, FLOORS[key]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_imports_only_from_its_floor_or_below() -> None:
    graph = _graph()
    assert {
        "initlab.planning",
        "initlab.planning.apply",
        "initlab.cli",
        "initlab.bench.run",
    } <= set(graph)
    upward = [
        f"{m} (floor {_floor(m)[1]}) imports {d} (floor {_floor(d)[1]})"
        for m, deps in graph.items()
        for d in deps
        if _floor(d)[1] > _floor(m)[1]
    ]
    assert upward == []


def test_the_library_knows_no_bench_and_methods_do_not_know_the_doctor() -> None:
    graph = _graph()
    bench_users = sorted(
        m for m, deps in graph.items()
        if _floor(m)[0] not in ("bench", "cli") and any(_floor(d)[0] == "bench" for d in deps)
    )  # fmt: skip
    assert bench_users == []
    crossing = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        for d in deps
        if {_floor(m)[0], _floor(d)[0]} == {"methods", "diagnosis"}
    )
    assert crossing == []


def test_no_import_cycle_between_modules() -> None:
    """Cycles are searched over every import, lazy ones included (a package's ``__init__`` that
    re-exports its own modules is no cycle: those modules never import it back)."""
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d) :], d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
