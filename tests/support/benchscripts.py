"""The benchmarks (benchmarks/NAME.py) as their tests use them: run as a user runs them, or imported to call
one of their functions."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def command(name: str, *args) -> list[str]:
    """`python -m benchmarks.NAME ARGS...`, run from the repository root."""
    return [sys.executable, "-m", f"benchmarks.{name}", *map(str, args)]


def run(name: str, *args, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """`python -m benchmarks.NAME ARGS...` in a subprocess from the repository root, output captured as text."""
    return subprocess.run(
        command(name, *args), capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs
    )


def load(name: str):
    """benchmarks/NAME.py imported as a module (its main() does not run)."""
    return importlib.import_module(f"benchmarks.{name}")
