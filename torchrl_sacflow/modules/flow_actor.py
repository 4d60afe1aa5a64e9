"""The noise-augmented flow rollout as a TorchRL ``ProbabilisticActor`` (docs/algorithm.md §3).

SAC needs ``log π(a|s)``, which the deterministic K-step rollout does not have. Each Euler step is
made Gaussian with a drift correction that keeps the marginal of ``A_1``:

    A_{i+1} = A_i + b_θ(t_i, A_i, s) Δt + σ √Δt ε_i
    b_θ     = v_θ · (1 − t + t σ²/2) / (1 − t)  −  A σ² / (2 (1 − t))

so the joint density of the path ``A_0 .. A_K`` is a product of Gaussians and exact. Its log is
what SAC uses in place of the intractable marginal, plus the tanh and affine-rescale Jacobians.

Pieces:

* :class:`FlowRollout` — the sampler (velocity, K, σ override, action bounds). K and σ are plain
  attributes, so evaluation can sample with another K or σ than training did.
* :class:`FlowPathDistribution` — a ``torch.distributions.Distribution`` over the final action
  that implements ``rsample_and_log_prob`` (what :class:`~torchrl.objectives.SACLoss` calls) and
  ``deterministic_sample`` (the noise-free ODE). ``log_prob`` of an arbitrary action raises.
* :class:`FlowStateModule` — the actor's parameter module: concatenates the observation keys and
  produces log σ (learned state-only head or a fixed value).
* :func:`make_flow_actor` — builds the ``ProbabilisticActor`` in one line.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Distribution
from torchrl.data import Bounded, TensorSpec
from torchrl.modules import ProbabilisticActor

from torchrl_sacflow._fast.direct_actor import DirectProbabilisticActor
from torchrl_sacflow.modules.transformer_velocity import TransformerVelocity
from torchrl_sacflow.modules.velocity import (
    GatedVelocity,
    MLPVelocity,
    VelocityField,
    _run_from,
)

__all__ = [
    "FlowRollout",
    "FlowPathDistribution",
    "FlowStateModule",
    "FlowActor",
    "StateLogStd",
    "make_flow_actor",
    "get_flow_rollout",
    "tanh_log_abs_det_jacobian",
]

NOISE_SCALES = ("sqrt_dt", "dt")
LOG_PROB_KINDS = ("path", "noise")
SIGMA_HEADS = ("state", "velocity")
_LOG_2PI = math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def tanh_log_abs_det_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """``log(1 − tanh(x)²)`` summed over the last dim, in the form that stays finite for large |x|."""
    return (2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)


class StateLogStd(nn.Module):
    """A learned, clamped, state-dependent log σ head.

    σ depends on the state only (never on the intermediate action), which is what the drift
    correction's derivation assumes, and lets the head run once per rollout. The output is squashed
    smoothly into ``[low, high]`` (a hard clamp would cut the gradient at the bounds).

    Args:
        observation_dim (int): flat observation size.
        action_dim (int): action size ``d``.

    Keyword Args:
        hidden_sizes (sequence of int): default ``(256, 256)``.
        log_std_bounds (tuple of float): ``(low, high)`` bounds of log σ. Default ``(-5, 2)``.
        num_steps (int, optional): if given, one σ per Euler step (output ``[..., K, d]``);
            otherwise σ is shared across steps (output ``[..., d]``).
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        num_steps: int | None = None,
    ):
        super().__init__()
        low, high = (float(b) for b in log_std_bounds)
        if not low < high:
            raise ValueError(f"log_std_bounds must satisfy low < high, got {log_std_bounds}")
        self.low, self.high = low, high
        self.action_dim = action_dim
        self.num_steps = num_steps
        out = action_dim * (num_steps or 1)
        layers: list[nn.Module] = []
        last = observation_dim
        for h in hidden_sizes:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, out))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():  # start at the middle of the range, independent of the state
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.zero_()

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(_run_from(self.net, observation))  # (ReLUs in place on its own activations)
        log_std = self.low + 0.5 * (self.high - self.low) * (x + 1.0)
        if self.num_steps:
            log_std = log_std.unflatten(-1, (self.num_steps, self.action_dim))
        return log_std


