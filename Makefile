# Two entry points: `make demo` and `make test`. Both set up .venv on a fresh machine first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint typecheck unit crd constraints clean

setup: $(VENV)/.installed

# torch is installed first and pinned exactly: any other version pulls GBs of CUDA packages.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	touch $@

# Validate the examples, then build -> serve on the real Triton server -> query -> load test.
demo: setup
	$(BIN)/optimodel validate examples/*.yaml
	$(BIN)/optimodel demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

# The chart's crds/ is a checked copy of crds/ (a test compares them).
crd: setup
	$(BIN)/optimodel crd
	cp crds/optimizedmodel.yaml charts/optimodel/crds/optimizedmodel.yaml

# Side-by-side benchmark against PyTorch, torch.ao, onnxruntime and Optimum (≈ 15 min on 2
# cores): writes benchmarks/results/ and README.md's performance table. bench-quick: 2-3 min.
.PHONY: bench bench-quick
# Every number in the README's performance section: peers table and plots (regenerated into
# the README), then the issue targets (JSON in benchmarks/results/). About 15 minutes.
bench: setup
	$(BIN)/python -m benchmarks.compare
	$(BIN)/python benchmarks/builder_speedup.py
	$(BIN)/python benchmarks/serving_batching.py
	$(BIN)/python -m benchmarks.operator_reconcile
	$(BIN)/python -m benchmarks.budget_simulation
	$(BIN)/python -m benchmarks.capacity_simulation
	$(BIN)/python benchmarks/roofline_check.py

bench-quick: setup
	$(BIN)/python -m benchmarks.compare --quick

constraints: setup
	(echo '# Versions resolved together and tested (pip check clean). Regenerate: make constraints'; \
	 $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/') > constraints.txt

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
