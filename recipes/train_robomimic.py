"""SAC Flow offline-to-online on Robomimic: :mod:`recipes.train_offline_online` with Robomimic's defaults.

    python -m recipes.train_robomimic                                  # Flow-T, scripted Lift, ~10 min on 2 cores
    python -m recipes.train_robomimic policy=flow_g seed=1             # Flow-G
    python -m recipes.train_robomimic dataset=/data/lift/mh/low_dim.hdf5 max_episode_steps=500
    python -m recipes.train_robomimic scripted_failed_fraction=0.4 scripted_action_noise=0.1   # weak demos
    python -m recipes.train_robomimic policy=flow_g seed=1 resume=outputs/<run dir>

The same ``train`` as ``python -m recipes.train_offline_online``; ``recipes/config/train_robomimic.yaml``
sets ``dataset: null`` (scripted Lift, or a Robomimic file path), ``task: lift``, ``max_episode_steps: 200``
and the run directory ``outputs/robomimic_<task>_<policy>_seed<seed>_<time>``.
"""
from recipes.train_offline_online import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    main("train_robomimic")
