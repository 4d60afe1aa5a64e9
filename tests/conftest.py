"""Test-session settings: one torch thread (2-core CI machines), quiet TorchRL warnings."""
import os

os.environ.setdefault("RL_WARNINGS", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


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
