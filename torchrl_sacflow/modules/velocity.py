"""Velocity networks v_θ(t, A, s) for flow policies (docs/algorithm.md §2).

The K-step Euler rollout ``A_{i+1} = A_i + Δt · v_θ(t_i, A_i, s)`` is a residual RNN whose hidden
state is the intermediate action. The cells are drop-in cells for that RNN:

* :class:`MLPVelocity` — the naive cell (an MLP on ``[A, s, t]``); backprop through it explodes.
* :class:`GatedVelocity` — Flow-G: a GRU-style update gate, ``v = g ⊙ (ĉ − A)``.
* :class:`~torchrl_sacflow.modules.transformer_velocity.TransformerVelocity` — Flow-T (its own
  module): a Transformer-decoder cell whose only access to the state is cross-attention.

Every cell splits its work into :meth:`VelocityField.encode_state` (state-only, done once per
rollout), :meth:`VelocityField.prepare_times` (what depends only on the K flow times, once per
rollout) and :meth:`VelocityField.step` (per Euler step). ``forward(action, observation, time)``
does all of it, so each cell is also an ordinary ``(A, s, t) -> v`` module that
:func:`velocity_module` wraps as a :class:`~tensordict.nn.TensorDictModule`. The per-rollout
precomputations are exact rewritings (same parameters, rounding-level differences), kept where
they pay off (``docs/fast_paths.md`` has the measurements).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tensordict.nn import TensorDictModule
from torch import nn

__all__ = [
    "VelocityField",
    "MLPVelocity",
    "GatedVelocity",
    "velocity_module",
]


def _time_column(time: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Flow time as a ``[..., 1]`` column broadcastable against ``like`` (``[..., d]``)."""
    if not isinstance(time, torch.Tensor):
        return like.new_full((*like.shape[:-1], 1), float(time))
    if time.ndim == 0 or time.shape[-1] != 1:
        time = time.unsqueeze(-1)
    return time.to(like.dtype).expand(*like.shape[:-1], 1)


class _SplitContext:
    """Per-rollout context of :class:`_SplitInputLinear`: the observation and cached time columns."""

    __slots__ = ("observation", "time_columns")

    def __init__(self, observation: torch.Tensor):
        self.observation = observation
        self.time_columns: dict[float, torch.Tensor] = {}


class _SplitInputLinear(nn.Module):
    """The ``Linear`` on ``[A, s, t]`` that opens the MLP and Flow-G velocities.

    One ``nn.Linear(d + n + 1, out)`` applied to the concatenation at every Euler step. Splitting
    it as ``W_A A + (W_s s + b) + W_t t`` and computing the state term once per rollout is exact,
    but on CPU it is slower (``docs/fast_paths.md``): the ``[batch, out]`` state term has to be
    read at every step and its gradient accumulated over the K steps, which costs more than the
    small ``K = d + n + 1`` matmul it saves. So each step runs the plain linear;
    :meth:`prepare_times` only caches the time columns.
    """

    def __init__(self, action_dim: int, observation_dim: int, out_features: int):
        super().__init__()
        self.action_dim = action_dim
        self.observation_dim = observation_dim
        self.linear = nn.Linear(action_dim + observation_dim + 1, out_features)

    def encode_state(self, observation: torch.Tensor) -> _SplitContext:
        return _SplitContext(observation)

    def prepare_times(self, context: _SplitContext, times) -> _SplitContext:
        obs = context.observation
        for t in times:
            context.time_columns[float(t)] = obs.new_full((*obs.shape[:-1], 1), float(t))
        return context

    def step(self, action: torch.Tensor, context, time) -> torch.Tensor:
        observation = context.observation if isinstance(context, _SplitContext) else context
        if isinstance(time, torch.Tensor):
            column = _time_column(time, action)
        else:
            column = None
            if isinstance(context, _SplitContext):
                column = context.time_columns.get(float(time))
            if column is None or column.shape[:-1] != action.shape[:-1]:
                column = action.new_full((*action.shape[:-1], 1), float(time))
        if observation.shape[:-1] != action.shape[:-1]:
            observation = observation.expand(*action.shape[:-1], observation.shape[-1])
        return self.linear(torch.cat([action, observation, column], dim=-1))


