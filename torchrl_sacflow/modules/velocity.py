"""Velocity networks v_θ(t, A, s) for flow policies (docs/algorithm.md §2).

The K-step Euler rollout ``A_{i+1} = A_i + Δt · v_θ(t_i, A_i, s)`` is a residual RNN whose hidden
state is the intermediate action. The three classes below are drop-in cells for that RNN:

* :class:`MLPVelocity` — the naive cell (an MLP on ``[A, s, t]``); backprop through it explodes.
* :class:`GatedVelocity` — Flow-G: a GRU-style update gate, ``v = g ⊙ (ĉ − A)``.
* :class:`TransformerVelocity` — Flow-T: a pre-norm Transformer-decoder cell whose only access to
  the state is cross-attention.

Every cell splits its work into :meth:`VelocityField.encode_state` (state-only, done once per
rollout), :meth:`VelocityField.prepare_times` (what depends only on the K flow times, once per
rollout) and :meth:`VelocityField.step` (per Euler step). ``forward(action, observation, time)``
does all of it, so each cell is also an ordinary ``(A, s, t) -> v`` module that
:func:`velocity_module` wraps as a :class:`~tensordict.nn.TensorDictModule`. The per-rollout
precomputations are exact rewritings (same parameters, rounding-level differences); which ones
pay off was measured with ``benchmarks/throughput.py`` (``benchmarks/results/throughput_notes.md``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tensordict.nn import TensorDictModule
from torch import nn

__all__ = [
    "VelocityField",
    "MLPVelocity",
    "GatedVelocity",
    "TransformerVelocity",
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
    but on CPU it measured *slower* (fwd+bwd of a 4-step rollout, batch 512: 15.9 ms vs 13.6 ms):
    the ``[batch, out]`` state term has to be read at every step and its gradient accumulated
    over the K steps, which costs more than the small ``K = d + n + 1`` matmul it saves. So each
    step runs the plain linear; :meth:`prepare_times` only caches the time columns.
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
    layer, which measured ~9% of a 256×256 MLP's forward+backward on CPU. Not under
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


class GatedVelocity(VelocityField):
    """Flow-G: a GRU-style gated velocity ``v = g ⊙ (ĉ − A)`` (paper Eq. 6).

    ``g = sigmoid(z_θ(t, A, s))`` is an update gate and ``ĉ = κ · tanh(c_θ(t, A, s))`` a bounded
    candidate, so one Euler step ``A + Δt · g ⊙ (ĉ − A)`` interpolates between keeping the
    intermediate action and rewriting it. The gate's last layer starts at weight 0 and bias +5
    (``g ≈ 0.993``): training starts from an (almost) ungated flow and learns where to close it.

    Args:
        action_dim (int): action size ``d``.
        observation_dim (int): flat observation size.

    Keyword Args:
        hidden_sizes (sequence of int): hidden widths of both the gate and candidate MLPs.
            Default ``(128, 128)`` (paper: hidden 128, swish).
        candidate_bound (float): κ, the bound of the candidate. Default 50 (the reference code's).
        gate_bias_init (float): initial bias of the gate head. Default 5.0.
        activation (nn.Module class): default :class:`~torch.nn.SiLU` (swish).

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
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__(action_dim, observation_dim)
        hidden_sizes = tuple(hidden_sizes)
        if not hidden_sizes:
            raise ValueError("GatedVelocity needs at least one hidden layer")
        if candidate_bound <= 0:
            raise ValueError(f"candidate_bound must be > 0, got {candidate_bound}")
        self.candidate_bound = float(candidate_bound)
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
        cand = self.candidate_bound * torch.tanh(c_out)
        return gate, cand

    def step(self, action, context, time):
        gate, cand = self.gate_and_candidate(action, context, time)
        return gate * (cand - action)


class _TimeEmbedding(nn.Module):
    """Fixed sinusoidal features φ_t(t) of the flow time (frequencies 1 .. 2^(n/2-1))."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dim must be an even number >= 2, got {dim}")
        freqs = math.pi * torch.pow(2.0, torch.arange(dim // 2, dtype=torch.float32))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        angles = time * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _DecoderBlock(nn.Module):
    """One pre-norm decoder block: diagonal self-attention, state cross-attention, FFN.

    Self-attention under a diagonal mask lets each token attend only to itself, so its softmax
    weight is identically 1 and the block reduces to ``W_o W_v LN(x)``: queries and keys would be
    dead parameters and are not created. Cross-attention to a single state token is the same:
    its output ``W_o W_v LN(Φ_S)`` does not depend on the query at all and is computed once per
    rollout. Query/key projections exist only when the state has several tokens.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        num_state_tokens: int,
        *,
        norm_layout: str = "pre_layernorm",
        ffn_activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.num_state_tokens = num_state_tokens
        self.post_norm = norm_layout == "post_batchrenorm"
        if self.post_norm:  # the released code's layout: x ← BRN(x + sublayer(x)), no norm on the state
            from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm

            self.norm_self, self.norm_cross = ActorBatchRenorm(d_model), ActorBatchRenorm(d_model)
            self.norm_ffn = ActorBatchRenorm(d_model)
            self.norm_query = self.norm_context = None
        else:
            self.norm_self = nn.LayerNorm(d_model)
            self.norm_query = nn.LayerNorm(d_model) if num_state_tokens > 1 else None
            self.norm_context = nn.LayerNorm(d_model)
            self.norm_ffn = nn.LayerNorm(d_model)
        self.self_value = nn.Linear(d_model, d_model)
        self.self_out = nn.Linear(d_model, d_model)
        self.cross_query = nn.Linear(d_model, d_model) if num_state_tokens > 1 else None
        self.cross_key = nn.Linear(d_model, d_model) if num_state_tokens > 1 else None
        self.cross_value = nn.Linear(d_model, d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), ffn_activation(), nn.Linear(ffn_dim, d_model))

    def encode_state(self, state_tokens: torch.Tensor) -> torch.Tensor:
        """Per-rollout cross-attention context: the attended output (1 token) or K/V (several)."""
        ctx = state_tokens if self.norm_context is None else self.norm_context(state_tokens)
        if self.num_state_tokens == 1:
            return self.cross_out(self.cross_value(ctx[..., 0, :]))
        return torch.stack([self.cross_key(ctx), self.cross_value(ctx)], dim=0)

    def cross_attend(self, y: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.num_state_tokens == 1:
            return context
        keys, values = context[0], context[1]
        query = self.cross_query(y if self.norm_query is None else self.norm_query(y))
        h = self.num_heads
        q = query.unflatten(-1, (h, -1)).unsqueeze(-2)  # [..., h, 1, dh]
        k = keys.unflatten(-1, (h, -1)).transpose(-3, -2)  # [..., h, n, dh]
        v = values.unflatten(-1, (h, -1)).transpose(-3, -2)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(-2).flatten(-2)
        return self.cross_out(out)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            y = self.norm_self(x + self.self_out(self.self_value(x)))
            y = self.norm_cross(y + self.cross_attend(y, context))
            return self.norm_ffn(y + self.ffn(y))
        y = x + self.self_out(self.self_value(self.norm_self(x)))
        y = y + self.cross_attend(y, context)
        return y + self.ffn(self.norm_ffn(y))

    def rollout_context(self, state_tokens: torch.Tensor) -> "_BlockContext":
        """Everything a K-step rollout can compute once: the context of :meth:`encode_state`, and
        the self-attention's two back-to-back linears fused into one,
        ``W_o (W_v x + b_v) + b_o = (W_o W_v) x + (W_o b_v + b_o)``. With one state token the
        cross-attention output is a per-rollout constant too, so it is folded with that bias into a
        single residual term. (The post-norm layout keeps only the state context: its norms sit
        between those terms.)"""
        if self.post_norm:
            return _BlockContext(None, None, self.encode_state(state_tokens))
        w_out = self.self_out.weight
        weight = w_out @ self.self_value.weight
        bias = F.linear(self.self_value.bias, w_out, self.self_out.bias)
        context = self.encode_state(state_tokens)
        if self.num_state_tokens == 1:
            return _BlockContext(weight, context + bias, None)
        return _BlockContext(weight, bias, context)

    def rollout_step(self, x: torch.Tensor, context: "_BlockContext") -> torch.Tensor:
        """:meth:`forward` with a :meth:`rollout_context` (same math, fewer ops per Euler step)."""
        if self.post_norm:
            return self.forward(x, context.keys_values)
        h = self.norm_self(x)
        if context.keys_values is None:  # one state token: y = x + W_sv LN(x) + (b_sv + cross)
            y = x + F.linear(h, context.weight) + context.residual
        else:
            y = x + F.linear(h, context.weight, context.residual)
            y = y + self.cross_attend(y, context.keys_values)
        return y + self.ffn(self.norm_ffn(y))


class _BlockContext:
    """Per-rollout constants of one decoder block (see :meth:`_DecoderBlock.rollout_context`)."""

    __slots__ = ("weight", "residual", "keys_values")

    def __init__(self, weight, residual, keys_values):
        self.weight = weight  # W_o W_v
        self.residual = residual  # b_sv (+ the single-token cross-attention output)
        self.keys_values = keys_values  # stacked cross K/V for several state tokens, else None


class _TransformerContext:
    """Per-rollout context of :class:`TransformerVelocity`: block contexts and time biases."""

    __slots__ = ("blocks", "time_bias")

    def __init__(self, blocks):
        self.blocks = blocks
        self.time_bias: dict[float, torch.Tensor] = {}


_NORM_LAYOUTS = ("pre_layernorm", "post_batchrenorm")
_TIME_EMBEDDINGS = ("sinusoidal", "mlp")
_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")


# flax's variance_scaling(1, "fan_in", "truncated_normal"): a normal truncated at ±2 std, rescaled
# by this factor so that the truncated draw still has std 1/√fan_in
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def lecun_normal_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module`` as flax's default ``Dense`` (lecun normal).

    Weights: truncated normal (at ±2 std) of std ``1/√fan_in``; biases: zero. The released SAC Flow
    code (JAX/flax) starts from this; PyTorch's default is ``U(±1/√fan_in)`` (std ``1/√(3·fan_in)``)
    with uniform biases. Returns ``module``.
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                std = layer.in_features**-0.5 / _TRUNCATED_NORMAL_STD
                nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


class TransformerVelocity(VelocityField):
    """Flow-T: a Transformer-decoder velocity (paper Eqs. 7–9).

    The action-time token ``Φ_A = E_A(A_i) + E_t(t_i)`` is refined by ``num_layers`` decoder
    blocks whose only access to the state is cross-attention to the state token(s)
    ``Φ_S = E_S(s)``; ``v = W_o(LN(Φ_A))``. The token never attends to other flow steps, so the
    flow stays Markov; the residual structure is what keeps the K-step backward pass well
    conditioned.

    The defaults are the paper's description (pre-norm LayerNorm blocks, sinusoidal time
    features, SiLU FFN). The paper's released MuJoCo code differs in ways that are options here,
    so its configuration can be reproduced and each difference measured
    (``benchmarks/paper_parity.py``): ``norm_layout="post_batchrenorm"`` (post-norm blocks with
    batch renormalisation, no norm on the state token nor before the head),
    ``time_embedding="mlp"`` (``1 → d/4 → d/2 → d`` SiLU MLP), ``ffn_activation="gelu"``,
    ``input_norm=True`` (batch renormalisation of the observation and, with one layer per Euler
    step, of ``A_i``), ``d_model=96``, ``obs_hidden=48``, and ``log_std_head=True`` (σ per step
    from the decoder's output). Every batch-renorm layer is an
    :class:`~torchrl_sacflow.modules.actor_norm.ActorBatchRenorm`: running statistics except while
    the actor is scored (:func:`~torchrl_sacflow.modules.actor_norm.batch_statistics`).

    Args:
        action_dim (int): action size ``d``.
        observation_dim (int): flat observation size.

    Keyword Args:
        d_model (int): token width. Default 64 (paper; the released code uses 96).
        num_heads (int): attention heads. Default 4.
        num_layers (int): decoder blocks. Default 2.
        ffn_dim (int, optional): FFN hidden width. Default ``4 * d_model``.
        obs_hidden (int): hidden width of the observation encoder. Default 32 (released: ``d/2``).
        time_dim (int): size of the sinusoidal time features. Default 16.
        num_state_tokens (int): how many tokens the state is encoded into. Default 1 (the paper's
            single state embedding); more tokens switch on real multi-token cross-attention.
        norm_layout (str): ``"pre_layernorm"`` (default) or ``"post_batchrenorm"`` (released code).
        time_embedding (str): ``"sinusoidal"`` (default) or ``"mlp"`` (released code).
        ffn_activation (str): ``"silu"`` (default), ``"gelu"`` (released code) or ``"relu"``.
        input_norm (bool): batch-renormalise the observation and each ``A_i``. Default ``False``.
            Needs ``num_steps`` (one layer per step) and flow times on the ``i/K`` grid.
        num_steps (int, optional): K, required by ``input_norm``.
        log_std_head (bool): add a head ``log σ_i = f(Φ_A)`` read by :meth:`step_with_log_std`
            (σ depending on the state, ``A_i`` and ``t_i``). Default ``False``.
        log_std_bounds (tuple of float): ``(low, high)`` of that head's smooth squashing. Default
            ``(-5, 2)``.
        log_std_init (str): that head's initialisation: ``"middle"`` (default: weights × 0.01,
            zero bias, so σ starts at the middle of the range for every state, like
            :class:`~torchrl_sacflow.modules.StateLogStd`) or ``"lecun_normal"`` (flax's default
            dense init, as in the released code: σ starts spread over the range).
        init (str): the other layers' initialisation. ``"torch"`` (default: PyTorch's
            ``nn.Linear`` init, weights ``U(±1/√fan_in)``, i.e. std ``1/√(3·fan_in)``, and uniform
            biases) or ``"lecun_normal"`` (flax's default dense init, the released code's:
            truncated-normal weights of std ``1/√fan_in`` and zero biases, so signals keep their
            scale through the unnormalised chains, e.g. the state encoder into cross-attention).

    Raises:
        ValueError: for an unknown layout/embedding/activation name, or ``input_norm`` without
            ``num_steps``.

    Examples:
        >>> v = TransformerVelocity(action_dim=2, observation_dim=3)
        >>> v(torch.zeros(5, 2), torch.zeros(5, 3), 0.75).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        action_dim: int,
        observation_dim: int,
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        ffn_dim: int | None = None,
        obs_hidden: int = 32,
        time_dim: int = 16,
        num_state_tokens: int = 1,
        norm_layout: str = "pre_layernorm",
        time_embedding: str = "sinusoidal",
        ffn_activation: str = "silu",
        input_norm: bool = False,
        num_steps: int | None = None,
        log_std_head: bool = False,
        log_std_bounds: Sequence[float] = (-5.0, 2.0),
        log_std_init: str = "middle",
        init: str = "torch",
    ):
        super().__init__(action_dim, observation_dim)
        _choice("init", init, ("torch", "lecun_normal"))
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_state_tokens < 1:
            raise ValueError(f"num_state_tokens must be >= 1, got {num_state_tokens}")
        _choice("norm_layout", norm_layout, _NORM_LAYOUTS)
        _choice("time_embedding", time_embedding, _TIME_EMBEDDINGS)
        _choice("ffn_activation", ffn_activation, _ACTIVATIONS)
        if input_norm and (num_steps is None or int(num_steps) < 1):
            raise ValueError("input_norm=True needs num_steps (K): one normalisation layer per Euler step")
        self.d_model = d_model
        self.num_state_tokens = num_state_tokens
        self.norm_layout, self.time_embedding_kind = norm_layout, time_embedding
        if time_embedding == "sinusoidal":
            self.time_embedding = _TimeEmbedding(time_dim)
            self.token_time = nn.Linear(time_dim, d_model, bias=False)
        else:
            self.time_mlp = nn.Sequential(
                nn.Linear(1, d_model // 4), nn.SiLU(), nn.Linear(d_model // 4, d_model // 2), nn.SiLU(),
                nn.Linear(d_model // 2, d_model),
            )
        self.token_action = nn.Linear(action_dim, d_model)
        self.state_encoder = nn.Sequential(
            nn.Linear(observation_dim, obs_hidden),
            nn.SiLU(),
            nn.Linear(obs_hidden, d_model * num_state_tokens),
        )
        self.num_steps = None if num_steps is None else int(num_steps)
        self.observation_norm = self.action_norms = None
        if input_norm:
            from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm

            self.observation_norm = ActorBatchRenorm(observation_dim)
            self.action_norms = nn.ModuleList(ActorBatchRenorm(action_dim) for _ in range(self.num_steps))
        ffn_dim = 4 * d_model if ffn_dim is None else ffn_dim
        self.blocks = nn.ModuleList(
            _DecoderBlock(d_model, num_heads, ffn_dim, num_state_tokens, norm_layout=norm_layout,
                          ffn_activation=_ACTIVATIONS[ffn_activation])
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(d_model) if norm_layout == "pre_layernorm" else None
        self.head = nn.Linear(d_model, action_dim)
        if init == "lecun_normal":
            lecun_normal_init_(self)
        self.log_std_head = None
        if log_std_head:
            low, high = (float(b) for b in log_std_bounds)
            if not low < high:
                raise ValueError(f"log_std_bounds must satisfy low < high, got {log_std_bounds}")
            self.log_std_low, self.log_std_high = low, high
            _choice("log_std_init", log_std_init, ("middle", "lecun_normal"))
            self.log_std_head = nn.Linear(d_model, action_dim)
            with torch.no_grad():
                if log_std_init == "middle":
                    self.log_std_head.weight.mul_(0.01)
                else:
                    nn.init.normal_(self.log_std_head.weight, std=d_model**-0.5)
                self.log_std_head.bias.zero_()

    def _time_token(self, column: torch.Tensor) -> torch.Tensor:
        """``E_t(t)`` for a ``[..., 1]`` column of flow times."""
        if self.time_embedding_kind == "mlp":
            return self.time_mlp(column)
        return self.token_time(self.time_embedding(column))

    def _step_index(self, time) -> int:
        t = float(time.reshape(-1)[0]) if isinstance(time, torch.Tensor) else float(time)
        if isinstance(time, torch.Tensor) and time.numel() > 1 and not bool((time == t).all()):
            raise ValueError("input_norm needs one flow time per call (its layers are per Euler step)")
        i = round(t * self.num_steps)
        if abs(i - t * self.num_steps) > 1e-4 or not 0 <= i < self.num_steps:
            raise ValueError(
                f"flow time {t} is not on the grid i/K of the K={self.num_steps} steps this velocity's "
                "input_norm layers were built for"
            )
        return i

    def encode_state(self, observation):
        if self.observation_norm is not None:
            observation = self.observation_norm(observation)
        tokens = self.state_encoder(observation).unflatten(-1, (self.num_state_tokens, self.d_model))
        return _TransformerContext([block.rollout_context(tokens) for block in self.blocks])

    def prepare_times(self, context, times):
        """The time part of the action-time token for every step at once (one call on the
        ``[K, 1]`` times), folded with the action projection's bias."""
        if not isinstance(context, _TransformerContext) or not len(times):
            return context
        times = [float(t) for t in times]
        weight = self.token_action.weight
        column = torch.tensor(times, dtype=weight.dtype, device=weight.device).unsqueeze(-1)
        bias = self._time_token(column) + self.token_action.bias
        context.time_bias.update(zip(times, bias.unbind(0)))
        return context

    def features(self, action, context, time) -> torch.Tensor:
        """The action-time token after the decoder blocks (what the heads read)."""
        if self.action_norms is not None:
            action = self.action_norms[self._step_index(time)](action)
        time_bias = None
        if isinstance(context, _TransformerContext) and not isinstance(time, torch.Tensor):
            time_bias = context.time_bias.get(float(time))
        if time_bias is not None:
            x = F.linear(action, self.token_action.weight, time_bias)
        else:
            if isinstance(time, torch.Tensor):
                column = _time_column(time, action)
            else:
                column = action.new_full((1,), float(time))
            x = self.token_action(action) + self._time_token(column)
        if isinstance(context, _TransformerContext):
            for block, ctx in zip(self.blocks, context.blocks):
                x = block.rollout_step(x, ctx)
        else:  # per-block contexts of _DecoderBlock.encode_state
            for block, ctx in zip(self.blocks, context):
                x = block(x, ctx)
        return x if self.norm_out is None else self.norm_out(x)

    def step(self, action, context, time):
        return self.head(self.features(action, context, time))

    def step_with_log_std(self, action, context, time) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, log σ_i)`` from one decoder pass (needs ``log_std_head=True``)."""
        if self.log_std_head is None:
            raise RuntimeError("this TransformerVelocity was built without log_std_head")
        h = self.features(action, context, time)
        x = torch.tanh(self.log_std_head(h))
        log_std = self.log_std_low + 0.5 * (self.log_std_high - self.log_std_low) * (x + 1.0)
        return self.head(h), log_std


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
