"""The benchmarks: speed, memory and accuracy measured on this machine, each run from the repository root as
`python -m benchmarks.NAME --help` (the module's docstring says what it measures and prints)."""
