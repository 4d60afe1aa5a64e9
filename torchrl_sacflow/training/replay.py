"""The uniform replay buffer of off-policy SAC."""
from __future__ import annotations

from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

from torchrl_sacflow.training.errors import ConfigError

__all__ = ["make_replay_buffer"]


def make_replay_buffer(
    size: int,
    batch_size: int,
    *,
    storage: str = "tensor",
    scratch_dir: str | None = None,
    device: str = "cpu",
    prefetch: int | None = None,
) -> TensorDictReplayBuffer:
    """A ``TensorDictReplayBuffer`` sampling ``batch_size`` transitions uniformly.

    Args:
        size (int): capacity in transitions (paper: 1e6).
        batch_size (int): transitions per ``sample()`` (paper: 512).

    Keyword Args:
        storage (str): ``"tensor"`` (``LazyTensorStorage``, in RAM, default) or ``"memmap"``
            (``LazyMemmapStorage``: on disk under ``scratch_dir``, for buffers larger than RAM).
        scratch_dir (str, optional): where the memmap storage lives (a temporary dir if None).
        device (str): where sampled batches land (``"tensor"`` storage only).
        prefetch (int, optional): batches sampled ahead in a background thread.
    """
    if size < 1 or batch_size < 1:
        raise ConfigError(f"replay buffer size and batch size must be >= 1, got {size} and {batch_size}")
    if storage == "tensor":
        store = LazyTensorStorage(int(size), device=device)
    elif storage == "memmap":
        store = LazyMemmapStorage(int(size), scratch_dir=scratch_dir)
    else:
        raise ConfigError(f"replay_buffer.storage must be 'tensor' or 'memmap', got {storage!r}")
    buffer = TensorDictReplayBuffer(storage=store, batch_size=int(batch_size), prefetch=prefetch)
    if storage == "memmap" and str(device) != "cpu":
        buffer.append_transform(lambda td: td.to(device))
    return buffer
