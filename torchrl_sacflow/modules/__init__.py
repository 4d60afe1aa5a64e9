from torchrl_sacflow._fast.direct_actor import DirectProbabilisticActor
from torchrl_sacflow._fast.tanh_normal import FusedTanhNormal
from torchrl_sacflow.modules.flow_actor import (
    FlowActor,
    FlowPathDistribution,
    FlowRollout,
    FlowStateModule,
    StateLogStd,
    get_flow_rollout,
    make_flow_actor,
)
from torchrl_sacflow.modules.velocity import (
    GatedVelocity,
    MLPVelocity,
    VelocityField,
    velocity_module,
)
from torchrl_sacflow.modules.transformer_velocity import TransformerVelocity
from torchrl_sacflow.modules.critics import make_crossq_qvalue, make_qvalue
from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm, batch_statistics
