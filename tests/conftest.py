"""Test-session settings: one torch thread (2-core CI machines), quiet TorchRL warnings, and
``--fast-paths off`` to run a suite with every speed path of ``torchrl_sacflow._fast`` switched off."""
import os
import sys
from pathlib import Path

os.environ.setdefault("RL_WARNINGS", "False")
# test modules import their shared helpers by name (``_robomimic_fixtures``, ``test_train_mujoco``),
# whatever pytest's --import-mode
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--fast-paths", choices=("on", "off"), default="on",
                     help="off: TORCHRL_SACFLOW_FAST_PATHS=0 (TorchRL's own code paths only)")


def pytest_configure(config):
    if config.getoption("--fast-paths") == "off":
        os.environ["TORCHRL_SACFLOW_FAST_PATHS"] = "0"  # also for subprocesses (collector workers)
        from torchrl_sacflow import _fast

        _fast.set_enabled(False)


def pytest_report_header(config):
    return f"torchrl_sacflow fast paths: {config.getoption('--fast-paths')}"


@pytest.fixture
def no_cpp_compiler():
    """Inductor configured with a C++ compiler that does not exist (its search cache cleared
    before and after, so the real compiler is found again by later tests)."""
    import torch._inductor.config as inductor_config
    from torch._inductor import cpp_builder

    cpp_builder.cpp_compiler_search.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
            yield
    finally:
        cpp_builder.cpp_compiler_search.cache_clear()


@pytest.fixture
def fast_paths_on():
    """The speed paths switched on for one test (the tests *of* those paths), whatever --fast-paths says."""
    from torchrl_sacflow import _fast

    previous = _fast.enabled()
    _fast.set_enabled(True)
    try:
        yield
    finally:
        _fast.set_enabled(previous)
