"""Benchmarks of torchrl_sacflow, run as ``python -m benchmarks.<name>`` (learning experiments) and
``python -m benchmarks.perf.<name>`` (speed questions); the shared sweep driver is :mod:`benchmarks.sweep`."""
