"""Small gymnasium tasks shipped with the library (registered on import of :mod:`torchrl_sacflow`)."""
from torchrl_sacflow.envs.multimodal import (
    BANDIT_PEAKS,
    BanditActionValue,
    MultimodalBandit,
    TwoPathNavigation,
    register_multimodal_envs,
)

register_multimodal_envs()

__all__ = ["BANDIT_PEAKS", "BanditActionValue", "MultimodalBandit", "TwoPathNavigation", "register_multimodal_envs"]
