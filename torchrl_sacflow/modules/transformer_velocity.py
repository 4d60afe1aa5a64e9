"""Flow-T: the Transformer-decoder velocity v_θ(t, A, s) (paper Eqs. 7–9, docs/algorithm.md §2).

One form, :class:`_DecoderBlock.forward`, plus its fused fast path (:meth:`_DecoderBlock.rollout_context`
and :meth:`_DecoderBlock.rollout_step`): the same math with the per-rollout constants folded
(the self-attention's two linears into one, the single-token cross-attention output into the
residual bias). The fused path is taken while the speed paths are on (:mod:`torchrl_sacflow._fast`),
the plain form when they are off; ``tests/test_transformer_velocity.py`` checks the two equal.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_sacflow import _fast
from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm
from torchrl_sacflow.modules.velocity import VelocityField, _time_column

__all__ = ["TransformerVelocity", "lecun_normal_init_"]


class _TimeEmbedding(nn.Module):
    """Fixed sinusoidal features φ_t(t) of the flow time (frequencies 1 .. 2^(n/2-1))."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dim must be an even number >= 2, got {dim}")
        freqs = torch.pi * torch.pow(2.0, torch.arange(dim // 2, dtype=torch.float32))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        angles = time * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _BlockContext:
    """Per-rollout constants of one decoder block (see :meth:`_DecoderBlock.rollout_context`)."""

    __slots__ = ("weight", "residual", "keys_values")

    def __init__(self, weight, residual, keys_values):
        self.weight = weight  # W_o W_v (fused path), None: run the plain forward
        self.residual = residual  # b_sv (+ the single-token cross-attention output)
        self.keys_values = keys_values  # the block's encode_state (None when folded into residual)


class _DecoderBlock(nn.Module):
    """One decoder block: diagonal self-attention, state cross-attention, FFN.

    Self-attention under a diagonal mask lets each token attend only to itself, so its softmax
    weight is identically 1 and the block reduces to ``W_o W_v x``: queries and keys would be
    dead parameters and are not created. Cross-attention to a single state token is the same:
    its output ``W_o W_v Φ_S`` does not depend on the query at all and is computed once per
    rollout. Query/key projections exist only when the state has several tokens.

    ``norm_layout="pre_layernorm"`` (the paper): ``y = x + f(LN(x))`` for each sublayer, the
    state token normalised too. ``"post_batchrenorm"`` (the released code):
    ``y = BRN(x + f(x))``, no norm on the state token.
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
        if self.post_norm:
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
        """Per-rollout cross-attention context: the attended output (1 token) or K/V (several).

        Args:
            state_tokens (Tensor): ``[*batch, num_state_tokens, d_model]``.

        Returns:
            ``[*batch, d_model]`` (one token) or ``[2, *batch, num_state_tokens, d_model]`` (keys, values).
        """
        ctx = state_tokens if self.norm_context is None else self.norm_context(state_tokens)
        if self.num_state_tokens == 1:
            return self.cross_out(self.cross_value(ctx[..., 0, :]))
        return torch.stack([self.cross_key(ctx), self.cross_value(ctx)], dim=0)

    def cross_attend(self, y: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention of the ``[*batch, d_model]`` token ``y`` to the state (``context`` from :meth:`encode_state`)."""
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
        """The block on the ``[*batch, d_model]`` token ``x`` (``context`` from :meth:`encode_state`)."""
        if self.post_norm:
            y = self.norm_self(x + self.self_out(self.self_value(x)))
            y = self.norm_cross(y + self.cross_attend(y, context))
            return self.norm_ffn(y + self.ffn(y))
        y = x + self.self_out(self.self_value(self.norm_self(x)))
        y = y + self.cross_attend(y, context)
        return y + self.ffn(self.norm_ffn(y))

    def rollout_context(self, state_tokens: torch.Tensor, *, fuse: bool = True) -> _BlockContext:
        """Everything a K-step rollout can compute once.

        Always the context of :meth:`encode_state`. With ``fuse`` (and the pre-norm layout) also the
        self-attention's two back-to-back linears fused into one,
        ``W_o (W_v x + b_v) + b_o = (W_o W_v) x + (W_o b_v + b_o)``; with one state token the
        cross-attention output is a per-rollout constant too, so it is folded with that bias into a
        single residual term. The post-norm layout has nothing to fold (its norms sit between
        those terms).
        """
        context = self.encode_state(state_tokens)
        if self.post_norm or not fuse:
            return _BlockContext(None, None, context)
        w_out = self.self_out.weight
        weight = w_out @ self.self_value.weight
        bias = F.linear(self.self_value.bias, w_out, self.self_out.bias)
        if self.num_state_tokens == 1:
            return _BlockContext(weight, context + bias, None)
        return _BlockContext(weight, bias, context)

    def rollout_step(self, x: torch.Tensor, context: _BlockContext) -> torch.Tensor:
        """:meth:`forward` with a :meth:`rollout_context` (same math; fewer ops per Euler step when fused)."""
        if context.weight is None:
            return self.forward(x, context.keys_values)
        h = self.norm_self(x)
        if context.keys_values is None:  # one state token: y = x + W_sv LN(x) + (b_sv + cross)
            y = x + F.linear(h, context.weight) + context.residual
        else:
            y = x + F.linear(h, context.weight, context.residual)
            y = y + self.cross_attend(y, context.keys_values)
        return y + self.ffn(self.norm_ffn(y))


class _TransformerContext:
    """Per-rollout context of :class:`TransformerVelocity`: block contexts and time biases."""

    __slots__ = ("blocks", "time_bias")

    def __init__(self, blocks: list[_BlockContext]):
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

    def encode_state(self, observation: torch.Tensor) -> _TransformerContext:
        """The state tokens ``Φ_S = E_S(s)`` through each block's :meth:`~_DecoderBlock.rollout_context`
        (fused while :func:`torchrl_sacflow._fast.enabled`); ``observation`` is ``[*batch, observation_dim]``."""
        if self.observation_norm is not None:
            observation = self.observation_norm(observation)
        tokens = self.state_encoder(observation).unflatten(-1, (self.num_state_tokens, self.d_model))
        fuse = _fast.enabled()
        return _TransformerContext([block.rollout_context(tokens, fuse=fuse) for block in self.blocks])

    def prepare_times(self, context: _TransformerContext, times: Sequence[float]) -> _TransformerContext:
        """The time part of the action-time token for every step at once (one call on the
        ``[K, 1]`` times), folded with the action projection's bias."""
        if not len(times):
            return context
        times = [float(t) for t in times]
        weight = self.token_action.weight
        column = torch.tensor(times, dtype=weight.dtype, device=weight.device).unsqueeze(-1)
        bias = self._time_token(column) + self.token_action.bias
        context.time_bias.update(zip(times, bias.unbind(0)))
        return context

    def features(self, action: torch.Tensor, context: _TransformerContext, time) -> torch.Tensor:
        """The action-time token after the decoder blocks (what the heads read), ``[*batch, d_model]``.

        Args:
            action (Tensor): ``A_i``, ``[*batch, action_dim]``.
            context: from :meth:`encode_state` (optionally through :meth:`prepare_times`).
            time (float or Tensor): ``t_i``, a float or a ``[*batch, 1]`` tensor.
        """
        if self.action_norms is not None:
            action = self.action_norms[self._step_index(time)](action)
        time_bias = None if isinstance(time, torch.Tensor) else context.time_bias.get(float(time))
        if time_bias is not None:
            x = F.linear(action, self.token_action.weight, time_bias)
        else:
            if isinstance(time, torch.Tensor):
                column = _time_column(time, action)
            else:
                column = action.new_full((1,), float(time))
            x = self.token_action(action) + self._time_token(column)
        for block, block_context in zip(self.blocks, context.blocks):
            x = block.rollout_step(x, block_context)
        return x if self.norm_out is None else self.norm_out(x)

    def step(self, action, context, time):
        return self.head(self.features(action, context, time))

    def step_with_log_std(self, action, context, time) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, log σ_i)`` from one decoder pass (needs ``log_std_head=True``).

        Raises:
            RuntimeError: if the velocity was built without ``log_std_head``.
        """
        if self.log_std_head is None:
            raise RuntimeError("this TransformerVelocity was built without log_std_head")
        h = self.features(action, context, time)
        x = torch.tanh(self.log_std_head(h))
        log_std = self.log_std_low + 0.5 * (self.log_std_high - self.log_std_low) * (x + 1.0)
        return self.head(h), log_std
