"""Skip TorchRL's per-call parameter swap when it would swap the actor's tensors with themselves."""
from __future__ import annotations

import contextlib

from torch import Tensor

from torchrl_sacflow import _fast

__all__ = ["BoundActorParams"]


class BoundActorParams:
    """Mixin for a ``LossModule`` with ``actor_network`` / ``actor_network_params``.

    TorchRL's ``convert_to_functional`` keeps the actor's parameters (the same tensors) in
    ``actor_network_params`` but copies its buffers, and the losses swap the lot into the module
    around every actor evaluation (``to_module``), a fixed cost per call (``docs/fast_paths.md``).
    :meth:`_bind_actor_params` puts the loss's tensors into the
    module once, for good; :meth:`_actor_params` then skips the swap as long as the module still
    holds exactly those tensors (``load_state_dict``, ``.to()``, ``.double()`` update them in place
    and keep it so) and falls back to the swap otherwise.
    """

    def _bind_actor_params(self) -> list[tuple[dict, str, Tensor]]:
        """Bind once; returns ``(module's parameter/buffer dict, name, tensor)`` slots to check."""
        self.actor_network_params.to_module(self.actor_network)
        slots = []
        for key, tensor in self.actor_network_params.items(True, True):
            module = self.actor_network
            for name in key[:-1]:
                module = getattr(module, name)
            table = module._parameters if key[-1] in module._parameters else module._buffers
            slots.append((table, key[-1], tensor))
        return slots

    def _actor_params(self):
        """``actor_network_params.to_module(actor_network)``, skipped when the actor already holds them."""
        slots = getattr(self, "_actor_slots", None) if _fast.enabled() else None
        if slots is not None and all(table.get(name) is tensor for table, name, tensor in slots):
            return contextlib.nullcontext()
        return self.actor_network_params.to_module(self.actor_network, preserve_module_state=False)
