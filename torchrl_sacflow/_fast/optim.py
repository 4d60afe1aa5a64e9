"""PyTorch's fused Adam kernel for optimizers left at the default implementation (CPU)."""
from __future__ import annotations

import torch

__all__ = ["_prefer_fused_adam"]

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _prefer_fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    """Switch an ``Adam``/``AdamW`` left at PyTorch's default implementation to its fused kernel.

    Same update rule, one kernel for all tensors instead of ~10 ops per tensor: on CPU the default
    is the per-tensor loop, whose cost grows with the number of tensors (Flow-T's actor has 53;
    ``docs/fast_paths.md``).
    Optimizers configured explicitly (``foreach``/``fused``/``differentiable``/``capturable`` set),
    of another class, or holding tensors the fused kernel does not take are left alone. Returns
    whether it switched. (A checkpoint's ``load_state_dict`` restores the saved flags.)
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    groups = optimizer.param_groups
    if any(
        g.get("foreach") is not None or g.get("fused") or g.get("differentiable") or g.get("capturable")
        for g in groups
    ):
        return False
    params = [p for g in groups for p in g["params"]]
    if not params or any(p.device.type != "cpu" or p.dtype not in _FUSED_DTYPES for p in params):
        return False  # (CUDA is left to the caller: capturable/CUDA-graph setups want their own flags)
    for g in groups:
        g["fused"], g["foreach"] = True, False
    optimizer.defaults["fused"], optimizer.defaults["foreach"] = True, False
    optimizer._step_supports_amp_scaling = True
    return True
