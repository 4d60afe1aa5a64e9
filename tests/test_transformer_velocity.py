"""Flow-T: the fused rollout path (speed paths on) equals the plain decoder blocks (speed paths off)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from torchrl_sacflow import _fast
from torchrl_sacflow.modules import TransformerVelocity

ACT, OBS, K = 3, 5, 4


def _rollout(velocity: TransformerVelocity, action: torch.Tensor, observation: torch.Tensor, *, fused: bool):
    """K Euler steps with the context prepared once, as the flow actor runs them."""
    times = [i / K for i in range(K)]
    with _fast_state(fused):
        context = velocity.prepare_times(velocity.encode_state(observation), times)
    a = action
    for t in times:
        a = a + velocity.step(a, context, t) / K
    return a, context


@contextlib.contextmanager
def _fast_state(on: bool):
    """The speed paths switched ``on`` or off within the block."""
    previous = _fast.enabled()
    _fast.set_enabled(on)
    try:
        yield
    finally:
        _fast.set_enabled(previous)


@pytest.mark.parametrize("options", [
    {},
    {"num_state_tokens": 3},
    {"num_layers": 3, "ffn_activation": "gelu", "time_embedding": "mlp"},
    {"norm_layout": "post_batchrenorm", "input_norm": True, "num_steps": K},
], ids=["paper", "three_state_tokens", "mlp_time_gelu", "released_layout"])
def test_fused_rollout_equals_plain_blocks(options):
    torch.manual_seed(0)
    velocity = TransformerVelocity(ACT, OBS, d_model=32, num_heads=4, **options)
    action, observation = torch.randn(16, ACT), torch.randn(16, OBS)

    fused, fused_context = _rollout(velocity, action, observation, fused=True)
    fused_grads = torch.autograd.grad(fused.square().sum(), list(velocity.parameters()), allow_unused=True)
    plain, plain_context = _rollout(velocity, action, observation, fused=False)
    plain_grads = torch.autograd.grad(plain.square().sum(), list(velocity.parameters()), allow_unused=True)

    pre_norm = options.get("norm_layout", "pre_layernorm") == "pre_layernorm"
    # the switch picked the forms: folded self-attention weights only when fused (and pre-norm)
    assert all((c.weight is not None) == pre_norm for c in fused_context.blocks)
    assert all(c.weight is None for c in plain_context.blocks)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for (name, _), a, b in zip(velocity.named_parameters(), fused_grads, plain_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"gradient of {name} differs")


def test_plain_block_is_the_pre_norm_decoder():
    """The plain pre-norm block written out by hand: ``y = x + W_o W_v LN(x) + cross; y + FFN(LN(y))``."""
    torch.manual_seed(1)
    velocity = TransformerVelocity(ACT, OBS, d_model=16, num_heads=2)
    block = velocity.blocks[0]
    x, tokens = torch.randn(7, 16), torch.randn(7, 1, 16)
    cross = block.cross_out(block.cross_value(block.norm_context(tokens)[:, 0]))
    y = x + block.self_out(block.self_value(block.norm_self(x))) + cross
    expected = y + block.ffn(block.norm_ffn(y))
    torch.testing.assert_close(block(x, block.encode_state(tokens)), expected)
    with _fast_state(True):
        fused_context = block.rollout_context(tokens)
    torch.testing.assert_close(block.rollout_step(x, fused_context), expected, rtol=1e-5, atol=1e-5)
