# speclm: the two commands.
#   make demo   set up .venv and run the main job on the built-in default corpus
#   make test   set up .venv (with test extras) and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is the CPU build on this machine's disk; a bare `torch`
# requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# a CUDA build instead: make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_INDEX ?=
PRESET ?= demo
RUN ?= runs/$(PRESET)

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(BIN)/python -m pip install -q -e ".[dev,hf,selection]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/speclm run --preset $(PRESET) --run $(RUN)

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
