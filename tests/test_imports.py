"""What importing initlab loads: nothing heavy, and never the bench or the command line."""

from __future__ import annotations

import json
import subprocess
import sys

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
