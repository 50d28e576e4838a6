"""The benchmark scripts (benchmarks/NAME.py) as their tests use them: run as a user runs them, or loaded as a
module to call one of their functions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(name: str, *args, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python benchmarks/NAME.py ARGS...` in a subprocess, output captured as text."""
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def load(name: str):
    """benchmarks/NAME.py imported as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
