"""Test-session settings: one torch thread (2-core CI machines), quiet TorchRL warnings."""
import os

os.environ.setdefault("RL_WARNINGS", "False")

import torch  # noqa: E402

torch.set_num_threads(1)
