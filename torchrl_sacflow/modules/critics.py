"""Q(s, a) critics for SAC Flow, as TorchRL ``ValueOperator``s."""
from __future__ import annotations

from typing import Sequence

from torch import nn
from torchrl.modules import MLP, ValueOperator

__all__ = ["make_qvalue"]


def make_qvalue(
    observation_dim: int,
    action_dim: int,
    *,
    num_cells: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    in_keys: Sequence = ("observation", "action"),
    out_key: str = "state_action_value",
) -> ValueOperator:
    """A textbook SAC critic: an MLP on ``[s, a]`` writing ``"state_action_value"``.

    ``SACLoss``/``SACFlowLoss`` duplicate it into ``num_qvalue_nets`` independent copies.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = make_qvalue(4, 2)
        >>> td = TensorDict({"observation": torch.randn(3, 4), "action": torch.randn(3, 2)}, [3])
        >>> q(td)["state_action_value"].shape
        torch.Size([3, 1])
    """
    net = MLP(
        in_features=observation_dim + action_dim,
        out_features=1,
        num_cells=list(num_cells),
        activation_class=activation,
    )
    return ValueOperator(net, in_keys=list(in_keys), out_keys=[out_key])
