"""The paper-parity driver's ``--env`` (issue 33): a tiny Hopper run end to end through the shared
sweep driver, into the results file under its ``hopper/`` key, with the table grouped by task."""
import json

import benchmarks.paper_parity as pp
from benchmarks.sweep import Results

TINY = ["collector.init_random_frames=100", "critic.num_cells=[32,32]", "optim.batch_size=32",
        "replay_buffer.size=1000", "eval.interval=300", "eval.num_episodes=1", "eval.max_steps=50",
        "checkpoint.interval=0", "logger.plot=false"]


def test_env_hopper_runs_records_and_reports(tmp_path, monkeypatch):
    results = tmp_path / "paper_parity.json"
    monkeypatch.setattr(pp, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(pp, "RESULTS", results)
    monkeypatch.setattr(pp, "RESULTS_FILE", Results(results, pp.measure))
    pp.main(["run", "--env", "hopper", "--rows", "paper", "--seeds", "1", "--frames", "300", "--parallel", "1",
             *TINY])
    run_dir = tmp_path / "runs" / "hopper" / "300" / "paper" / "seed1"
    assert "id: Hopper-v4" in (run_dir / "config.yaml").read_text()  # the task really is Hopper
    entry = json.loads(results.read_text())["hopper/300/paper/seed1"]
    assert entry["frames"] == 300
    assert entry["overrides"][0] == "env=hopper" and "preset=paper" in entry["overrides"]
    # Hopper ends episodes at any step: the curve has episodes, and the training return is their mean
    curve = entry["train_curve"]
    assert len(curve) >= 2 and all(step <= 300 for step, _ in curve)
    table = results.with_suffix(".md").read_text()
    assert "## Hopper-v4, 300 env steps" in table and "`paper` | 1 |" in table
    # a second driver call skips the finished run: nothing is started, the entry is unchanged
    before = results.read_text()
    pp.main(["run", "--env", "hopper", "--rows", "paper", "--seeds", "1", "--frames", "300", "--parallel", "1",
             *TINY])
    assert results.read_text() == before
