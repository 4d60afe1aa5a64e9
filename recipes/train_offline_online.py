"""SAC Flow offline-to-online on Robomimic or OGBench, assembled from TorchRL parts (docs/algorithm.md §4).

    python -m recipes.train_offline_online dataset=robomimic:/data/lift/mh/low_dim.hdf5 max_episode_steps=500
    python -m recipes.train_offline_online scripted_failed_fraction=0.4 scripted_action_noise=0.1   # weak Lift demos
    python -m recipes.train_offline_online dataset=ogbench:/data/cube-double-play-v0.npz task=cube-double task_id=2
    python -m recipes.train_offline_online dataset=ogbench ogbench.transitions=100000       # generated play data
    python -m recipes.train_offline_online policy=flow_g seed=1 resume=outputs/<run dir>
    python -m recipes.train_robomimic                  # this recipe with the Robomimic defaults (scripted Lift)

Three phases on one actor, each resumable from its checkpoint: flow-matching pre-training on the
dataset; optional offline SAC Flow updates on it (β = ``beta.offline``); online SAC Flow with a
TorchRL ``Collector`` on the dataset's task (Robomimic: the robosuite task rebuilt from the file's
``env_args``; OGBench: the singletask env of ``task``/``task_id``), each batch mixing offline and
online data (``OfflineToOnlineReplayBuffer``), β annealed linearly. The policy emits chunks of
``action_chunk`` actions; the env executes a chunk per step and returns its discounted reward, so
the critic target uses γ^h (offline chunks are built the same way). Only the data family differs
(``torchrl_sacflow/training/offline_online/families.py``); success is the envs' ``success`` flag,
whatever the family's reward.
"""
from __future__ import annotations

import sys
import json
import math
import time
from pathlib import Path

