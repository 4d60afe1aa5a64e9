"""Training recipes (hydra entry points). Run one with ``python -m recipes.<name> [overrides]``."""
