"""The benchmark's hand-written yardstick computes what the library computes.

Same parameters and the same noise must give the same three SAC losses and, after the optimiser
steps and the soft target update, the same parameters (``benchmarks/throughput.py --check``).
Without this, the throughput ratios would compare different computations.
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402


@pytest.mark.parametrize("policy,num_steps", [("flow_t", 4), ("flow_g", 4), ("flow_mlp", 2), ("gaussian", 4)])
def test_yardstick_matches_the_recipe_step(policy, num_steps):
    result = throughput.check([policy], num_steps=num_steps, batch_size=32, updates=2, verbose=False)
    loss_diff, param_diff = result[policy]
    assert loss_diff < 1e-5, loss_diff
    assert param_diff < 1e-3, param_diff


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