import hydra
import torch
import tqdm
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from torchrl_sacflow.plot import plot_runs
from torchrl_sacflow.training import (
    ConfigError,
    check_group_choices,
    config_fingerprint,
    exit_on_config_error,
    fingerprint_groups,
    load_checkpoint,
    log_metrics,
    make_checkpoint,
    make_collector,
    make_logger,
    open_run_dir,
    resolve_device,
    round_up_frames,
    save_checkpoint,
    seed_everything,
    set_learner_threads,
)
from torchrl_sacflow.training.offline_online import (
    LinearSchedule,
    MixedReplayBuffer,
    check_chunking,
    check_offline_online_config,
    evaluate_success,
    make_learner,
    make_offline_buffer,
    resolve_offline_data,
    truncate_phase_logs,
)
from torchrl_sacflow.training.signals import INTERRUPTED_EXIT_CODE, StopOnSignal

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run (or, with ``resume``, continue) one offline-to-online run in ``run_dir``; return a summary."""
    c = OmegaConf.to_container(cfg, resolve=True)
    check_offline_online_config(c)
    h, ev, lg, B = c["action_chunk"], c["eval"], c["logger"], c["batch_size"]
    # The dataset family: its file (generated once when none is given), env factory and loader
    data = resolve_offline_data(c, progress=lg["progress_bar"])
    # What a checkpoint must agree on: the data/env (incl. h, γ) and every network-shaping setting
    c.update(task=data.task, max_episode_steps=data.max_episode_steps, env=data.identity)
    fingerprint = config_fingerprint(c)
    run_dir, resume_meta = open_run_dir(c, run_dir, fingerprint)  # c["resume"] if set, its checkpoint checked
    col = c["collector"]
    threads = set_learner_threads(c["threads"], col["num_workers"], col["backend"])
    device = resolve_device(c["device"])
    seed_everything(c["seed"])

    # Offline data (chunked like the env's steps, read in its action bounds), envs, actor, chunk
    # critic + loss, updates, buffers
    env_fn = data.make_env
    eval_env = env_fn(seed=c["seed"] + 10_000)
    offline = data.load(eval_env)
    print(data.summary_line(), flush=True)
    width = check_chunking(offline, eval_env, h)
    obs_dim = int(offline["observation"].shape[-1])
    # The algorithm (`algo=`): SAC Flow, FQL, QC-FQL or BC; what acts, what each phase steps
    learner = make_learner(c, eval_env.action_spec, observation_dim=obs_dim, action_width=width, device=device)
    actor, loss, update, algo = learner.policy, learner.loss, learner.update, c["algo"]
    offline_rb = make_offline_buffer(offline)
    capacity = c["online_buffer_size"]  # allocated in full on the first write; a saved buffer keeps its size
    if c["resume"] and resume_meta["frames"] > 0 and resume_meta["online_capacity"] != capacity:
        raise ConfigError(f"{c['resume']!r} was made with online_buffer_size={resume_meta['online_capacity']}: "
                          f"pass online_buffer_size={resume_meta['online_capacity']} to resume it")
    replay_buffer = MixedReplayBuffer(offline_rb, online_capacity=capacity, offline_fraction=c["offline_fraction"],
                                      batch_size=B)
    beta_online = LinearSchedule(c["beta"]["online_start"], c["beta"]["online_end"], c["beta"]["online_anneal_frames"])

    # Checkpoint: every stateful piece, restored in place on resume (progress is a JSON dict)
    progress = {"phase": "pretrain", "pretrain_steps": 0, "offline_steps": 0, "frames": 0, "updates": 0,
                "episodes": 0, "wall_time_s": 0.0, "phase_eval": {}}
    ckpt = make_checkpoint(loss_module=loss, update_step=learner.update_step, progress=progress, config=c,
                           policy=actor, optimizers=learner.optimizers)

    def register_online_data() -> None:  # an empty storage cannot be saved: register it once it has data
        if c["checkpoint"]["save_replay_buffer"] and "replay_buffer" not in ckpt.components:
            ckpt.register("replay_buffer", replay_buffer.online_buffer)

    if c["resume"]:
        if resume_meta["frames"] > 0:
            register_online_data()
        load_checkpoint(ckpt, run_dir)
        truncate_phase_logs(run_dir, {"pretrain": progress["pretrain_steps"], "offline": progress["offline_steps"]},
                            default=progress["frames"])
    logger = make_logger(lg["backend"], run_dir, project=lg["project"], wandb_mode=lg["wandb_mode"], config=c)
    start, wall_before, speeds = time.perf_counter(), progress["wall_time_s"], {}

    def save() -> None:
        if progress["frames"] > 0:
            register_online_data()
        progress["wall_time_s"] = wall_before + time.perf_counter() - start
        save_checkpoint(ckpt, run_dir, metadata={"frames": progress["frames"], "phase": progress["phase"],
                                                 "online_capacity": capacity,
                                                 "fingerprint": fingerprint,
                                                 "fingerprint_groups": fingerprint_groups(c)})

    def run_eval() -> dict:
        return evaluate_success(eval_env, actor, num_episodes=ev["num_episodes"])

    def bar(total: int, initial: int, desc: str, unit: str) -> tqdm.tqdm:
        return tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                         disable=not lg["progress_bar"])

    def offline_phase(name: str, target: int, step_fn, sample_fn) -> None:
        """``target`` gradient steps on demonstration batches, logged as ``<name>/*`` vs steps."""
        key, t0, n0, window = f"{name}_steps", time.perf_counter(), progress[f"{name}_steps"], []
        pbar = bar(target, n0, name, "step")
        while progress[key] < target and not stop.requested:
            window.append(step_fn(sample_fn()))
            progress[key] += 1
            pbar.update(1)
            if progress[key] % lg["log_interval"] == 0 or progress[key] == target:
                rate = (progress[key] - n0) / (time.perf_counter() - t0)
                metrics = {f"{name}/{k}": v for k, v in torch.stack(window).mean().items()}
                log_metrics(logger, {**metrics, f"{name}/steps_per_s": rate}, progress[key])
                pbar.set_postfix({k.split("/")[-1]: float(v) for k, v in metrics.items()}, refresh=False)
                window = []
            if c["checkpoint"]["steps_interval"] and progress[key] % c["checkpoint"]["steps_interval"] == 0:
                save()
        pbar.close()
        if progress[key] > n0:
            speeds[f"{name}_steps_per_s"] = (progress[key] - n0) / (time.perf_counter() - t0)
        if not stop.requested and progress[key] > 0:  # success rate of the policy this phase leaves
            result = run_eval()
            progress["phase_eval"][name] = result["success_rate"]
            log_metrics(logger, {f"{name}/eval_{k}": v for k, v in result.items()}, progress[key])
            print(f"{name}: {progress[key]} steps, eval success rate {result['success_rate']:.2f}", flush=True)

    # what this session's online phase did (the summary's speeds and final evaluation)
    stats = {"last_eval": {}, "frames": 0, "updates": 0, "collect_s": 0.0, "update_s": 0.0}

    def online_loop(collector, total_frames: int, last_eval: dict) -> None:
        """Collect chunks → mixed buffer → updates, eval/log/checkpoint by frames, until done or stopped."""
        pbar = bar(total_frames, progress["frames"], "online", "frame")
        t_ready = time.perf_counter()
        for data in collector:
            stats["collect_s"] += time.perf_counter() - t_ready
            data = data.reshape(-1)
            replay_buffer.extend(data)
            before = progress["frames"]
            progress["frames"] += data.numel()
            stats["frames"] += data.numel()
            metrics = {}
            done = data["next", "done"].squeeze(-1)
            if done.any():
                progress["episodes"] += int(done.sum())
                metrics["train/episode_success_rate"] = data["next", "success"].squeeze(-1)[done].float().mean()
                metrics["train/episodes"] = progress["episodes"]
            if learner.set_beta is not None:
                learner.set_beta(beta_online(before))
            t0, out = time.perf_counter(), []
            for _ in range(round(data.numel() * c["updates_per_frame"])):
                if stop.requested:
                    break
                out.append(update(replay_buffer.sample().to(device)))
            stats["update_s"] += time.perf_counter() - t0
            progress["updates"] += len(out)
            stats["updates"] += len(out)
            if out:
                metrics.update({f"train/{k}": v for k, v in torch.stack(out).mean().items()})
            metrics["train/offline_fraction"] = c["offline_fraction"]
            if learner.set_beta is not None:
                metrics["train/beta"] = beta_online(before)
            if col["sync"]:  # an asynchronous Ray collector pushes them to each worker itself
                collector.update_policy_weights_()
            if not stop.requested and ((ev["interval"] and progress["frames"] // ev["interval"] > before // ev["interval"])
                                       or progress["frames"] >= total_frames):  # no new eval once stopping
                last_eval.update({**run_eval(), "frames": progress["frames"]})
                metrics.update({f"eval/{k}": v for k, v in last_eval.items() if k != "frames"})
            metrics["time/env_frames_per_s"] = stats["frames"] / max(stats["collect_s"], 1e-9)
            metrics["time/updates_per_s"] = stats["updates"] / max(stats["update_s"], 1e-9)
            metrics["time/wall_time_s"] = wall_before + time.perf_counter() - start
            log_metrics(logger, metrics, progress["frames"])
            pbar.update(data.numel())
            pbar.set_postfix(success=last_eval.get("success_rate", math.nan), beta=beta_online(before), refresh=False)
            if stop.requested:
                break
            interval = c["checkpoint"]["interval"]
            if interval and progress["frames"] // interval > before // interval:
                save()
            t_ready = time.perf_counter()
        pbar.close()

    def online_phase() -> None:
        """Online SAC Flow: the starting evaluation, then :func:`online_loop` on a collector."""
        total_frames = round_up_frames(c["online_frames"], c["frames_per_batch"])
        last_eval = stats["last_eval"]
        if "online_start" not in progress["phase_eval"]:
            # the starting point of fine-tuning: the last phase's evaluation, or a fresh one
            initial = progress["phase_eval"].get("offline", progress["phase_eval"].get("pretrain"))
            last_eval.update({"success_rate": initial} if initial is not None else run_eval())
            log_metrics(logger, {f"eval/{k}": v for k, v in last_eval.items()}, 0)
            last_eval["frames"], progress["phase_eval"]["online_start"] = 0, last_eval["success_rate"]
        if progress["frames"] >= total_frames:
            return
        collector = make_collector(env_fn, actor, total_frames=total_frames - progress["frames"],
                                   frames_per_batch=c["frames_per_batch"], seed=c["seed"] + progress["frames"],
                                   device=device, compile_policy=c["compile_policy"], num_workers=col["num_workers"],
                                   learner_threads=threads, backend=col["backend"], sync=col["sync"],
                                   ray_address=col["ray_address"])
        try:  # the collector (its workers, a Ray runtime it started) is shut down however the loop ends
            online_loop(collector, total_frames, last_eval)
        finally:
            collector.shutdown()

    # The phases, in order; each one's end is checkpointed, so a resumed run starts where it stopped
    t_online = time.perf_counter()
    with StopOnSignal() as stop:
        # 1. Flow-matching pre-training (behaviour cloning) on the demonstrations
        if progress["phase"] == "pretrain":
            offline_phase("pretrain", c["pretrain_steps"], learner.pretrain, lambda: offline_rb.sample(B).to(device))
            if not stop.requested:
                progress["phase"] = "done" if algo == "bc" else "offline"  # BC: pre-training is all
                save()
        # 2. Offline SAC Flow: critic and actor on demonstrations only, β = beta.offline
        if progress["phase"] == "offline" and not stop.requested:
            if learner.set_beta is not None:
                learner.set_beta(c["beta"]["offline"])
            offline_phase("offline", c["offline_steps"], update, lambda: offline_rb.sample(B).to(device))
            if not stop.requested:
                progress["phase"] = "online"
                save()
        # 3. Online SAC Flow, β annealed
        if progress["phase"] == "online" and not stop.requested:
            t_online = time.perf_counter()
            online_phase()
    last_eval, session_frames = stats["last_eval"], stats["frames"]
    if progress["phase"] == "online" and not stop.requested and last_eval.get("frames") != progress["frames"]:
        last_eval = {**run_eval(), "frames": progress["frames"]}  # e.g. a resumed, already finished run
        log_metrics(logger, {f"eval/{k}": v for k, v in last_eval.items() if k != "frames"}, progress["frames"])
    save()
    if logger is not None and hasattr(logger, "flush"):
        logger.flush()
    if lg["plot"] and lg["backend"] == "csv" and progress["phase"] == "online":
        plot_runs([run_dir], out=run_dir / "success_rate.png", metric="eval/success_rate",
                  title=f"{c['env']['id']} {c['policy']['name']} offline-to-online")
    online_s = time.perf_counter() - t_online
    collect_time, update_time, session_updates = stats["collect_s"], stats["update_s"], stats["updates"]
    summary = {
        "run_dir": str(run_dir), "algo": algo, "dataset": str(data.path), "family": data.family, "task": data.task,
        "data": data.description, "phase": progress["phase"],
        "pretrain_steps": progress["pretrain_steps"], "offline_steps": progress["offline_steps"],
        "frames": progress["frames"], "session_frames": session_frames, "updates": progress["updates"],
        "episodes": progress["episodes"],
        "success_rate_after_pretrain": progress["phase_eval"].get("pretrain"),
        "success_rate_after_offline": progress["phase_eval"].get("offline"),
        "final_success_rate": progress["phase_eval"].get("pretrain") if algo == "bc" else last_eval.get("success_rate"),
        **speeds,
        "env_frames_per_s": session_frames / collect_time if collect_time else None,
        "online_frames_per_s": session_frames / online_s if session_frames else None,
        "updates_per_s": session_updates / update_time if update_time else None,
        "wall_time_s": progress["wall_time_s"], "interrupted": stop.requested,
        "chunking": {"action_chunk": h, "offline_action_width": int(offline["action"].shape[-1]),
                     "env_action_width": width, "critic_gamma": learner.critic_gamma,
                     "online_action_width": int(replay_buffer.online_buffer[:1]["action"].shape[-1])
                     if len(replay_buffer.online_buffer) else None},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    final = "n/a" if summary["final_success_rate"] is None else f"{summary['final_success_rate']:.2f}"
    print(f"{'interrupted' if stop.requested else 'done'}: {summary['pretrain_steps']} pre-training steps, "
          f"{summary['offline_steps']} offline updates, {summary['frames']} online frames, "
          f"success rate after pre-training {summary['success_rate_after_pretrain']}, final {final}, "
          f"wall time {summary['wall_time_s']:.0f}s -> {run_dir}", flush=True)
    return summary


def main(config_name: str = "train_offline_online") -> None:
    """The command line of ``recipes/<config_name>.py``; bad input exits 2 with one line ``<config_name>: error: ...``.

    Args:
        config_name (str): the primary config in ``recipes/config`` (``train_offline_online``, ``train_robomimic``).
    """
    with exit_on_config_error(config_name):  # `policy=<unknown>`: one line, before hydra composes
        check_group_choices([a for a in sys.argv[1:] if a.startswith(("policy=", "critic="))], CONFIG_DIR)

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def run(cfg: DictConfig) -> None:
        with exit_on_config_error(config_name):
            summary = train(cfg, HydraConfig.get().runtime.output_dir)
        if summary["interrupted"]:
            raise SystemExit(INTERRUPTED_EXIT_CODE)

    run()


if __name__ == "__main__":
    main()
