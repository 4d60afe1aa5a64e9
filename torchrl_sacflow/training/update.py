"""One SAC gradient step: critic every call, actor and α every ``policy_delay`` calls, then targets.

Kept deliberately small: it is what throughput benchmarks time and what ``torch.compile`` sees.
No ``.item()`` inside (metrics come back as detached 0-d tensors), no logging, no sampling.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule
from torchrl.objectives.utils import TargetNetUpdater

from torchrl_sacflow import _fast
from torchrl_sacflow._fast.optim import _prefer_fused_adam

__all__ = ["SACUpdate", "compile_options"]


def compile_options(mode: str | None = None) -> dict[str, Any]:
    """Inductor options for compiling an SAC step: ``mode``'s own, plus ``fallback_random``.

    ``fallback_random`` makes compiled code draw its random numbers with ATen's generators, as
    eager code does: the flow rollout's noise is then the same compiled or not (for a given seed),
    and it is much cheaper on CPU, where inductor's own per-element RNG cost ~1-2 ms for a
    512 × 6 draw (10 ms of a 45 ms Flow-G update). Pass the result as ``torch.compile(fn,
    options=...)`` (``torch.compile`` takes a mode or options, not both).
    """
    from torch._inductor import list_mode_options

    options = dict(list_mode_options(mode)) if mode not in (None, "default") else {}
    options["fallback_random"] = True
    return options

def _slow_cpu_bf16() -> bool:
    """Whether bfloat16 matmuls on this CPU fall back to slow generic code: PyTorch's CPU kernels run
    bfloat16 GEMMs natively only from AVX-512 (with BF16 / AMX) up; on an AVX2 CPU they measured
    ~1 GFLOP/s (issue 17). Only asked when CUDA is not available."""
    if torch.cuda.is_available():
        return False
    return not torch.backends.cpu.get_cpu_capability().upper().startswith(("AVX512", "AMX"))


#: ``SACUpdate(autocast=...)`` choices: the lower-precision dtype of the loss forwards.
AUTOCAST_DTYPES = {None: None, "bf16": torch.bfloat16}


class SACUpdate:
    """A callable SAC update ``batch -> TensorDict`` of detached scalar metrics.

    Each call takes one critic step (then the target update, if any); every ``policy_delay``-th
    call, starting with the first, it also takes one actor step and one temperature step. The actor
    step runs after the critic step and so sees the freshly updated critic (CleanRL's order).

    Args:
        loss_module (LossModule): a SAC-style loss with ``actor_loss(td) -> (loss, {"log_prob"})``,
            ``alpha_loss(log_prob)``, a critic loss ``qvalue_loss(td)`` (e.g. ``CrossQLoss``) or
            ``qvalue_v2_loss(td)`` (``SACLoss``/``SACFlowLoss``), and ``log_alpha``. With
            ``compile``, a loss whose ``actor_loss_stages`` property gives ``(draw, min_q,
            objective)`` (:attr:`SACFlowLoss.actor_loss_stages
            <torchrl_sacflow.objectives.SACFlowLoss.actor_loss_stages>`) has the draw and the
            objective compiled apart and ``min_q`` run eagerly between them; any other loss has
            ``actor_loss`` compiled whole.

    Keyword Args:
        actor_optim, critic_optim (torch.optim.Optimizer): over the loss module's actor / critic
            parameters (:func:`~torchrl_sacflow.training.make_optimizers`).
        alpha_optim (torch.optim.Optimizer, optional): over ``log_alpha``; ``None`` keeps α fixed.
        target_updater (TargetNetUpdater, optional): e.g. ``SoftUpdate``; stepped after every critic
            step. ``None`` for critics without target networks (CrossQ).
        policy_delay (int): actor/α update period in critic steps. Default 1 (SAC); CrossQ uses 3.
        compile (bool or str): ``torch.compile`` the critic and actor steps (a string is the
            compile mode, e.g. ``"reduce-overhead"``), with :func:`compile_options` (ATen's RNG in
            compiled code). Default ``False``.
        fused_adam (bool): run CPU ``Adam``/``AdamW`` optimizers that were built with PyTorch's
            default implementation with the fused kernel instead (same update rule, rounding-level
            differences; much less per-tensor overhead). Default ``True``; a speed path, so off
            with :mod:`torchrl_sacflow._fast` switched off.
        autocast (str, optional): ``"bf16"`` runs the critic and actor loss forwards (and so
            their backward) under ``torch.autocast(<device>, torch.bfloat16)``: matmuls in
            bfloat16, parameters, optimizer state and reductions in float32. Off by default
            (``None``): an option to measure, not a default, until a learning run side by side
            with float32 shows the same return curve (issue 17).

    Returns (per call):
        ``TensorDict`` with ``loss_qvalue``, ``loss_actor``, ``loss_alpha``, ``alpha``, ``entropy``
        (0-d, detached). On calls without an actor step the actor entries repeat the last ones
        (NaN before the first actor step of a resumed run).

    Examples:
        >>> update = SACUpdate(loss, actor_optim=a_opt, critic_optim=q_opt, alpha_optim=al_opt,
        ...                    target_updater=SoftUpdate(loss, tau=0.005))  # doctest: +SKIP
        >>> metrics = update(replay_buffer.sample())  # doctest: +SKIP
    """

    def __init__(
        self,
        loss_module: LossModule,
        *,
        actor_optim: torch.optim.Optimizer,
        critic_optim: torch.optim.Optimizer,
        alpha_optim: torch.optim.Optimizer | None = None,
        target_updater: TargetNetUpdater | None = None,
        policy_delay: int = 1,
        compile: bool | str = False,
        fused_adam: bool = True,
        autocast: str | None = None,
    ) -> None:
        if int(policy_delay) != policy_delay or policy_delay < 1:
            raise ValueError(f"policy_delay must be an integer >= 1, got {policy_delay!r}")
        if autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {sorted(map(str, AUTOCAST_DTYPES))}, got {autocast!r}")
        self.autocast = autocast
        if autocast == "bf16" and _slow_cpu_bf16():
            warnings.warn(
                "SACUpdate(autocast='bf16') on a CPU without native bfloat16 matmuls (torch's CPU capability "
                f"is {torch.backends.cpu.get_cpu_capability()}): bfloat16 matmuls run ~80x slower than float32 "
                "there (0.9 vs 77 GFLOP/s on an AVX2 AMD EPYC, one thread); use it on CPUs with AVX512-BF16/AMX "
                "or on a GPU", stacklevel=2)
        self.loss_module = loss_module
        self.actor_optim = actor_optim
        self.critic_optim = critic_optim
        self.alpha_optim = alpha_optim
        self.target_updater = target_updater
        self.policy_delay = int(policy_delay)
        self.num_calls = 0
        if fused_adam and _fast.enabled():
            for optimizer in (actor_optim, critic_optim, alpha_optim):
                if optimizer is not None:
                    _prefer_fused_adam(optimizer)
        critic_loss = getattr(loss_module, "qvalue_loss", None)
        self._critic_loss = critic_loss if callable(critic_loss) else loss_module.qvalue_v2_loss
        self._actor_metrics: tuple[torch.Tensor, ...] | None = None
        # Only the loss computations (forward, and through AOT autograd their backward) are
        # compiled; zero_grad/step stay eager (the optimizer step is a graph break anyway, and the
        # fused Adam kernel is already one call), so the compiled regions have fewer breaks and
        # guards to check on every call.
        self.critic_losses = self._critic_losses
        self.actor_losses = self._actor_losses
        if compile:
            options = compile_options(compile if isinstance(compile, str) else None)
            self.critic_losses = torch.compile(self._critic_losses, options=options)
            stages = getattr(loss_module, "actor_loss_stages", None)  # what the loss says splits
            if stages is not None:
                # the actor's draw and the loss compiled, the detached critics between them eager
                # (they run eagerly anyway: _MLPEnsemble.q); a compiled actor_loss would instead
                # break at that call four frames deep and resume in four more compiled frames,
                # each with its own guard checks
                draw, self._actor_min_q, objective = stages
                self._actor_draw_compiled = torch.compile(self._draw_stage(draw), options=options)
                self._actor_tail_compiled = torch.compile(self._tail_stage(objective), options=options)
                self.actor_losses = self._split_actor_losses
            else:
                self.actor_losses = torch.compile(self._actor_losses, options=options)

    @staticmethod
    def _draw_stage(draw):
        def actor_draw(batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
            action, log_prob, _ = draw(batch)
            return action, log_prob
        return actor_draw

    def _tail_stage(self, objective):
        def actor_tail(batch: TensorDictBase, action: torch.Tensor, log_prob: torch.Tensor,
                       min_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self._reduce_actor(*objective(batch, action, log_prob, min_q))
        return actor_tail

    def _split_actor_losses(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        action, log_prob = self._actor_draw_compiled(batch)
        min_q = self._actor_min_q(batch, action)
        return self._actor_tail_compiled(batch, action, log_prob, min_q)

    def _critic_losses(self, batch: TensorDictBase) -> torch.Tensor:
        return self._critic_loss(batch)[0].mean()

    def _actor_losses(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._reduce_actor(*self.loss_module.actor_loss(batch))

    def _reduce_actor(self, loss_actor: torch.Tensor, metadata: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean actor loss, α loss, detached log-prob)`` from the actor loss and its metadata."""
        log_prob = metadata["log_prob"].detach()
        # a loss may give the temperature another log-density (SACFlowLoss(alpha_entropy="pre_tanh"))
        loss_alpha = self.loss_module.alpha_loss(metadata.get("alpha_log_prob", log_prob).detach()).mean()
        return loss_actor.mean(), loss_alpha, log_prob

    def _precision(self, batch: TensorDictBase):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(batch.device.type if batch.device is not None else "cpu",
                              dtype=AUTOCAST_DTYPES[self.autocast])

    def critic_step(self, batch: TensorDictBase) -> torch.Tensor:
        """One critic gradient step; returns the detached critic loss."""
        with self._precision(batch):
            loss_qvalue = self.critic_losses(batch).float()
        self.critic_optim.zero_grad(set_to_none=True)
        loss_qvalue.backward()
        self.critic_optim.step()
        return loss_qvalue.detach()

    def actor_step(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One actor and one temperature gradient step; returns the detached actor and α losses
        and the entropy estimate ``−mean log p``."""
        with self._precision(batch):
            loss_actor, loss_alpha, log_prob = self.actor_losses(batch)
        loss_actor, loss_alpha, log_prob = loss_actor.float(), loss_alpha.float(), log_prob.float()
        self.actor_optim.zero_grad(set_to_none=True)
        if self.alpha_optim is not None:
            self.alpha_optim.zero_grad(set_to_none=True)
        (loss_actor + loss_alpha).backward()
        self.actor_optim.step()
        if self.alpha_optim is not None:
            self.alpha_optim.step()
        return loss_actor.detach(), loss_alpha.detach(), -log_prob.mean()

    def is_actor_step(self) -> bool:
        """Whether the next call updates the actor."""
        return self.num_calls % self.policy_delay == 0

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        loss_qvalue = self.critic_step(batch)
        if self.target_updater is not None:
            self.target_updater.step()
        if self.is_actor_step():
            self._actor_metrics = self.actor_step(batch)
        self.num_calls += 1
        if self._actor_metrics is None:  # resumed between two actor steps
            nan = loss_qvalue.new_full((), float("nan"))
            self._actor_metrics = (nan, nan, nan)
        loss_actor, loss_alpha, entropy = self._actor_metrics
        return TensorDict(
            {
                "loss_qvalue": loss_qvalue,
                "loss_actor": loss_actor,
                "loss_alpha": loss_alpha,
                "alpha": self.loss_module.log_alpha.detach().exp(),
                "entropy": entropy,
            },
            batch_size=[],
        )

    # The call counter decides the actor schedule, so a resumed run must get it back.
    def state_dict(self) -> dict[str, Any]:
        return {"num_calls": self.num_calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_calls = int(state_dict["num_calls"])
