"""The layout's rules, checked on the code as it is (README, "Where things are")."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_room_imports_only_the_rooms_below_it():
    """import-linter's layers contract in pyproject.toml (`lint-imports`), function-level imports included."""
    r = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def test_no_import_cycle_between_modules():
    """No module imports (directly or through others) a module that imports it back, lazily or not."""
    import grimp

    graph = grimp.build_graph("release", "analysis", "contracts", "simulation")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert not cycles, cycles
