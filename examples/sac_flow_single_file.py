"""SAC Flow in one file of plain PyTorch (CleanRL style): read it top to bottom.

    python -m examples.sac_flow_single_file                                  # Flow-T on Pendulum-v1
    python -m examples.sac_flow_single_file --policy flow_g --total-steps 20000
    python -m examples.sac_flow_single_file --critic crossq --env-id HalfCheetah-v4

What an experienced PyTorch user would write in an afternoon from the paper (arXiv 2509.25756) and
``docs/algorithm.md``, without tensordict or TorchRL and without importing ``torchrl_sacflow``:
nn.Modules for the networks, a loop over the K Euler steps, twin critics as two separate MLPs with
deep-copied targets, three ``torch.optim.Adam`` with default settings, a Polyak loop over the target
parameters; at the bottom a replay buffer of preallocated tensors and the training loop on a
gymnasium env (``main``). The library computes the same update through TorchRL: for equal
parameters and noise the losses and the updated parameters agree (``tests/test_yardstick.py``), and
``python -m benchmarks.perf.throughput`` times the two side by side (this file is its yardstick).

It is plain, not slowed down: state-only work (the σ head) runs once per rollout, the critic target
runs under ``no_grad``, the critics' parameters are frozen during the actor's backward pass (as
Spinning Up does), and nothing calls ``.item()``. It also is not tuned: each velocity network is
an ordinary ``v(a, s, t)`` module evaluated on ``[a, s, t]`` at every Euler step, as the paper
writes it.

Same networks and math as the library's recipe (``python -m benchmarks.perf.throughput --check``
verifies equal losses and equal updated parameters for equal parameters and noise):

* MLP velocity: ``MLP([a, s, t])``, hidden (256, 256), ReLU.
* Flow-G: gate ``σ(z([a, s, t]))`` and candidate ``κ tanh(c([a, s, t]))`` MLPs (hidden 128, SiLU),
  ``v = g ⊙ (ĉ − a)``; the gate head starts at weight 0, bias 5.
* Flow-T: sinusoidal time features, action-time token, state token from a 2-layer encoder, pre-norm
  decoder blocks. A token that may attend only to itself (diagonal self-attention mask) or to one
  state token has softmax weight 1, so each attention is ``W_o W_v (·)`` of its (normed) key/value;
  query and key projections would be dead weights and are not created (same parameter set as the
  library's :class:`TransformerVelocity`).
* σ: a state-only ``256-256`` ReLU head, ``log σ = low + (high − low)(tanh(x) + 1)/2``.
* Noisy rollout ``A_{i+1} = A_i + b Δt + σ √Δt ε_i`` with the drift correction
  ``b = v (1 − t + tσ²/2)/(1 − t) − A σ²/(2(1 − t))``; log-density of the path from the noise
  draws; ``tanh`` Jacobian ``2(log 2 − x − softplus(−2x))``; affine rescale to the action bounds.
* Gaussian baseline: Tanh-Normal MLP actor (256, 256), scale ``softplus(x + b) + 0.01`` with
  ``softplus(b) = 0.99``, clamped at 1e-4.
* Critics ``Q(s, a)``: MLP (256, 256) ReLU, two of them, soft targets (τ = 0.005).
* Losses: ``y = r + γ(1 − term)(min Q̄(s', a') − α log p')``, ``L_Q = Σ_j mean (Q_j − y)²``,
  ``L_π = mean(α log p − min Q)``, ``L_α = −log α · mean(log p + H)``, one step each per update
  (critic, target update, actor, temperature — CleanRL's order).

CrossQ variant (:class:`CrossQ`, ``make_agent(..., critic="crossq")``; the recipe's
``critic=crossq``, paper arXiv 2509.25756 §MuJoCo on CrossQ, Bhatt et al. ICLR 2024):

* Critics: ``BRN → [Linear → ReLU → BRN] × L → Linear(1)`` (hidden (1024, 1024) in the recipe), two
  separate modules, no target network. ``BatchRenorm`` is written out here: in train mode it
  normalises with the batch's mean and (biased) variance, gradient through them, times the
  detached corrections ``r = clip(σ_B/σ_run, 1/3, 3)``, ``d = clip((μ_B − μ_run)/σ_run, −5, 5)``
  (``r = 1, d = 0`` for the first ``warmup_steps`` training batches: a step counter that stops at
  ``warmup_steps``), and moves the running mean and variance ``momentum`` = 0.01 of the way to the
  batch's (variance unbiased); in eval mode it uses the running statistics only; ε = 1e-3.
* Critic step: ``a' ~ π(·|s')`` under ``no_grad`` with the actor in eval mode; both critics in
  train mode run once on the joint batch ``[(s, a); (s', a')]``; ``y = r + γ(1 − term)(min_j
  Q_j(s', a') − α log p')`` from that same forward, detached; ``L_Q = Σ_j mean (Q_j(s, a) − y)²``.
* Actor and temperature steps as above, with the critics in eval mode (running statistics, not
  updated) and their parameters frozen, only every ``policy_delay`` (3) critic steps, starting with
  the first.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLPVelocity",
    "GatedVelocity",
    "TransformerVelocity",
    "FlowActor",
    "GaussianActor",
    "SAC",
    "BatchRenorm",
    "CrossQ",
    "make_agent",
    "ReplayBuffer",
    "Args",
    "main",
]

LOG_2PI = math.log(2.0 * math.pi)


def mlp(sizes, activation) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# velocity networks v(a, s, t)
# --------------------------------------------------------------------------------------------
class MLPVelocity(nn.Module):
    def __init__(self, act_dim, obs_dim, hidden=(256, 256)):
        super().__init__()
        self.net = mlp([act_dim + obs_dim + 1, *hidden, act_dim], nn.ReLU)

    def forward(self, a, s, t):
        return self.net(torch.cat([a, s, t], dim=-1))


class GatedVelocity(nn.Module):
    def __init__(self, act_dim, obs_dim, hidden=(128, 128), kappa=50.0):
        super().__init__()
        self.kappa = kappa
        self.gate = mlp([act_dim + obs_dim + 1, *hidden, act_dim], nn.SiLU)
        self.cand = mlp([act_dim + obs_dim + 1, *hidden, act_dim], nn.SiLU)
        with torch.no_grad():
            self.gate[-1].weight.zero_()
            self.gate[-1].bias.fill_(5.0)

    def forward(self, a, s, t):
        x = torch.cat([a, s, t], dim=-1)
        g = torch.sigmoid(self.gate(x))
        c = self.kappa * torch.tanh(self.cand(x))
        return g * (c - a)


class DecoderBlock(nn.Module):
    def __init__(self, d_model, ffn_dim):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_v = nn.Linear(d_model, d_model)
        self.self_o = nn.Linear(d_model, d_model)
        self.ln_ctx = nn.LayerNorm(d_model)
        self.cross_v = nn.Linear(d_model, d_model)
        self.cross_o = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.SiLU(), nn.Linear(ffn_dim, d_model))

    def forward(self, x, state_token):
        x = x + self.self_o(self.self_v(self.ln1(x)))  # attends to itself only: weight 1
        x = x + self.cross_o(self.cross_v(self.ln_ctx(state_token)))  # one key: weight 1
        return x + self.ffn(self.ln2(x))


class TransformerVelocity(nn.Module):
    def __init__(self, act_dim, obs_dim, d_model=64, num_layers=2, obs_hidden=32, time_dim=16):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(time_dim // 2).float())
        self.time_proj = nn.Linear(time_dim, d_model, bias=False)
        self.action_proj = nn.Linear(act_dim, d_model)
        self.obs_enc = nn.Sequential(nn.Linear(obs_dim, obs_hidden), nn.SiLU(), nn.Linear(obs_hidden, d_model))
        self.blocks = nn.ModuleList(DecoderBlock(d_model, 4 * d_model) for _ in range(num_layers))
        self.ln_out = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, act_dim)

    def forward(self, a, s, t):
        ang = t * self.freqs
        x = self.action_proj(a) + self.time_proj(torch.cat([ang.sin(), ang.cos()], dim=-1))
        state_token = self.obs_enc(s)
        for block in self.blocks:
            x = block(x, state_token)
        return self.out(self.ln_out(x))


VELOCITIES = {"flow_t": TransformerVelocity, "flow_g": GatedVelocity, "flow_mlp": MLPVelocity}


# --------------------------------------------------------------------------------------------
# actors: sample(obs) -> (action, log p)
# --------------------------------------------------------------------------------------------
def tanh_logdet(x):
    return (2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))).sum(-1)


class FlowActor(nn.Module):
    def __init__(self, velocity, act_dim, obs_dim, num_steps=4, low=-1.0, high=1.0, log_std_bounds=(-5.0, 2.0)):
        super().__init__()
        self.velocity = velocity
        self.act_dim = act_dim
        self.num_steps = num_steps
        self.log_std_low, self.log_std_high = log_std_bounds
        self.log_std_net = mlp([obs_dim, 256, 256, act_dim], nn.ReLU)
        with torch.no_grad():
            self.log_std_net[-1].weight.mul_(0.01)
            self.log_std_net[-1].bias.zero_()
        low = torch.as_tensor(low, dtype=torch.float32).expand(act_dim)
        high = torch.as_tensor(high, dtype=torch.float32).expand(act_dim)
        self.register_buffer("a_loc", (high + low) / 2)
        self.register_buffer("a_scale", (high - low) / 2)

    def sample(self, s):
        K, d = self.num_steps, self.act_dim
        dt = 1.0 / K
        u = torch.tanh(self.log_std_net(s))
        log_std = self.log_std_low + 0.5 * (self.log_std_high - self.log_std_low) * (u + 1.0)
        std = log_std.exp()
        var = std * std
        a = torch.randn(s.shape[0], d, device=s.device)
        logp = -0.5 * (a * a).sum(-1) - 0.5 * d * LOG_2PI
        for i in range(K):
            t = i * dt
            v = self.velocity(a, s, torch.full((s.shape[0], 1), t, device=s.device))
            drift = v * (1.0 - t + t * var / 2.0) / (1.0 - t) - a * var / (2.0 * (1.0 - t))
            eps = torch.randn_like(a)
            a = a + drift * dt + std * math.sqrt(dt) * eps
            logp = logp - 0.5 * (eps * eps).sum(-1) - (log_std + 0.5 * math.log(dt)).sum(-1) - 0.5 * d * LOG_2PI
        logp = logp - tanh_logdet(a) - self.a_scale.log().sum()
        return self.a_loc + self.a_scale * torch.tanh(a), logp


class GaussianActor(nn.Module):
    def __init__(self, act_dim, obs_dim, hidden=(256, 256), low=-1.0, high=1.0):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 2 * act_dim], nn.ReLU)
        self.scale_bias = math.log(math.expm1(1.0 - 0.01))  # softplus(0 + bias) + 0.01 = 1
        low = torch.as_tensor(low, dtype=torch.float32).expand(act_dim)
        high = torch.as_tensor(high, dtype=torch.float32).expand(act_dim)
        self.register_buffer("a_loc", (high + low) / 2)
        self.register_buffer("a_scale", (high - low) / 2)

    def sample(self, s):
        loc, scale = self.net(s).chunk(2, dim=-1)
        scale = (F.softplus(scale + self.scale_bias) + 0.01).clamp_min(1e-4)
        x = loc + scale * torch.randn_like(loc)
        logp = (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
        logp = logp - tanh_logdet(x) - self.a_scale.log().sum()
        return self.a_loc + self.a_scale * torch.tanh(x), logp


# --------------------------------------------------------------------------------------------
# the update
# --------------------------------------------------------------------------------------------
class SAC:
    """SAC with twin soft-target critics, α auto-tuning and Adam; ``update(*batch)`` = one step."""

    def __init__(self, actor, obs_dim, act_dim, *, hidden=(256, 256), gamma=0.99, tau=0.005,
                 alpha_init=0.2, target_entropy=0.0, actor_lr=3e-4, critic_lr=1e-3, alpha_lr=1e-3,
                 actor_betas=(0.5, 0.999), critic_betas=(0.9, 0.999), device="cpu"):
        self.actor = actor.to(device)
        self.q1 = self.make_critic(obs_dim + act_dim, hidden).to(device)
        self.q2 = self.make_critic(obs_dim + act_dim, hidden).to(device)
        self.make_targets()
        self.q_params = list(self.q1.parameters()) + list(self.q2.parameters())
        self.log_alpha = torch.tensor(math.log(alpha_init), device=device, requires_grad=True)
        self.gamma, self.tau, self.target_entropy = gamma, tau, target_entropy
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, betas=actor_betas)
        self.q_opt = torch.optim.Adam(self.q_params, lr=critic_lr, betas=critic_betas)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=alpha_lr)

    def make_critic(self, in_dim, hidden) -> nn.Module:
        return mlp([in_dim, *hidden, 1], nn.ReLU)

    def make_targets(self):
        self.q1_target = copy.deepcopy(self.q1)
        self.q2_target = copy.deepcopy(self.q2)
        for p in list(self.q1_target.parameters()) + list(self.q2_target.parameters()):
            p.requires_grad_(False)

    def critic_step(self, obs, act, rew, next_obs, term):
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
            sa_next = torch.cat([next_obs, next_act], dim=-1)
            q_next = torch.min(self.q1_target(sa_next), self.q2_target(sa_next)).squeeze(-1)
            y = rew + self.gamma * (1.0 - term) * (q_next - alpha * next_logp)
        sa = torch.cat([obs, act], dim=-1)
        q1, q2 = self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)
        q_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        return q_loss.detach()

    def soft_update(self):
        with torch.no_grad():
            for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, p_t in zip(net.parameters(), target.parameters()):
                    p_t.mul_(1.0 - self.tau).add_(self.tau * p)

    def actor_step(self, obs):
        alpha = self.log_alpha.detach().exp()
        for p in self.q_params:
            p.requires_grad_(False)
        act, logp = self.actor.sample(obs)
        sa = torch.cat([obs, act], dim=-1)
        q = torch.min(self.q1(sa), self.q2(sa)).squeeze(-1)
        actor_loss = (alpha * logp - q).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        for p in self.q_params:
            p.requires_grad_(True)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        return actor_loss.detach(), alpha_loss.detach(), -logp.detach().mean()

    def update(self, obs, act, rew, next_obs, term):
        """One SAC step on a batch (``rew`` and ``term`` are ``[B]`` float tensors); returns the
        detached critic, actor and temperature losses, α and the entropy estimate ``−mean log p``."""
        q_loss = self.critic_step(obs, act, rew, next_obs, term)
        self.soft_update()
        actor_loss, alpha_loss, entropy = self.actor_step(obs)
        return q_loss, actor_loss, alpha_loss, self.log_alpha.detach().exp(), entropy


# --------------------------------------------------------------------------------------------
# CrossQ: batch-renormalised critics, no target network, joint (s, a) / (s', a') batch
# --------------------------------------------------------------------------------------------
class BatchRenorm(nn.Module):
    """Batch renormalisation (Ioffe 2017) of a ``[batch, features]`` input, as CrossQ uses it."""

    def __init__(self, num_features, momentum=0.01, eps=1e-3, max_r=3.0, max_d=5.0, warmup_steps=100_000):
        super().__init__()
        self.momentum, self.eps, self.max_r, self.max_d = momentum, eps, max_r, max_d
        self.warmup_steps = warmup_steps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if not self.training:
            x = (x - self.running_mean) / (self.running_var + self.eps).sqrt()
            return x * self.weight + self.bias
        mean = x.mean(0)
        var = x.var(0, unbiased=False)
        std = (var + self.eps).sqrt()
        with torch.no_grad():
            running_std = (self.running_var + self.eps).sqrt()
            r = (std / running_std).clamp(1.0 / self.max_r, self.max_r)
            d = ((mean - self.running_mean) / running_std).clamp(-self.max_d, self.max_d)
            if self.warmup_steps > 0:  # plain batch norm until the counter reaches warmup_steps
                warm = (self.num_batches_tracked >= self.warmup_steps).to(x.dtype)
                r = 1.0 + (r - 1.0) * warm
                d = d * warm
            n = x.shape[0]
            self.running_mean += self.momentum * (mean - self.running_mean)
            self.running_var += self.momentum * (var * n / (n - 1) - self.running_var)
            self.num_batches_tracked += 1
            if self.warmup_steps > 0:
                self.num_batches_tracked.clamp_(max=self.warmup_steps)
        x = (x - mean) / std * r + d
        return x * self.weight + self.bias


class CrossQ(SAC):
    """SAC with CrossQ critics: no targets, joint critic batch, actor and α every ``policy_delay``."""

    def __init__(self, actor, obs_dim, act_dim, *, hidden=(1024, 1024), policy_delay=3, momentum=0.01,
                 eps=1e-3, max_r=3.0, max_d=5.0, warmup_steps=100_000, **sac_kwargs):
        self.brn_kwargs = dict(momentum=momentum, eps=eps, max_r=max_r, max_d=max_d, warmup_steps=warmup_steps)
        self.policy_delay = policy_delay
        self.num_updates = 0
        self.last_actor = None
        super().__init__(actor, obs_dim, act_dim, hidden=hidden, **sac_kwargs)

    def make_critic(self, in_dim, hidden) -> nn.Module:
        layers = [BatchRenorm(in_dim, **self.brn_kwargs)]
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), BatchRenorm(width, **self.brn_kwargs)]
            in_dim = width
        layers.append(nn.Linear(in_dim, 1))
        return nn.Sequential(*layers)

    def make_targets(self):
        pass  # CrossQ has no target network

    def critic_step(self, obs, act, rew, next_obs, term):
        alpha = self.log_alpha.detach().exp()
        self.actor.eval()
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
        self.actor.train()
        self.q1.train()
        self.q2.train()
        sa = torch.cat([torch.cat([obs, act], dim=-1), torch.cat([next_obs, next_act], dim=-1)], dim=0)
        q1, q2 = self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)
        n = obs.shape[0]
        with torch.no_grad():
            q_next = torch.min(q1[n:], q2[n:])
            y = rew + self.gamma * (1.0 - term) * (q_next - alpha * next_logp)
        q_loss = ((q1[:n] - y) ** 2).mean() + ((q2[:n] - y) ** 2).mean()
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        return q_loss.detach()

    def actor_step(self, obs):
        self.q1.eval()  # running statistics, not updated
        self.q2.eval()
        return super().actor_step(obs)

    def update(self, obs, act, rew, next_obs, term):
        """One CrossQ critic step, and an actor and α step on every ``policy_delay``-th call
        (the first included); returns what :meth:`SAC.update` returns, the last actor step's
        values on calls without one."""
        q_loss = self.critic_step(obs, act, rew, next_obs, term)
        if self.num_updates % self.policy_delay == 0:
            self.last_actor = self.actor_step(obs)
        self.num_updates += 1
        actor_loss, alpha_loss, entropy = self.last_actor
        return q_loss, actor_loss, alpha_loss, self.log_alpha.detach().exp(), entropy


def make_agent(policy, obs_dim, act_dim, *, num_steps=4, critic="sac", device="cpu", low=-1.0, high=1.0,
               **sac_kwargs):
    """The agent for ``policy`` in ``flow_t``, ``flow_g``, ``flow_mlp``, ``gaussian`` and ``critic``
    in ``sac`` (:class:`SAC`), ``crossq`` (:class:`CrossQ`).

    ``sac_kwargs`` go to that class (γ, τ, α_0, learning rates, Adam betas, critic widths
    ``hidden``; for CrossQ also ``policy_delay`` and the batch-renorm settings). The Gaussian
    policy's target entropy is ``−|A|`` and its Adam β1 0.9; the flow policies' 0 and 0.5.
    """
    cls = {"sac": SAC, "crossq": CrossQ}[critic]
    if policy == "gaussian":
        actor = GaussianActor(act_dim, obs_dim, low=low, high=high)
        sac_kwargs.setdefault("actor_betas", (0.9, 0.999))
        return cls(actor, obs_dim, act_dim, target_entropy=-float(act_dim), device=device, **sac_kwargs)
    velocity = VELOCITIES[policy](act_dim, obs_dim)
    actor = FlowActor(velocity, act_dim, obs_dim, num_steps=num_steps, low=low, high=high)
    return cls(actor, obs_dim, act_dim, device=device, **sac_kwargs)


# --------------------------------------------------------------------------------------------
# the training loop: a replay buffer of plain tensors, a gymnasium env, one update per env step
# --------------------------------------------------------------------------------------------
class ReplayBuffer:
    """A ring buffer of ``(obs, act, rew, next_obs, term)`` in preallocated tensors."""

    def __init__(self, size, obs_dim, act_dim):
        self.obs = torch.zeros(size, obs_dim)
        self.act = torch.zeros(size, act_dim)
        self.rew = torch.zeros(size)
        self.next_obs = torch.zeros(size, obs_dim)
        self.term = torch.zeros(size)
        self.size, self.n, self.i = size, 0, 0

    def add(self, obs, act, rew, next_obs, term):
        j = self.i
        self.obs[j], self.act[j], self.next_obs[j] = torch.as_tensor(obs), torch.as_tensor(act), torch.as_tensor(next_obs)
        self.rew[j], self.term[j] = float(rew), float(term)
        self.i, self.n = (j + 1) % self.size, min(self.n + 1, self.size)

    def sample(self, batch_size):
        idx = torch.randint(0, self.n, (batch_size,))
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.term[idx]


@dataclasses.dataclass
class Args:
    env_id: str = "Pendulum-v1"      # any gymnasium env with a Box action space
    policy: str = "flow_t"           # flow_t | flow_g | flow_mlp | gaussian
    critic: str = "sac"              # sac (twin MLPs + soft targets) | crossq (BatchRenorm, no targets)
    num_steps: int = 4               # K, the flow's Euler steps
    seed: int = 0
    total_steps: int = 10_000        # env steps
    learning_starts: int = 1_000     # uniformly random actions (and no update) before this step
    batch_size: int = 256
    buffer_size: int = 100_000


def parse_args(argv=None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for field in dataclasses.fields(Args):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    args = Args(**vars(parser.parse_args(argv)))
    if args.policy not in (*VELOCITIES, "gaussian") or args.critic not in ("sac", "crossq"):
        parser.error(f"--policy must be one of {[*VELOCITIES, 'gaussian']} and --critic sac or crossq")
    return args


def main(argv=None) -> list[float]:
    """Train on ``Args.env_id``, one update per env step after ``learning_starts``; returns the
    (sampled-action) return of every episode that ended."""
    import gymnasium as gym

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    env = gym.make(args.env_id)
    env.action_space.seed(args.seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
    high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
    agent = make_agent(args.policy, obs_dim, act_dim, num_steps=args.num_steps, critic=args.critic, low=low, high=high)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim)

    obs, _ = env.reset(seed=args.seed)
    episode_return, returns, start = 0.0, [], time.time()
    for step in range(args.total_steps):
        if step < args.learning_starts:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = agent.actor.sample(torch.as_tensor(obs, dtype=torch.float32)[None])[0][0].numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)  # a time-limit end still bootstraps
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            print(f"step {step + 1}: episode return {episode_return:.1f} ({time.time() - start:.0f} s)", flush=True)
            obs, _ = env.reset()
            episode_return = 0.0
        if step >= args.learning_starts:
            agent.update(*buffer.sample(args.batch_size))
    env.close()
    return returns


if __name__ == "__main__":
    main()
