"""SAC Flow for TorchRL: flow-matching policies trained end to end with off-policy SAC.

Public API::

    from torchrl_sacflow import (make_flow_actor, SACFlowLoss, FlowMatchingLoss,
                                 MLPVelocity, GatedVelocity, TransformerVelocity)
"""
from torchrl_sacflow.modules import (
    DirectProbabilisticActor,
    FlowActor,
    FlowPathDistribution,
    FlowRollout,
    GatedVelocity,
    MLPVelocity,
    TransformerVelocity,
    VelocityField,
    get_flow_rollout,
    make_crossq_qvalue,
    make_flow_actor,
    make_qvalue,
    velocity_module,
)
import torchrl_sacflow.envs  # noqa: F401  (registers the multimodal gymnasium tasks)
from torchrl_sacflow.objectives import CrossQFlowLoss, FlowMatchingLoss, FQLLoss, FusedSoftUpdate, SACFlowLoss

__version__ = "0.1.0"

__all__ = [
    "make_flow_actor",
    "get_flow_rollout",
    "SACFlowLoss",
    "FlowMatchingLoss",
    "MLPVelocity",
    "GatedVelocity",
    "TransformerVelocity",
    "VelocityField",
    "FlowActor",
    "DirectProbabilisticActor",
    "FlowRollout",
    "FlowPathDistribution",
    "velocity_module",
    "make_qvalue",
    "make_crossq_qvalue",
    "CrossQFlowLoss",
    "FQLLoss",
    "FusedSoftUpdate",
]