def _mlp_tail(in_features: int, hidden: Sequence[int], out_features: int, activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    last = in_features
    for h in hidden:
        layers += [activation(), nn.Linear(last, h)]
        last = h
    layers += [activation(), nn.Linear(last, out_features)]
    return nn.Sequential(*layers)


def _run_from(sequential: nn.Sequential, x: torch.Tensor, start: int = 0, *, fresh: bool = False) -> torch.Tensor:
    """``sequential[start:](x)`` without building a new ``Sequential``, with in-place ReLUs.

    ``nn.ReLU`` layers are applied in place (``relu_``) to tensors this function created (or to
    ``x`` itself when ``fresh=True``, i.e. when the caller owns it): the same values and
    gradients (ReLU's backward reads its output), one ``[batch, width]`` allocation less per
    layer (``docs/fast_paths.md``: what it saves). Not under
    ``torch.compile``, which plans buffers itself.
    """
    if torch.compiler.is_compiling():
        fresh = False  # the compiler plans buffers itself (and its fused in-place backward was slow)
    for i, layer in enumerate(sequential):
        if i < start:
            continue
        if fresh and type(layer) is nn.ReLU:
            x = torch.relu_(x)
        else:
            x = layer(x)
            fresh = True
    return x


class VelocityField(nn.Module):
    """Base class: a velocity ``v_θ(t, A, s)`` with the state-only work factored out.

    Subclasses implement :meth:`encode_state` (anything that depends on the observation alone) and
    :meth:`step` (one velocity evaluation given that context). A user-supplied ``nn.Module`` with a
    plain ``forward(action, observation, time)`` works too: the rollout then treats the observation
    itself as the context.

    Args:
        action_dim (int): size of the (pre-tanh) action, i.e. ``d`` (× chunk length when chunking).
        observation_dim (int): size of the flat observation vector.
    """

    def __init__(self, action_dim: int, observation_dim: int):
        super().__init__()
        if action_dim < 1 or observation_dim < 1:
            raise ValueError(
                f"action_dim and observation_dim must be >= 1, got {action_dim} and {observation_dim}"
            )
        self.action_dim = int(action_dim)
        self.observation_dim = int(observation_dim)

    def encode_state(self, observation: torch.Tensor) -> Any:
        raise NotImplementedError

    def prepare_times(self, context: Any, times: Sequence[float]) -> Any:
        """Add to a rollout's ``context`` whatever depends only on the flow times it will visit.

        Called once per rollout, after :meth:`encode_state`, with the K times ``t_i``; the
        default returns ``context`` unchanged. :meth:`step` must accept the context with or
        without this preparation (and any ``time``).
        """
        return context

    def step(self, action: torch.Tensor, context: Any, time: torch.Tensor | float) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, action: torch.Tensor, observation: torch.Tensor, time: torch.Tensor | float
    ) -> torch.Tensor:
        return self.step(action, self.encode_state(observation), time)


