"""TorchRL's ``SoftUpdate`` as one multi-tensor op per step."""
from __future__ import annotations

import torch
from torchrl.objectives import SoftUpdate

from torchrl_sacflow import _fast

__all__ = ["FusedSoftUpdate"]


class FusedSoftUpdate(SoftUpdate):
    """:class:`~torchrl.objectives.SoftUpdate` whose ``step`` is one ``torch._foreach_lerp_`` call.

    The same Polyak update, ``θ̄ ← θ̄ + τ (θ − θ̄)`` (``lerp_`` with weight ``1 − eps``, as the parent
    writes it), over the same source/target pairs, with the same checks. The parent steps each
    (TensorDict of) target with its own ``lerp_`` through tensordict's per-leaf machinery, which
    costs several times the arithmetic (``docs/fast_paths.md``); here the pairs are collected once
    (the parent locks both sides when it is initialised) and updated by one fused op.

    Args:
        loss_module: as :class:`~torchrl.objectives.SoftUpdate`.

    Keyword Args:
        eps (float): ``1 − τ``. Exclusive with ``tau``.
        tau (float): the update weight τ. Exclusive with ``eps``.

    Examples:
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from torchrl.data import Bounded
        >>> from torchrl_sacflow import SACFlowLoss, make_flow_actor
        >>> actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3)
        >>> qvalue = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[8]),
        ...                        in_keys=["observation", "action"])
        >>> loss = SACFlowLoss(actor, qvalue, delay_qvalue=True)
        >>> updater = FusedSoftUpdate(loss, tau=0.005)
        >>> updater.step()
    """

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        sources, targets = self.__dict__.get("_sources_val"), self.__dict__.get("_targets_val")
        cache = self.__dict__.get("_fused_pairs")
        if cache is not None and cache[0] is sources and cache[1] is targets:
            return cache[2], cache[3]
        target_list, source_list = [], []
        for key, source in self._sources.items():
            target = self._targets.get(f"target_{key}")
            if isinstance(source, torch.Tensor):
                target_list.append(target)
                source_list.append(source)
                continue
            for leaf_key, leaf in source.items(True, True):
                target_list.append(target.get(leaf_key))
                source_list.append(leaf)
        if sources is not None and sources.is_locked and targets is not None and targets.is_locked:
            self.__dict__["_fused_pairs"] = (sources, targets, target_list, source_list)
        return target_list, source_list

    def step(self) -> None:
        if not _fast.enabled():
            return super().step()
        if not self.initialized:
            raise Exception(
                f"{self.__class__.__name__} must be "
                f"initialized (`{self.__class__.__name__}.init_()`) before calling step()"
            )
        for name in self._target_names:
            getattr(self.loss_module, name)
        targets, sources = self._pairs()
        if any(target.requires_grad for target in targets):
            raise RuntimeError("the target parameter is part of a graph.")
        with torch.no_grad():  # (mixed devices or dtypes take the op's per-tensor fallback)
            torch._foreach_lerp_(targets, sources, 1 - self.eps)
