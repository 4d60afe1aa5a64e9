"""The single-file SAC Flow (``examples/sac_flow_single_file.py``, the throughput benchmark's
yardstick) computes what the library computes.

Same parameters and the same noise must give the same three SAC losses and, after the optimiser
steps and the soft target update, the same parameters (``python -m benchmarks.perf.throughput
--check``); for the CrossQ critic also the same batch-renorm running statistics. Without this, the
example would teach another method and the throughput ratios would compare different computations.
"""
import math

import pytest
import torch

import examples.sac_flow_single_file as single_file
from benchmarks.perf import throughput


@pytest.mark.parametrize("policy,num_steps", [("flow_t", 4), ("flow_g", 4), ("flow_mlp", 2), ("gaussian", 4)])
def test_yardstick_matches_the_recipe_step(policy, num_steps):
    result = throughput.check([policy], num_steps=num_steps, batch_size=32, updates=2, verbose=False)
    loss_diff, param_diff, stats_diff = result[policy]
    assert loss_diff < 1e-5, loss_diff
    assert param_diff < 1e-3, param_diff
    assert stats_diff == 0.0  # no batch-renorm statistics in the SAC critics


# The CrossQ pair agrees to rounding (measured: losses ~1e-7 relative, parameters and statistics
# ~1e-6 of their change); every deliberate change of the math below moves at least one of the three
# measures past 1e-4.
CROSSQ_BOUND = 1e-4


def _crossq_check(policy, tamper=None):
    # 4 updates with warmup_steps=2: two batch-norm warm-up updates, two batch-renorm ones (r, d
    # clipped), actor steps at calls 0 and 3 with the critics' running statistics
    return throughput.check([policy], num_steps=2, batch_size=32, critic="crossq", num_cells=(32, 32),
                            tamper=tamper, verbose=False)[policy]


@pytest.mark.parametrize("policy", ["flow_t", "flow_g", "gaussian"])
def test_crossq_yardstick_matches_the_recipe_step(policy):
    loss_diff, param_diff, stats_diff = _crossq_check(policy)
    assert loss_diff < CROSSQ_BOUND, loss_diff
    assert param_diff < CROSSQ_BOUND, param_diff
    assert stats_diff < CROSSQ_BOUND, stats_diff


def _renorm_layers(sac):
    return [m for q in (sac.q1, sac.q2) for m in q if isinstance(m, single_file.BatchRenorm)]


def _set_renorm(name, value):
    def tamper(sac):
        for layer in _renorm_layers(sac):
            setattr(layer, name, value)
    return tamper


def _actor_sees_train_mode_critics(sac):
    for q in (sac.q1, sac.q2):
        q.eval = lambda: None  # the actor step then updates (and uses) the batch statistics


TAMPERS = {
    "discount": lambda sac: setattr(sac, "gamma", 0.5),
    "momentum": _set_renorm("momentum", 0.02),
    "no_renorm_after_warmup": _set_renorm("warmup_steps", 100),
    "renorm_from_the_start": _set_renorm("warmup_steps", 0),
    "r_clip": _set_renorm("max_r", 1.5),
    "d_clip": _set_renorm("max_d", 0.05),
    "eps": _set_renorm("eps", 1e-5),
    "actor_every_update": lambda sac: setattr(sac, "policy_delay", 1),
    "actor_with_train_mode_critics": _actor_sees_train_mode_critics,
}


@pytest.mark.parametrize("change", sorted(TAMPERS))
def test_crossq_check_detects_a_different_computation(change):
    """The CrossQ check is not vacuous: each change of the yardstick's math fails it."""
    assert max(_crossq_check("gaussian", TAMPERS[change])) > CROSSQ_BOUND


def test_check_detects_a_different_computation():
    """The check is not vacuous: a yardstick with a different discount disagrees."""
    torch.manual_seed(0)
    batches = throughput.make_batches(1, 32, "cpu", seed=3)
    proj = throughput.ProjectStep("flow_g", 2, "cpu", "eager")
    yard = throughput.YardstickStep("flow_g", 2, "cpu", "eager")
    with torch.no_grad():
        for y, lib in throughput.library_to_yardstick("flow_g", proj.loss_module, yard.sac):
            y.copy_(lib)
    yard.sac.gamma = 0.5
    torch.manual_seed(1)
    q_lib = proj.update(batches[0][0])["loss_qvalue"]
    torch.manual_seed(1)
    q_yard = yard.sac.update(*batches[0][1])[0]
    assert (q_lib - q_yard).abs() > 1e-3


def test_collection_row_times_both_sides_on_equal_batches():
    """The collection row alternates equal-sized batches of the recipe's collector and the plain loop."""
    args = throughput.parse_args(["--frames-per-batch", "16", "--collect-batches", "2"])
    proj = throughput.ProjectCollection("gaussian", 1, args, rounds=1)
    yard = throughput.YardstickCollection("gaussian", 1, args)
    try:
        assert [proj.batch(), proj.batch()] == [16, 16]
        assert yard.batch() == 16
        obs, act, rew, nxt, term, trunc = yard.last  # the plain loop keeps its transitions too
        assert obs.shape == nxt.shape == (16, 1, throughput.OBS_DIM) and act.shape == (16, 1, throughput.ACT_DIM)
        assert torch.equal(nxt[:-1], obs[1:]) and not (term | trunc).any()  # 16 steps: no episode end
        assert rew.abs().sum() > 0 and act.abs().max() <= 1
    finally:
        proj.close()
        yard.close()
    row = throughput.bench_collect("gaussian", 1, args)
    assert row["clock"] == "cpu" and row["project"] > 0 and row["yardstick"] > 0
    assert row["ratio_q1"] <= row["ratio"] <= row["ratio_q3"]


def test_single_file_training_loop_runs_and_updates(monkeypatch):
    """``main``: random steps, then one update per env step; the episode returns come back and the
    actor's parameters moved (a loop that never updated would leave them as initialised)."""
    agents = []
    make_agent = single_file.make_agent
    monkeypatch.setattr(single_file, "make_agent", lambda *a, **k: agents.append(make_agent(*a, **k)) or agents[-1])
    torch.manual_seed(0)
    initial = [p.detach().clone() for p in make_agent("flow_g", 3, 1, num_steps=2).actor.parameters()]
    returns = single_file.main(["--policy", "flow_g", "--num-steps", "2", "--total-steps", "260",
                                "--learning-starts", "200", "--batch-size", "32"])
    assert len(returns) == 1 and math.isfinite(returns[0])  # Pendulum-v1: 200-step episodes
    moved = [(p - q).abs().max().item() for p, q in zip(agents[0].actor.parameters(), initial)]
    assert max(moved) > 1e-4


def test_single_file_rejects_an_unknown_policy(capsys):
    with pytest.raises(SystemExit) as exit_info:
        single_file.main(["--policy", "flow_x"])
    assert exit_info.value.code == 2 and "--policy must be one of" in capsys.readouterr().err
