"""Training recipes (hydra entry points). Run one with ``python -m recipes.<name> [overrides]``.

Importing the package sets libgomp's spin count before torch loads (unless the user chose an
OpenMP wait setting): with ``threads=auto`` the learner uses every core, and idle OpenMP threads
that spin ~300 000 iterations (the default) stall every parallel region when another process takes
a core; 3 000 keeps the idle two-thread speed-up (1.67x vs 1.65-1.73x) and halves that loss
(0.71x vs 0.48-0.54x of one thread): ``benchmarks/results/learner_threads.md``.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")
