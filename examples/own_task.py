"""Train SAC Flow on your own task: a TorchRL env of your own, the library's pieces, TorchRL's loop.

    python -m examples.own_task                                  # this file's loop, ~1 min on a CPU
    python -m recipes.train_mujoco env=custom env.make=examples.own_task:point_mass \\
        env.observation_keys=[position,velocity]                 # the same env through the recipe

``PointMass`` stands in for your task: any TorchRL ``EnvBase`` with a bounded continuous
``"action"``, a ``"reward"`` and the done flags works; its observation entries are named by
``env.observation_keys`` (concatenated into ``"observation"`` by TorchRL's ``CatTensors``).
"""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical, Composite, LazyTensorStorage, TensorDictReplayBuffer, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from torchrl_sacflow import SACFlowLoss, make_flow_actor, make_qvalue
from torchrl_sacflow.objectives import FusedSoftUpdate
from torchrl_sacflow.training import evaluate, make_env


class PointMass(EnvBase):
    """A 2-D point mass pushed towards the origin: reward ``−‖position‖``, 50-step episodes.

    Observation entries ``"position"`` and ``"velocity"`` (2 each), action: a force in ``[−1, 1]²``.
    A uniformly random policy scores about −90 per episode (−35 to −210); one that goes to the origin
    and stops there about −5.
    """

    def __init__(self, max_steps: int = 50):
        super().__init__(batch_size=torch.Size([]))
        self.max_steps = max_steps
        self.rng = torch.Generator().manual_seed(0)
        self.observation_spec = Composite(position=Unbounded(shape=(2,)), velocity=Unbounded(shape=(2,)),
                                          t=Unbounded(shape=(1,), dtype=torch.int64))
        self.action_spec = Bounded(-1.0, 1.0, shape=(2,))
        self.reward_spec = Unbounded(shape=(1,))
        flag = Categorical(2, shape=(1,), dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone())

    def _reset(self, tensordict: TensorDictBase | None) -> TensorDictBase:
        position = torch.rand(2, generator=self.rng) * 2 - 1
        return TensorDict(position=position, velocity=torch.zeros(2), t=torch.zeros(1, dtype=torch.int64))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        velocity = 0.8 * tensordict["velocity"] + 0.1 * tensordict["action"]
        position = tensordict["position"] + velocity
        t = tensordict["t"] + 1
        done = t >= self.max_steps
        return TensorDict(position=position, velocity=velocity, t=t, reward=-position.norm().reshape(1),
                          done=done, terminated=torch.zeros(1, dtype=torch.bool), truncated=done)

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator().manual_seed(seed or 0)


def point_mass() -> PointMass:
    """The factory ``env.make`` points at: no arguments, returns a TorchRL env."""
    return PointMass()


def train(total_frames: int = 3000, seed: int = 0) -> float:
    """SAC Flow-T on ``PointMass`` with a TorchRL collector and replay buffer; returns the final eval return."""
    torch.manual_seed(seed)
    env = make_env(factory=point_mass, observation_keys=["position", "velocity"], seed=seed)
    actor = make_flow_actor(env.action_spec, 4, velocity="transformer", velocity_kwargs={"d_model": 32})
    loss = SACFlowLoss(actor, make_qvalue(4, 2, num_cells=(64, 64)))  # target entropy 0, α 0.2
    loss.make_value_estimator(gamma=0.95)
    target = FusedSoftUpdate(loss, tau=0.01)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(total_frames), batch_size=128)
    collector = Collector(env, actor, frames_per_batch=100, total_frames=total_frames, init_random_frames=500,
                          auto_register_policy_transforms=False)  # (not a recurrent policy)
    for data in collector:
        buffer.extend(data.reshape(-1))
        if len(buffer) < 500:
            continue
        for _ in range(100):
            out = loss(buffer.sample())
            optim.zero_grad()
            (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
            optim.step()
            target.step()
        collector.update_policy_weights_()
    collector.shutdown()
    return evaluate(env, actor, num_episodes=5, max_steps=50, exploration_type=ExplorationType.DETERMINISTIC)["return_mean"]


if __name__ == "__main__":
    print(f"final deterministic eval return: {train():.1f}")
