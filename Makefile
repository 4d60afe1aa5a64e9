# Two entry points for a fresh machine: `make train` (the main job) and `make test`.
# Both create .venv and install the project against the pinned stack in constraints.txt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TRAIN_ARGS ?=

.PHONY: install train test benchmark clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) -m recipes.train_mujoco $(TRAIN_ARGS)

test: install
	$(PY) -m pytest -q tests

benchmark: install
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