class FlowRollout(nn.Module):
    """The K-step flow sampler with the drift-corrected Gaussian steps and the path log-density.

    Args:
        velocity (nn.Module): the velocity network, a :class:`VelocityField` (uses its
            ``encode_state``/``step`` split) or any module with ``forward(action, observation, time)``.
        action_dim (int): size of the pre-tanh action.

    Keyword Args:
        num_steps (int): K, the number of Euler steps. Default 4.
        action_low, action_high (Tensor or float): bounds of the env action; the rollout output
            ``tanh(A_K)`` is affinely rescaled to them. Default ``-1``/``1``.
        drift_correction (bool): use the drift ``b_θ`` of docs/algorithm.md §3 (default). ``False`` is
            the public reference code's uncorrected variant (``b = v``), kept only as a named
            ablation: its noisy rollout does not have the ODE's marginal.
        per_step_noise (bool): whether log σ comes as one value per step (``[..., K, d]``).
        noise_scale (str): standard deviation of a step's noise: ``"sqrt_dt"`` (default, the
            paper's SDE discretisation ``σ √Δt ε``) or ``"dt"`` (the released code, which adds
            ``σ ε`` to the velocity: ``σ Δt ε`` per step). The drift correction uses the
            diffusion the step actually has (``σ²`` resp. ``σ² Δt``).
        log_prob (str): what the distribution returns as ``log π``: ``"path"`` (default, the exact
            log-density of the path ``A_0..A_K`` plus the tanh/rescale Jacobian) or ``"noise"``
            (the released code's ``Σ_i log N(ε_i; 0, I)`` over the base draw and the step
            noises, minus its Jacobian term ``Σ_j log(scale_j (1 − tanh²) + 1e-6)``: no
            ``−log σ`` and no ``Δt`` normaliser, so it is not a density of the action and depends
            on the parameters only through the saturation of the final action).

    The σ of each step comes from the actor's parameter module (a state-only head or a fixed
    value) unless the velocity has a ``log_std_head`` (``TransformerVelocity(log_std_head=True)``),
    in which case each step's σ is read from the velocity network with its velocity.

    Attributes:
        num_steps (int): K; settable on a built actor (e.g. evaluate with more steps).
        noise_std (float or None): when set, overrides the log σ given by the actor's parameter
            module for *sampling* (e.g. analysis at another σ). ``None`` uses the actor's own σ.
        deterministic_base (str): the ``A_0`` of the noise-free ODE rollout used under
            ``ExplorationType.DETERMINISTIC``: ``"zero"`` (default: the base distribution's mode,
            so the same observation always gives the same action) or ``"sample"`` (``A_0 ~ N(0, I)``,
            the ODE's own stochastic policy).
    """

    def __init__(
        self,
        velocity: nn.Module,
        action_dim: int,
        *,
        num_steps: int = 4,
        action_low: torch.Tensor | float = -1.0,
        action_high: torch.Tensor | float = 1.0,
        drift_correction: bool = True,
        per_step_noise: bool = False,
        noise_scale: str = "sqrt_dt",
        log_prob: str = "path",
    ):
        super().__init__()
        if noise_scale not in NOISE_SCALES:
            raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {noise_scale!r}")
        if log_prob not in LOG_PROB_KINDS:
            raise ValueError(f"log_prob must be one of {LOG_PROB_KINDS}, got {log_prob!r}")
        self.velocity = velocity
        self.action_dim = int(action_dim)
        self.drift_correction = bool(drift_correction)
        self.per_step_noise = bool(per_step_noise)
        self.noise_scale = noise_scale
        self.log_prob_kind = log_prob
        self.velocity_log_std = getattr(velocity, "log_std_head", None) is not None
        # log σ of every step of the latest rollout (detached), for diagnostics
        self.last_log_std: list[torch.Tensor] = []
        self._train_num_steps = int(num_steps)
        self.num_steps = num_steps
        self.noise_std = None
        self.deterministic_base = "zero"
        # Set (by SACFlowLoss) while the per-step gradient diagnostic needs A_0 in the graph.
        self.record_path_grads = False
        low = torch.as_tensor(action_low, dtype=torch.float32).expand(self.action_dim).clone()
        high = torch.as_tensor(action_high, dtype=torch.float32).expand(self.action_dim).clone()
        if not torch.all(high > low):
            raise ValueError("action bounds must satisfy high > low in every dimension")
        self.register_buffer("action_loc", (high + low) / 2)
        self.register_buffer("action_scale", (high - low) / 2)

    # -- settings --------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self._num_steps

    @num_steps.setter
    def num_steps(self, value: int) -> None:
        if int(value) != value or value < 1:
            raise ValueError(f"num_steps (K) must be an integer >= 1, got {value!r}")
        if self.per_step_noise and int(value) != self._train_num_steps:
            raise ValueError(
                f"this actor has one σ per step for K={self._train_num_steps}; it cannot sample "
                f"with K={value} (set a fixed noise_std or build it with shared σ)"
            )
        self._num_steps = int(value)

    @property
    def deterministic_base(self) -> str:
        return self._deterministic_base

    @deterministic_base.setter
    def deterministic_base(self, value: str) -> None:
        if value not in ("zero", "sample"):
            raise ValueError(f"deterministic_base must be 'zero' or 'sample', got {value!r}")
        self._deterministic_base = value

    @property
    def noise_std(self) -> float | None:
        return self._noise_std

    @noise_std.setter
    def noise_std(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"noise_std (σ) must be > 0, got {value!r}")
        self._noise_std = None if value is None else float(value)

    # -- the rollout -----------------------------------------------------------------------
    def _encode(self, observation: torch.Tensor, times: Sequence[float] = ()):
        if isinstance(self.velocity, VelocityField):
            return self.velocity.prepare_times(self.velocity.encode_state(observation), times)
        return observation

    def _velocity(self, action, context, time: float) -> torch.Tensor:
        if isinstance(self.velocity, VelocityField):
            return self.velocity.step(action, context, time)
        return self.velocity(action, context, action.new_full((*action.shape[:-1], 1), time))

    def _step_log_std(self, log_std: torch.Tensor, i: int) -> torch.Tensor:
        return log_std[..., i, :] if self.per_step_noise else log_std

    def resolve_log_std(self, log_std: torch.Tensor) -> torch.Tensor:
        """Apply the sampling-time σ override, if any."""
        if self._noise_std is None:
            return log_std
        return torch.full_like(log_std, math.log(self._noise_std))

    def drift(self, velocity: torch.Tensor, action: torch.Tensor, t: float, var: torch.Tensor):
        """``b_θ`` of docs/algorithm.md §3 (or ``v`` without the correction)."""
        if not self.drift_correction:
            return velocity
        return velocity * ((1.0 - t + t * var / 2.0) / (1.0 - t)) - action * (var / (2.0 * (1.0 - t)))

    def _step_coefficients(self, log_std: torch.Tensor, times: Sequence[float], dt: float):
        """Per-step ``(c_A, c_v, σ√Δt)`` with ``A + Δt·b_θ = c_A ⊙ A + c_v ⊙ v``.

        Expanding the drift: ``c_A = 1 − Δt (σ²/2) / (1 − t)`` and
        ``c_v = Δt + (σ²/2) Δt t / (1 − t)`` (``c_A = 1``, ``c_v = Δt`` without the correction).
        σ depends on the state only, so all K of them are computed together, once per rollout,
        instead of re-deriving the drift's factors at every step.
        """
        K = len(times)
        step_std = self._step_std(dt)
        if self.per_step_noise:  # log σ: [..., K, d]
            scales = (log_std.exp() * step_std).unbind(-2)
        else:
            scales = (log_std.exp() * step_std,) * K
        if not self.drift_correction:
            return [(None, None, scale) for scale in scales]
        half_var = (2.0 * log_std).exp() * (0.5 * step_std**2 / dt)
        t = torch.tensor(times, dtype=log_std.dtype, device=log_std.device).unsqueeze(-1)  # [K, 1]
        if not self.per_step_noise:
            half_var = half_var.unsqueeze(-2)  # [..., 1, d]
        coef_a = (half_var * (-dt / (1.0 - t))).add_(1.0).unbind(-2)
        coef_v = (half_var * (dt * t / (1.0 - t))).add_(dt).unbind(-2)
        return list(zip(coef_a, coef_v, scales))

    def _step_std(self, dt: float) -> float:
        """A step's noise std per unit σ: ``√Δt`` (SDE) or ``Δt`` (noise on the velocity)."""
        return math.sqrt(dt) if self.noise_scale == "sqrt_dt" else dt

    def _inline_coefficients(self, log_std: torch.Tensor, t: float, dt: float):
        """``(c_A, c_v, scale)`` of one step whose σ is known only at that step."""
        step_std = self._step_std(dt)
        scale = log_std.exp() * step_std
        if not self.drift_correction:
            return None, None, scale
        half_var = (2.0 * log_std).exp() * (0.5 * step_std**2 / dt)
        return (half_var * (-dt / (1.0 - t))).add_(1.0), (half_var * (dt * t / (1.0 - t))).add_(dt), scale

    def squash(self, pre_tanh: torch.Tensor) -> torch.Tensor:
        return self.action_loc + self.action_scale * torch.tanh(pre_tanh)

    def rollout(
        self,
        observation: torch.Tensor,
        log_std: torch.Tensor,
        *,
        deterministic: bool = False,
        base_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Run K steps; return ``(action, path log-density, [A_0, .., A_K])``.

        With ``deterministic=False`` the steps are the drift-corrected Gaussian ones and the
        log-density of each transition is evaluated from its own noise draw (the value the density
        takes at the reparameterised point, exact). With ``deterministic=True`` the path is the
        noise-free ODE and its log-density under the same transition kernel is returned.

        The log-density is accumulated as ``−½ Σ_i ‖ε_i‖² − Σ_i Σ_j log(σ_ij √Δt) − ½ (K+1) d log 2π``
        over the base draw ``ε_0 = A_0`` and the K step noises, then the tanh/rescale Jacobians
        (``Δt`` in place of ``√Δt`` with ``noise_scale="dt"``; without the ``log σ`` and step-size
        terms with ``log_prob="noise"``).
        """
        log_std = self.resolve_log_std(log_std)
        K = self._num_steps
        dt = 1.0 / K
        d = self.action_dim
        batch_shape = observation.shape[:-1]
        if base_noise is None and deterministic and self._deterministic_base == "zero":
            a = observation.new_zeros((*batch_shape, d))
        elif base_noise is None:
            a = torch.randn((*batch_shape, d), device=observation.device, dtype=observation.dtype)
        else:
            a = base_noise
        if self.record_path_grads and torch.is_grad_enabled():
            a = a.detach().requires_grad_(True)
        path = [a]
        noises = [a]  # standardised Gaussian draws: A_0, then one per step
        times = [i * dt for i in range(K)]
        context = self._encode(observation, times)
        step_log_stds = []
        if self.velocity_log_std:
            coefs = [None] * K
        else:
            coefs = self._step_coefficients(log_std, times, dt)
            step_log_stds = list(log_std.unbind(-2)) if self.per_step_noise else [log_std] * K
        for i, (t, coef) in enumerate(zip(times, coefs)):
            if coef is None:  # σ_i comes with the velocity
                v, step_log_std = self.velocity.step_with_log_std(a, context, t)
                step_log_std = self.resolve_log_std(step_log_std)
                step_log_stds.append(step_log_std)
                coef_a, coef_v, scale = self._inline_coefficients(step_log_std, t, dt)
            else:
                v = self._velocity(a, context, t)
                coef_a, coef_v, scale = coef
            if coef_a is None:
                mean = torch.add(a, v, alpha=dt)
            else:
                mean = torch.addcmul(a * coef_a, v, coef_v)
            if deterministic:
                a_next = torch.add(a, v, alpha=dt)
                z = (a_next - mean) / scale
            else:
                z = torch.randn_like(a)
                a_next = torch.addcmul(mean, scale, z)
            noises.append(z)
            a = a_next
            path.append(a)
        if not torch.compiler.is_compiling():
            self.last_log_std = [ls.detach() for ls in step_log_stds]
        log_norm = (K + 1) * d * 0.5 * _LOG_2PI
        if self.log_prob_kind == "path":
            if self.velocity_log_std:
                sum_log_std = torch.stack(step_log_stds).sum((0, -1))
            elif self.per_step_noise:
                sum_log_std = log_std.sum((-2, -1))
            else:
                sum_log_std = K * log_std.sum(-1)
            log_norm = log_norm + sum_log_std + K * d * math.log(self._step_std(dt))
        sq_noise = torch.stack(noises).pow(2).sum((0, -1)) if len(noises) > 1 else a.pow(2).sum(-1)
        log_prob = -0.5 * sq_noise - log_norm
        if self.log_prob_kind == "noise":  # the released code's Jacobian term, its 1e-6 included
            y = torch.tanh(a)
            return self.squash(a), log_prob - torch.log(self.action_scale * (1 - y * y) + 1e-6).sum(-1), path
        log_prob = log_prob - tanh_log_abs_det_jacobian(a) - self.action_scale.log().sum()
        return self.squash(a), log_prob, path


class FlowPathDistribution(Distribution):
    """Distribution of the final action of a noise-augmented flow rollout.

    Sampling runs :class:`FlowRollout`; the returned log-probability is the exact joint *path*
    log-density ``log p(A_0..A_K | s)`` plus the tanh/rescale Jacobian, which SAC uses in place of
    the marginal ``log π(a|s)``. The marginal itself is intractable, so :meth:`log_prob` only
    answers for the sample this distribution just drew (the value TorchRL's
    ``ProbabilisticActor(return_log_prob=True)`` asks for) and raises for any other action.

    Args:
        observation (Tensor): flat observation, shape ``[*batch, n]``.
        log_std (Tensor): log σ, shape ``[*batch, d]`` (or ``[*batch, K, d]`` per step).
        rollout (FlowRollout): the sampler (holds the velocity network, K and the bounds).

    Attributes:
        last_path (list of Tensor): ``[A_0, .., A_K]`` of the most recent sample (pre-tanh), kept
            for diagnostics such as per-step gradient norms.
    """

    has_rsample = True
    arg_constraints: dict = {}

    def __init__(self, observation: torch.Tensor, log_std: torch.Tensor, rollout: FlowRollout):
        self.observation = observation
        self.log_std = log_std
        self.rollout = rollout
        self.last_path: list[torch.Tensor] | None = None
        self._last_sample = None
        self._last_log_prob = None
        super().__init__(
            batch_shape=observation.shape[:-1],
            event_shape=torch.Size([rollout.action_dim]),
            validate_args=False,
        )

    def _expand_inputs(self, sample_shape):
        sample_shape = torch.Size(sample_shape)
        obs, log_std = self.observation, self.log_std
        if sample_shape:
            obs = obs.expand(*sample_shape, *obs.shape)
            log_std = log_std.expand(*sample_shape, *log_std.shape)
        return obs, log_std

    def _run(self, sample_shape, deterministic: bool):
        obs, log_std = self._expand_inputs(sample_shape)
        action, log_prob, path = self.rollout.rollout(obs, log_std, deterministic=deterministic)
        self._last_sample, self._last_log_prob, self.last_path = action, log_prob, path
        return action, log_prob

    def rsample_and_log_prob(self, sample_shape=torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a reparameterised action and its path log-density (one rollout)."""
        return self._run(sample_shape, deterministic=False)

    def sample_and_log_prob(self, sample_shape=torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self._run(sample_shape, deterministic=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._run(sample_shape, deterministic=False)[0]

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._run(sample_shape, deterministic=False)[0]

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The noise-free ODE rollout (from ``A_0 = 0`` unless ``rollout.deterministic_base`` says otherwise)."""
        return self._run(torch.Size(), deterministic=True)[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value is self._last_sample and self._last_log_prob is not None:
            return self._last_log_prob
        raise NotImplementedError(
            "FlowPathDistribution.log_prob is only defined for the action this distribution just "
            "sampled: the marginal density of a flow policy's action (an integral over all K-step "
            "paths that end there) is intractable. Use rsample_and_log_prob() / "
            "sample_and_log_prob(), which return the exact path log-density of the draw."
        )

    def entropy(self):
        raise NotImplementedError("the entropy of a flow policy has no closed form")


class FlowStateModule(nn.Module):
    """Parameter module of the flow actor: log σ (and the concatenated observation) for the distribution.

    It also owns the :class:`FlowRollout` (and so the velocity parameters), which makes every
    parameter of the policy visible to ``actor.parameters()``, ``TensorDict.from_module`` and the
    weight sync of multiprocess collectors.
    """

    def __init__(
        self,
        rollout: FlowRollout,
        log_std_head: nn.Module | None,
        noise_std: float | None,
        *,
        concat_only: bool = False,
    ):
        super().__init__()
        self.concat_only = concat_only
        if log_std_head is None and noise_std is None and not rollout.velocity_log_std:
            raise ValueError("give either a log-std head or a fixed noise_std")
        self.rollout = rollout
        self.log_std_head = log_std_head
        self.fixed_log_std = None if noise_std is None else math.log(noise_std)

    def forward(self, *observations: torch.Tensor):
        obs = observations[0] if len(observations) == 1 else torch.cat(observations, dim=-1)
        if self.log_std_head is not None:
            log_std = self.log_std_head(obs)
        else:  # a fixed σ, or a placeholder when the velocity gives σ at each step
            shape = (*obs.shape[:-1], self.rollout.action_dim)
            log_std = obs.new_full(shape, 0.0 if self.fixed_log_std is None else self.fixed_log_std)
        if self.concat_only:
            return log_std
        return obs, log_std


class FlowActor(DirectProbabilisticActor):
    """The ``ProbabilisticActor`` that :func:`make_flow_actor` builds.

    Behaves exactly like TorchRL's ``ProbabilisticActor``; as a
    :class:`~torchrl_sacflow.modules.DirectProbabilisticActor` its everyday calls (``forward`` in a
    collector, ``get_dist`` twice per SAC update: next action for the critic target, reparameterised
    action for the actor loss) build the :class:`FlowPathDistribution` from the parameter module's
    tensors directly instead of through TensorDict's generic sequence machinery, and defer to the
    generic path whenever it could behave differently.
    """


_VELOCITIES = {"transformer": TransformerVelocity, "gru": GatedVelocity, "mlp": MLPVelocity}
_VELOCITY_ALIASES = {"flow_t": "transformer", "flow_g": "gru", "flow_mlp": "mlp", "gated": "gru", "t": "transformer", "g": "gru"}


def make_flow_actor(
    action_spec: TensorSpec,
    observation_dim: int,
    *,
    velocity: str | nn.Module = "transformer",
    num_steps: int = 4,
    noise_std: float | None = None,
    in_keys: Sequence = ("observation",),
    out_key="action",
    velocity_kwargs: dict | None = None,
    log_std_kwargs: dict | None = None,
    per_step_noise: bool = False,
    drift_correction: bool = True,
    return_log_prob: bool = True,
    sigma_head: str = "state",
    noise_scale: str = "sqrt_dt",
    log_prob: str = "path",
) -> ProbabilisticActor:
    """Build a SAC Flow policy as a TorchRL :class:`~torchrl.modules.ProbabilisticActor`.

    Args:
        action_spec (TensorSpec): a bounded action spec (``Bounded``); the flow's ``tanh(A_K)`` is
            rescaled to its bounds. Its last dimension is the action size (× chunk length).
        observation_dim (int): size of the flat observation (sum of the ``in_keys`` sizes).

    Keyword Args:
        velocity (str or nn.Module): ``"transformer"`` (Flow-T, default), ``"gru"`` (Flow-G),
            ``"mlp"`` (naive) or a velocity module of your own.
        num_steps (int): K, Euler steps. Default 4.
        noise_std (float, optional): a fixed σ (offline-to-online, paper 0.10). ``None`` (default)
            learns a state-dependent, clamped log σ head (from scratch).
        in_keys (sequence of keys): observation keys, concatenated in this order.
        out_key: where the action is written. Default ``"action"``.
        velocity_kwargs (dict, optional): extra arguments for the velocity class.
        log_std_kwargs (dict, optional): extra arguments for :class:`StateLogStd`.
        per_step_noise (bool): one learned σ per Euler step instead of one shared σ.
        drift_correction (bool): see :class:`FlowRollout`. Default ``True``.
        return_log_prob (bool): write the path log-density next to the action. Default ``True``.
        sigma_head (str): where a learned σ comes from: ``"state"`` (default, :class:`StateLogStd`
            on the observation, once per rollout) or ``"velocity"`` (the released code: a head on
            the Flow-T decoder's output, one σ per step depending on ``s``, ``A_i`` and ``t_i``;
            ``log_std_kwargs["log_std_bounds"]`` sets its range). ``"velocity"`` needs
            ``velocity="transformer"`` and a learned σ.
        noise_scale (str): ``"sqrt_dt"`` (default) or ``"dt"`` (released code); see :class:`FlowRollout`.
        log_prob (str): ``"path"`` (default, exact path log-density) or ``"noise"`` (released
            code's noise-only log-probability, not a density of the action); see :class:`FlowRollout`.

    Raises:
        TypeError: for a non-``Bounded`` action spec or a velocity of the wrong type.
        ValueError: for an unknown velocity/option name, K < 1, σ <= 0, or ``sigma_head="velocity"``
            with a fixed σ or a velocity without a per-step σ head.

    Returns:
        A ``ProbabilisticActor`` writing ``out_key`` and (``return_log_prob``) its log-prob. Under
        ``set_exploration_type(ExplorationType.DETERMINISTIC)`` it runs the noise-free ODE.

    Examples:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> spec = Bounded(-2.0, 2.0, shape=(3,))
        >>> actor = make_flow_actor(spec, observation_dim=5, velocity="gru")
        >>> td = TensorDict({"observation": torch.randn(8, 5)}, batch_size=[8])
        >>> with set_exploration_type(ExplorationType.RANDOM):
        ...     td = actor(td)
        >>> td["action"].shape, td["action_log_prob"].shape
        (torch.Size([8, 3]), torch.Size([8]))
        >>> get_flow_rollout(actor).num_steps = 10  # sample with another K
    """
    if not isinstance(action_spec, Bounded):
        raise TypeError(
            f"make_flow_actor needs a Bounded action spec (the flow squashes with tanh), got "
            f"{type(action_spec).__name__}"
        )
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps (K) must be an integer >= 1, got {num_steps!r}")
    if noise_std is not None and not noise_std > 0:
        raise ValueError(f"noise_std (σ) must be > 0 or None (learned), got {noise_std!r}")
    if sigma_head not in SIGMA_HEADS:
        raise ValueError(f"sigma_head must be one of {SIGMA_HEADS}, got {sigma_head!r}")
    if sigma_head == "velocity" and noise_std is not None:
        raise ValueError("sigma_head='velocity' learns σ; it cannot be combined with a fixed noise_std")
    action_dim = int(action_spec.shape[-1])
    if isinstance(velocity, str):
        name = _VELOCITY_ALIASES.get(velocity.lower(), velocity.lower())
        if name not in _VELOCITIES:
            raise ValueError(
                f"unknown velocity {velocity!r}: expected one of {sorted(_VELOCITIES)} or an nn.Module"
            )
        kwargs = dict(velocity_kwargs or {})
        if name == "transformer" and kwargs.get("input_norm"):
            kwargs.setdefault("num_steps", num_steps)
        if sigma_head == "velocity":
            if name != "transformer":
                raise ValueError("sigma_head='velocity' needs velocity='transformer' (Flow-T's decoder output)")
            kwargs["log_std_head"] = True
            bounds = (log_std_kwargs or {}).get("log_std_bounds")
            if bounds is not None:
                kwargs["log_std_bounds"] = tuple(bounds)
        velocity = _VELOCITIES[name](action_dim, observation_dim, **kwargs)
    elif not isinstance(velocity, nn.Module):
        raise TypeError(f"velocity must be a name or an nn.Module, got {type(velocity).__name__}")
    low = action_spec.space.low.reshape(-1, action_dim)[0]
    high = action_spec.space.high.reshape(-1, action_dim)[0]
    rollout = FlowRollout(
        velocity,
        action_dim,
        num_steps=num_steps,
        action_low=low,
        action_high=high,
        drift_correction=drift_correction,
        per_step_noise=per_step_noise and noise_std is None,
        noise_scale=noise_scale,
        log_prob=log_prob,
    )
    if sigma_head == "velocity" and not rollout.velocity_log_std:
        raise ValueError("sigma_head='velocity' needs a velocity with a log_std_head")
    head = None
    if noise_std is None and not rollout.velocity_log_std:
        head = StateLogStd(
            observation_dim,
            action_dim,
            num_steps=num_steps if per_step_noise else None,
            **(log_std_kwargs or {}),
        )
    in_keys = list(in_keys)
    if not in_keys:
        raise ValueError("in_keys must name at least one observation key")
    # One observation key is read by the distribution directly; several are concatenated once into
    # "flow_observation" (so collected transitions carry no duplicate of a single observation).
    obs_key = in_keys[0] if len(in_keys) == 1 else "flow_observation"
    params = TensorDictModule(
        FlowStateModule(rollout, head, noise_std, concat_only=len(in_keys) == 1),
        in_keys=in_keys,
        out_keys=["flow_log_std"] if len(in_keys) == 1 else ["flow_observation", "flow_log_std"],
    )
    return FlowActor(
        params,
        in_keys={"observation": obs_key, "log_std": "flow_log_std"},
        out_keys=[out_key],
        spec=action_spec,
        distribution_class=FlowPathDistribution,
        distribution_kwargs={"rollout": rollout},
        return_log_prob=return_log_prob,
        log_prob_key=f"{out_key}_log_prob" if isinstance(out_key, str) else None,
    )


def get_flow_rollout(actor: nn.Module) -> FlowRollout:
    """Return the :class:`FlowRollout` inside an actor built by :func:`make_flow_actor`."""
    for module in actor.modules():
        if isinstance(module, FlowRollout):
            return module
    raise ValueError("this actor contains no FlowRollout (was it built by make_flow_actor?)")