class MLPVelocity(VelocityField):
    """The naive velocity ``v = MLP([A_i, s, t_i])`` — the residual-RNN cell of the ablation.

    Args:
        action_dim (int): action size ``d``.
        observation_dim (int): flat observation size.

    Keyword Args:
        hidden_sizes (sequence of int): hidden widths. Default ``(256, 256)``.
        activation (nn.Module class): default :class:`~torch.nn.ReLU` (paper, Fig. 9).

    Examples:
        >>> v = MLPVelocity(action_dim=2, observation_dim=3)
        >>> v(torch.zeros(5, 2), torch.zeros(5, 3), 0.25).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        action_dim: int,
        observation_dim: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__(action_dim, observation_dim)
        hidden_sizes = tuple(hidden_sizes)
        if not hidden_sizes:
            raise ValueError("MLPVelocity needs at least one hidden layer")
        self.input = _SplitInputLinear(action_dim, observation_dim, hidden_sizes[0])
        self.trunk = _mlp_tail(hidden_sizes[0], hidden_sizes[1:], action_dim, activation)

    def encode_state(self, observation: torch.Tensor):
        return self.input.encode_state(observation)

    def prepare_times(self, context, times):
        return self.input.prepare_times(context, times)

    def step(self, action, context, time):
        return _run_from(self.trunk, self.input.step(action, context, time), fresh=True)


_TRUNK_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}


class GatedVelocity(VelocityField):
    """Flow-G: a GRU-style gated velocity ``v = g ⊙ (ĉ − A)`` (paper Eq. 6).

    ``g = sigmoid(z_θ(t, A, s))`` is an update gate and ``ĉ = κ · tanh(c_θ(t, A, s))`` a bounded
    candidate, so one Euler step ``A + Δt · g ⊙ (ĉ − A)`` interpolates between keeping the
    intermediate action and rewriting it. The gate's last layer starts at weight 0 and bias +5
    (``g ≈ 0.993``): training starts from an (almost) ungated flow and learns where to close it.

    Behaviour cloning (flow matching) of a multimodal data set is where the defaults fall short:
    ``κ · tanh(c)`` multiplies the candidate network's output by κ = 50 where it matters (|c| ≪ 1),
    so every optimiser step moves the velocity ~κ times further than the same step moves an MLP
    velocity, and the smooth SiLU trunk splits the flow between modes slowly. On two modes
    (``(±0.5, 0)``, 300 flow-matching steps at lr 3e-3, 6 seeds) the defaults leave 0.26–0.31 of the
    samples on each mode (none sharp); ``candidate_slope="unit"`` with ``activation="relu"`` puts
    0.38–0.49 on each in 6 of 6 seeds (``docs/offline_to_online.md``, "Flow-G that clones").

    Args:
        action_dim (int): action size ``d``.
        observation_dim (int): flat observation size.

    Keyword Args:
        hidden_sizes (sequence of int): hidden widths of both the gate and candidate MLPs.
            Default ``(128, 128)`` (paper: hidden 128, swish).
        candidate_bound (float): κ, the bound of the candidate. Default 50 (the reference code's).
        gate_bias_init (float): initial bias of the gate head. Default 5.0.
        activation (nn.Module class or str): the trunks' activation, a class or ``"silu"``,
            ``"relu"``, ``"gelu"``. Default :class:`~torch.nn.SiLU` (swish, paper).
        candidate_slope (str): ``"bound"`` (default, paper and reference code): ``ĉ = κ·tanh(c)``;
            ``"unit"``: ``ĉ = κ·tanh(c/κ)``, the same bound with slope 1 at ``c = 0``, so the
            candidate network's output is the candidate itself wherever ``|ĉ| ≪ κ``.

    Raises:
        ValueError: no hidden layer, ``candidate_bound <= 0``, or an unknown ``activation`` /
            ``candidate_slope``.

    Examples:
        >>> v = GatedVelocity(action_dim=2, observation_dim=3)
        >>> v(torch.zeros(5, 2), torch.zeros(5, 3), 0.5).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        action_dim: int,
        observation_dim: int,
        *,
        hidden_sizes: Sequence[int] = (128, 128),
        candidate_bound: float = 50.0,
        gate_bias_init: float = 5.0,
        activation: type[nn.Module] | str = nn.SiLU,
        candidate_slope: str = "bound",
    ):
        super().__init__(action_dim, observation_dim)
        hidden_sizes = tuple(hidden_sizes)
        if not hidden_sizes:
            raise ValueError("GatedVelocity needs at least one hidden layer")
        if candidate_bound <= 0:
            raise ValueError(f"candidate_bound must be > 0, got {candidate_bound}")
        if candidate_slope not in ("bound", "unit"):
            raise ValueError(f"candidate_slope must be 'bound' or 'unit', got {candidate_slope!r}")
        if isinstance(activation, str):
            if activation not in _TRUNK_ACTIVATIONS:
                raise ValueError(f"activation must be one of {tuple(_TRUNK_ACTIVATIONS)} or an nn.Module class, "
                                 f"got {activation!r}")
            activation = _TRUNK_ACTIVATIONS[activation]
        self.candidate_bound = float(candidate_bound)
        self.candidate_slope = candidate_slope
        self.hidden = hidden_sizes[0]
        # The gate and candidate MLPs share their input [A, s, t]; their first layers are stored as
        # one Linear with 2 × hidden outputs (rows [:h] gate, [h:] candidate) so one matmul does both.
        self.input = _SplitInputLinear(action_dim, observation_dim, 2 * hidden_sizes[0])
        self.gate = _mlp_tail(hidden_sizes[0], hidden_sizes[1:], action_dim, activation)
        self.candidate = _mlp_tail(hidden_sizes[0], hidden_sizes[1:], action_dim, activation)
        with torch.no_grad():
            self.gate[-1].weight.zero_()
            self.gate[-1].bias.fill_(gate_bias_init)
        # Both tails open with the same activation; when it is stateless (SiLU, ReLU, ...) it is
        # applied once to the joint first-layer output instead of once per half.
        first = self.gate[0]
        self._shared_activation = not any(True for _ in first.parameters()) and not any(
            True for _ in first.buffers()
        )

    def encode_state(self, observation):
        return self.input.encode_state(observation)

    def prepare_times(self, context, times):
        return self.input.prepare_times(context, times)

    def gate_and_candidate(self, action, context, time) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input.step(action, context, time)
        if getattr(self, "_shared_activation", False):
            g_in, c_in = self.gate[0](h).split(self.hidden, dim=-1)
            g_out, c_out = _run_from(self.gate, g_in, 1), _run_from(self.candidate, c_in, 1)
        else:
            g_in, c_in = h.split(self.hidden, dim=-1)
            g_out, c_out = self.gate(g_in), self.candidate(c_in)
        gate = torch.sigmoid(g_out)
        if self.candidate_slope == "unit":
            return gate, self.candidate_bound * torch.tanh(c_out / self.candidate_bound)
        return gate, self.candidate_bound * torch.tanh(c_out)

    def step(self, action, context, time):
        gate, cand = self.gate_and_candidate(action, context, time)
        return gate * (cand - action)


def velocity_module(
    velocity: nn.Module,
    *,
    action_key="flow_action",
    observation_key="observation",
    time_key="flow_time",
    out_key="flow_velocity",
) -> TensorDictModule:
    """Wrap a velocity network as a ``TensorDictModule`` reading ``(A, s, t)`` and writing ``v``.

    Examples:
        >>> from tensordict import TensorDict
        >>> mod = velocity_module(GatedVelocity(2, 3))
        >>> td = TensorDict({"flow_action": torch.zeros(4, 2), "observation": torch.zeros(4, 3),
        ...                  "flow_time": torch.full((4, 1), 0.5)}, batch_size=[4])
        >>> mod(td)["flow_velocity"].shape
        torch.Size([4, 2])
    """
    return TensorDictModule(
        velocity, in_keys=[action_key, observation_key, time_key], out_keys=[out_key]
    )
