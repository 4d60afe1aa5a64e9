# Two entry points for a fresh machine: `make train` (the main job) and `make test`.
# Both create .venv and install the project against the pinned stack in constraints.txt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TRAIN_ARGS ?=

.PHONY: install train test test-slow-paths benchmark clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) -m recipes.train_mujoco $(TRAIN_ARGS)

# The whole suite with the speed paths of torchrl_sacflow/_fast on, then the algorithm and
# equivalence tests again with them off (TorchRL's own code paths). `make test-slow-paths`: all of it off.
FAST_PATH_TESTS := tests/test_sac_flow_loss.py tests/test_crossq.py tests/test_flow_actor.py tests/test_actor_options.py \
	tests/test_fast_paths.py tests/test_envs.py tests/test_direct_actor.py tests/test_tanh_normal.py \
	tests/test_target_update.py tests/test_training_utils.py

test: install
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --fast-paths off $(FAST_PATH_TESTS)

test-slow-paths: install
	$(PY) -m pytest -q --fast-paths off tests

benchmark: install
	$(PY) -m benchmarks.perf.throughput

clean:
	rm -rf $(VENV) outputs .pytest_cache
