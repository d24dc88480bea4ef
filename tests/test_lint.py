"""The house rules, checked with the tests: ruff on everything, mypy --strict on scheduler/,
on the tests themselves, and on the dashboard generator (whose point is that the SDK's
types catch mistakes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_clean() -> None:
    dirs = [d for d in ("scheduler", "tests", "bench", "grafana") if (ROOT / d).is_dir()]
    proc = run("ruff", "check", *dirs)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = run("mypy", "--strict", "scheduler", "grafana/generate.py", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_import_cycles() -> None:
    """scheduler/ is layered: no import cycle, no function-level import (scripts/import-graph.py
    says what counts as an edge, and how ``if TYPE_CHECKING:`` imports are treated)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import-graph.py")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
