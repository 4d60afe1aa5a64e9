"""SAC Flow from scratch on MuJoCo (and two quick tasks), assembled from TorchRL parts.

    python -m recipes.train_mujoco                                  # Flow-T, InvertedPendulum-v4
    python -m recipes.train_mujoco env=hopper policy=flow_g seed=1  # paper defaults
    python -m recipes.train_mujoco env=hopper policy=flow_g seed=1 resume=outputs/<run dir>

A plain loop in the style of TorchRL's ``sota-implementations/sac`` rather than
``torchrl.trainers.Trainer``: what this recipe adds to SAC (a policy-delayed update step,
frame-based eval/checkpoint schedules, a checkpoint on SIGINT, a resume that is bit-exact with the
in-process collector: docs/checkpoints.md) is a line or two
each here, but would be hooks sharing state through the trainer object there.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import hydra
import torch
import tqdm
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchrl.checkpoint import StateDictCheckpointAdapter
from torchrl.envs.utils import ExplorationType

from torchrl_sacflow.plot import plot_runs
from torchrl_sacflow.training import (
    EnvState,
    SACUpdate,
    action_dim,
    check_group_choices,
    config_fingerprint,
    critic_diagnostics,
    env_maker,
    episode_metrics,
    evaluate,
    exit_on_config_error,
    flow_diagnostics,
    load_checkpoint,
    log_metrics,
    make_checkpoint,
    make_collector,
    make_env,
    make_logger,
    make_loss,
    make_optimizers,
    make_policy,
    make_replay_buffer,
    observation_dim,
    open_run_dir,
    resolve_device,
    round_up_frames,
    save_checkpoint,
    seed_everything,
    set_learner_threads,
    supports_exact_state,
    truncate_csv_logs,
    validate_train_config,
    write_summary,
)
from torchrl_sacflow.training.signals import INTERRUPTED_EXIT_CODE, StopOnSignal

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run (or, with ``resume``, continue) one training run writing into ``run_dir``; return a summary."""
    c = OmegaConf.to_container(cfg, resolve=True)
    validate_train_config(c)
    col, opt, ev, lg = c["collector"], c["optim"], c["eval"], c["logger"]
    fingerprint = config_fingerprint(c)
    run_dir, _ = open_run_dir(c, run_dir, fingerprint)  # c["resume"] if set, its checkpoint checked
    threads = set_learner_threads(c["threads"], col["num_workers"], col["backend"])
    device = resolve_device(c["device"])
    seed_everything(c["seed"])

    # Logger, eval env, actor, critic + loss, optimisers, update step, replay buffer
    logger = make_logger(lg["backend"], run_dir, project=lg["project"], wandb_mode=lg["wandb_mode"], config=c,
                         video_format=lg["video_format"])
    # a gymnasium id, or your own TorchRL env factory (env.make) with its observation keys
    env_kwargs = {"factory": c["env"].get("make"), "observation_keys": c["env"].get("observation_keys")}
    eval_env = make_env(c["env"]["id"], seed=c["seed"] + 10_000, from_pixels=ev["video"], video_logger=logger,
                        **env_kwargs)
    obs_dim = observation_dim(eval_env)
    actor = make_policy(c["policy"], eval_env.action_spec, obs_dim).to(device)
    losses = make_loss(c["critic"], actor, observation_dim=obs_dim, action_dim=action_dim(eval_env),
                       gamma=opt["gamma"], alpha_init=opt["alpha_init"],
                       target_entropy=c["policy"]["target_entropy"], device=device,
                       alpha_objective=opt["alpha_objective"], alpha_entropy=opt["alpha_entropy"])
    actor_optim, critic_optim, alpha_optim = make_optimizers(
        losses.loss_module, actor_lr=opt["actor_lr"], critic_lr=opt["critic_lr"], alpha_lr=opt["alpha_lr"],
        actor_betas=(opt["actor_beta1"], 0.999), critic_betas=(opt["critic_beta1"], 0.999),
        alpha_betas=(opt["alpha_beta1"], 0.999),
        weight_decay=opt["weight_decay"])
    update = SACUpdate(losses.loss_module, actor_optim=actor_optim, critic_optim=critic_optim,
                       alpha_optim=alpha_optim, target_updater=losses.target_updater,
                       policy_delay=losses.policy_delay, compile=opt["compile"], autocast=opt["autocast"])
    replay_buffer = make_replay_buffer(c["replay_buffer"]["size"], opt["batch_size"], device=device,
                                       storage=c["replay_buffer"]["storage"],
                                       scratch_dir=c["replay_buffer"]["scratch_dir"])

    # Checkpoint: every stateful piece, restored in place on resume (progress is a JSON dict). The RNGs
    # and the envs' between-step state are restored last, once the collector is built and seeded.
    progress = {"frames": 0, "updates": 0, "updates_owed": 0, "wall_time_s": 0.0, "pending_round": None}
    ckpt = make_checkpoint(
        loss_module=losses.loss_module, update_step=update, progress=progress, config=c, policy=actor,
        optimizers={"actor_optim": actor_optim, "critic_optim": critic_optim, "alpha_optim": alpha_optim},
        replay_buffer=replay_buffer if c["checkpoint"]["save_replay_buffer"] else None)
    late = {"rng"}
    if supports_exact_state(eval_env):
        ckpt.register("eval_env_state", EnvState(eval_env), adapter=StateDictCheckpointAdapter(payload_format="torch"))
        late.add("eval_env_state")
    if c["resume"]:
        load_checkpoint(ckpt, run_dir, exclude=late)
        progress.setdefault("updates_owed", 0)
        progress.setdefault("pending_round", None)
        truncate_csv_logs(run_dir, progress["frames"])
    total_frames = round_up_frames(col["total_frames"], col["frames_per_batch"])
    start, session_frames, session_updates, update_time = time.perf_counter(), 0, 0, 0.0
    wall_before = progress["wall_time_s"]

    def save() -> None:
        progress["wall_time_s"] = wall_before + time.perf_counter() - start
        save_checkpoint(ckpt, run_dir, metadata={"frames": progress["frames"], "fingerprint": fingerprint,
                                                 "fingerprint_groups": {k: c[k] for k in ("env", "policy", "critic")}})

    def due(interval: int, before: int) -> bool:  # did the frame counter cross a multiple of interval?
        return interval > 0 and progress["frames"] // interval > before // interval

    def run_eval() -> dict:  # the deterministic policy, and optionally the sampling one
        modes = {"eval/": ExplorationType.DETERMINISTIC}
        if ev["stochastic"]:
            modes["eval/stochastic_"] = ExplorationType.RANDOM
        return {prefix + k: v for prefix, mode in modes.items() for k, v in evaluate(
            eval_env, actor, num_episodes=ev["num_episodes"], max_steps=ev["max_steps"], exploration_type=mode).items()}

    # Collect → extend buffer → update → eval/log/checkpoint, until total_frames or SIGINT
    collector = make_collector(
        env_maker(c["env"]["id"], **env_kwargs), actor, total_frames=max(total_frames - progress["frames"], 1),
        frames_per_batch=col["frames_per_batch"], num_workers=col["num_workers"],
        init_random_frames=max(col["init_random_frames"] - progress["frames"], 0),
        seed=c["seed"] + progress["frames"], device=device, learner_threads=threads,
        compile_policy=col["compile_policy"], backend=col["backend"], sync=col["sync"], ray_address=col["ray_address"])
    # exact resume: the in-process collector's env and carrier (workers' envs live in other processes)
    if col["backend"] == "local" and col["num_workers"] == 1 and supports_exact_state(collector.env):
        ckpt.register("train_env_state", EnvState(collector.env, collector=collector),
                      adapter=StateDictCheckpointAdapter(payload_format="torch"))
        late.add("train_env_state")
    if c["resume"]:
        load_checkpoint(ckpt, run_dir, components=late)
    updates_per_batch = max(1, int(col["frames_per_batch"] * opt["utd_ratio"]))
    grad_every = lg["log_path_grad_norms_every"] if c["policy"]["kind"] == "flow" else 0
    last_eval: dict = {}
    pbar = tqdm.tqdm(total=total_frames, initial=progress["frames"], unit="frame", disable=not lg["progress_bar"],
                     dynamic_ncols=True)
    last_train_return = math.nan

    def finish_round(rnd: dict) -> bool:
        """Updates, diagnostics, eval and logging of one collected batch (``rnd``: its JSON state).

        Returns ``False`` when a stop request cut it short: ``rnd`` (saved with the checkpoint as
        ``progress["pending_round"]``) then says what is left, and the resumed run finishes it first,
        so a resume ends bit-identical to the run left alone (the metrics' float64 running sums, the
        updates owed, an evaluation that was due).
        """
        nonlocal update_time, session_updates, last_eval, last_train_return
        metrics, before, batch = dict(rnd["metrics"]), rnd["before"], None
        if rnd["stage"] == "updates":
            t0 = time.perf_counter()
            while progress["updates_owed"] > 0 and not stop.requested:
                batch = replay_buffer.sample()
                out = update(batch)
                rnd["n"] += 1
                for k, v in out.items():  # float64 running sums: the same bits however the round is split
                    rnd["sums"][k] = rnd["sums"].get(k, 0.0) + v.double().item()
                progress["updates_owed"] -= 1
                progress["updates"] += 1
                session_updates += 1
            update_time += time.perf_counter() - t0
            if progress["updates_owed"] > 0:
                return False
            if rnd["n"]:
                metrics.update({f"train/{k}": v / rnd["n"] for k, v in rnd["sums"].items()})
            if batch is not None and (lg["diagnostics_every"] <= 0 or due(lg["diagnostics_every"], before)):
                metrics.update({f"train/{k}": v for k, v in flow_diagnostics(actor, batch).items()})
                metrics.update({f"train/{k}": v for k, v in critic_diagnostics(losses.loss_module, batch).items()})
            updates_now = progress["updates"]
            if grad_every and batch is not None and updates_now // grad_every > (updates_now - rnd["n"]) // grad_every:
                norms = losses.loss_module.path_grad_norms(batch)
                metrics.update({f"train/path_grad_norm_step_{i}": g for i, g in enumerate(norms)})
            if col["sync"]:  # an asynchronous Ray collector pushes them to each worker itself
                collector.update_policy_weights_()
            rnd["stage"] = "eval"
        eval_due = due(ev["interval"], before) or progress["frames"] >= total_frames
        if eval_due and not stop.requested:
            last_eval = {**run_eval(), "frames": progress["frames"]}
            metrics.update({k: v for k, v in last_eval.items() if k != "frames"})
        elapsed = time.perf_counter() - start
        metrics["time/updates_per_s"] = session_updates / max(update_time, 1e-9)  # incl. sampling
        metrics["time/frames_per_s"] = session_frames / max(elapsed, 1e-9)  # collect + update + eval
        metrics["time/wall_time_s"] = wall_before + elapsed
        if rnd.get("logged"):  # its other scalars went out before the stop: one row per step
            metrics = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        log_metrics(logger, metrics, progress["frames"])
        # the return of the last episode that ended (a batch may end none: long episodes)
        last_train_return = metrics.get("train/episode_return", last_train_return)
        if eval_due and stop.requested:  # once a stop is requested nothing new starts: the resumed run evaluates
            rnd.update(stage="eval", metrics={}, logged=True)
            return False
        return True

    # the collector (its workers, a Ray runtime it started) is shut down however the loop ends
    with StopOnSignal() as stop, contextlib.ExitStack() as cleanup:
        cleanup.callback(collector.shutdown)
        if progress["pending_round"] is not None and finish_round(progress["pending_round"]):
            progress["pending_round"] = None  # what a stop left of its round is done first
        for data in collector if progress["frames"] < total_frames and not stop.requested else ():
            data = data.reshape(-1)
            replay_buffer.extend(data)
            before = progress["frames"]
            progress["frames"] += data.numel()
            session_frames += data.numel()
            rnd = {"before": before, "metrics": episode_metrics(data), "stage": "eval", "n": 0, "sums": {}}
            if progress["frames"] >= col["init_random_frames"] and len(replay_buffer) >= opt["batch_size"]:
                # "owed" carries the updates an interrupted batch did not finish into the resumed run
                progress["updates_owed"] += updates_per_batch
                rnd["stage"] = "updates"
            complete = finish_round(rnd)
            pbar.update(data.numel())
            pbar.set_postfix(train_return=last_train_return,
                             eval_return=last_eval.get("eval/return_mean", math.nan),
                             updates_per_s=session_updates / max(update_time, 1e-9), refresh=False)
            if not complete:
                progress["pending_round"] = rnd
            if stop.requested:
                break
            if due(c["checkpoint"]["interval"], before):
                save()
        pbar.close()
        if not stop.requested and last_eval.get("frames") != progress["frames"]:  # e.g. a resumed, finished run
            last_eval = {**run_eval(), "frames": progress["frames"]}
            log_metrics(logger, {k: v for k, v in last_eval.items() if k != "frames"}, progress["frames"])
        save()  # before the collector shuts down: its env state is part of the checkpoint
    if logger is not None:
        logger.flush()
    if lg["plot"] and lg["backend"] == "csv":
        plot_runs([run_dir], out=run_dir / "learning_curve.png")
    summary = {
        "run_dir": str(run_dir), "frames": progress["frames"], "updates": progress["updates"],
        "eval_return_mean": last_eval.get("eval/return_mean"), "eval_return_std": last_eval.get("eval/return_std"),
        "wall_time_s": progress["wall_time_s"], "updates_per_s": session_updates / max(update_time, 1e-9),
        "frames_per_s": session_frames / max(time.perf_counter() - start, 1e-9), "interrupted": stop.requested,
    }
    print(write_summary(run_dir, summary), flush=True)
    return summary


@hydra.main(config_path="config", config_name="train_mujoco", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error("train_mujoco"):
        summary = train(cfg, HydraConfig.get().runtime.output_dir)
    if summary["interrupted"]:
        raise SystemExit(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":
    with exit_on_config_error("train_mujoco"):
        check_group_choices(sys.argv[1:], CONFIG_DIR)
    main()
