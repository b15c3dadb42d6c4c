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

.PHONY: setup browser demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(BIN)/python -m pip install -q -e ".[dev,hf,selection]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/speclm run --preset $(PRESET) --run $(RUN)

# Headless Chromium for the report's browser test (tests/test_report.py): Debian's package,
# where this machine lets us install it (root with apt-get); elsewhere that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	    >/tmp/speclm-chromium.log 2>&1 || echo "make: could not install chromium (see /tmp/speclm-chromium.log); the browser test will skip"; }; } || true

test: setup browser
	$(BIN)/python -m pytest tests

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
