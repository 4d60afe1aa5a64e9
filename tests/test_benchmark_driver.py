"""The benchmarks' one sweep driver (``benchmarks/sweep.py``) decides every run folder the same way.

:func:`benchmarks.sweep.plan` on tiny fake run folders: a finished or recorded run is skipped, one
whose process still runs is adopted, an unfinished one with a complete checkpoint is resumed, and
anything else (no checkpoint, or one TorchRL never finished writing) starts again. Then
:func:`benchmarks.sweep.run_jobs` end to end with a stand-in recipe that only writes its summary:
what it skips, resumes and restarts from scratch, and what it records.
"""
import json
import os
import subprocess
import sys

import pytest
from torchrl.checkpoint import Checkpoint, JSONCheckpointAdapter

from benchmarks.sweep import Job, Results, fmt, plan, run_jobs
from torchrl_sacflow.training.checkpoint import save_checkpoint


def _summary(run_dir, interrupted=False, **extra):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({"interrupted": interrupted, **extra}))


def _checkpoint(run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint()
    ckpt.register("progress", {"frames": 1000}, adapter=JSONCheckpointAdapter())
    save_checkpoint(ckpt, run_dir)


def test_plan_skips_a_finished_or_recorded_run(tmp_path):
    _summary(tmp_path / "done")
    assert plan(tmp_path / "done") == "skip"
    assert plan(tmp_path / "never_run", recorded=True) == "skip"  # in the committed results file


def test_plan_resumes_an_unfinished_run_with_a_checkpoint(tmp_path):
    _checkpoint(tmp_path / "killed")
    assert plan(tmp_path / "killed") == "resume"
    _summary(tmp_path / "killed", interrupted=True)  # stopped by a signal: its summary says so
    assert plan(tmp_path / "killed") == "resume"


def test_plan_restarts_a_run_without_a_complete_checkpoint(tmp_path):
    assert plan(tmp_path / "missing") == "start"
    (tmp_path / "early" / "logs").mkdir(parents=True)  # killed before its first checkpoint
    assert plan(tmp_path / "early") == "start"
    (tmp_path / "torn" / "checkpoint" / "components").mkdir(parents=True)  # killed mid-save: no manifest
    assert plan(tmp_path / "torn") == "start"


def test_plan_adopts_a_run_whose_process_still_runs(tmp_path):
    _checkpoint(tmp_path / "live")
    (tmp_path / "live.pid").write_text(str(os.getpid()))
    assert plan(tmp_path / "live") == "adopt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "live.pid").write_text(str(dead.pid))  # its process has ended: resumed instead
    assert plan(tmp_path / "live") == "resume"


FAKE_RECIPE = """
import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
run_dir = Path(args["hydra.run.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "summary.json").write_text(json.dumps({
    "interrupted": False, "resumed": "resume" in args, "seed": int(args["seed"]),
    "fresh": not (run_dir / "stale.txt").exists()}))
"""


def test_run_jobs_skips_resumes_restarts_and_records(tmp_path, monkeypatch):
    (tmp_path / "fake_recipe.py").write_text(FAKE_RECIPE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    runs = tmp_path / "runs"
    jobs = [Job(f"run{i}", runs / f"run{i}", (f"seed={i}",), "fake_recipe") for i in range(4)]
    _summary(jobs[0].run_dir, seed=0, resumed="untouched")  # finished
    _checkpoint(jobs[1].run_dir)  # killed after a checkpoint
    jobs[2].run_dir.mkdir(parents=True)
    (jobs[2].run_dir / "stale.txt").write_text("from a run killed before its first checkpoint")
    results = Results(tmp_path / "results.json", lambda job: json.loads((job.run_dir / "summary.json").read_text()))
    results.write({"run3": {"recorded": "earlier"}})  # recorded in the committed file, no folder here
    done = []
    run_jobs(jobs, parallel=2, results=results, on_done=lambda job: done.append(job.key), poll_s=0.05)

    recorded = results.load()
    assert recorded["run0"]["resumed"] == "untouched"  # skipped, but recorded as found
    assert recorded["run1"]["resumed"] is True  # continued from its checkpoint
    assert recorded["run2"]["resumed"] is False and recorded["run2"]["fresh"]  # folder removed, started anew
    assert recorded["run3"] == {"recorded": "earlier"} and not jobs[3].run_dir.exists()
    assert sorted(done) == ["run1", "run2"]
    assert (runs / "run1.pid").is_file() and (runs / "run2.log").is_file()


def test_fmt_cells():
    assert fmt([]) == fmt([None, float("nan")]) == "–"
    assert fmt([2481.4]) == "2481"
    assert fmt([1.0, 2.0, None], 1) == "1.5 (1.0 / 2.0)"
    assert fmt([1.0, 3.0], 0, spread="std") == "2 ± 1"


def test_lift_results_keep_their_list_format_and_match_overrides(tmp_path):
    from benchmarks.offline_to_online import LiftResults, lift_job

    path = tmp_path / "robomimic_lift.json"
    job = lift_job("flow_t", 0, ["online_frames=1000"], tmp_path)
    path.write_text(json.dumps([{"variant": "flow_t", "seed": 0, "overrides": list(job.args)}], indent=2))
    results = LiftResults(path, measure=None)
    assert results.recorded(job, results.load())
    assert not results.recorded(lift_job("flow_t", 0, ["dataset=/data/lift.hdf5"], tmp_path), results.load())
    assert not results.recorded(lift_job("flow_g", 0, ["online_frames=1000"], tmp_path), results.load())
    results.write(results.load())
    assert json.loads(path.read_text()) == [{"variant": "flow_t", "seed": 0, "overrides": list(job.args)}]


def test_offline_to_online_baseline_rows_share_the_data_and_budget():
    import argparse

    from benchmarks.offline_to_online import BASELINE_VARIANT, Sweep, variants_of

    sweep = Sweep(argparse.Namespace(quick=False, overrides=[]))
    sac = dict(a.split("=", 1) for a in sweep.job("lift_weak", "flow_t", 1, "l2").args)
    fql = dict(a.split("=", 1) for a in sweep.job("lift_weak", "fql", 1, BASELINE_VARIANT).args)
    qc = dict(a.split("=", 1) for a in sweep.job("lift_weak", "qc_fql", 1, BASELINE_VARIANT).args)
    assert fql["algo"] == "fql" and fql["action_chunk"] == "1" and qc["algo"] == "qc_fql" and "action_chunk" not in qc
    assert "beta.loss" not in fql and sac["beta.loss"] == "l2"
    shared = {k: v for k, v in sac.items() if k not in ("policy", "beta.loss")}
    for row in (fql, qc):  # the same data, budgets, seed and evaluation as the SAC Flow row
        assert {k: row[k] for k in shared} == shared
    assert variants_of("fql", ["l2", "beta0"]) == [BASELINE_VARIANT] and variants_of("flow_g", ["l2"]) == ["l2"]
    with pytest.raises(ValueError, match="row fql has no variant 'l2'"):
        sweep.job("lift_weak", "fql", 1, "l2")
