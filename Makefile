# Two commands on a fresh machine:  `make repro` (set up + dvc repro on the embedded sample)
# and `make test` (set up + the test suite). Everything else here serves those two.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test bench clean-resume help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the CPU wheel here; a GPU user installs a CUDA build first (README).
	$(BIN)/pip install --quiet -r requirements.lock
	rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)  ## create .venv with the pinned dependencies (idempotent)
	@test -d .dvc || $(BIN)/dvc init --quiet

repro: setup  ## run the whole pipeline (dvc repro) on the embedded sample, offline
	$(BIN)/dvc repro

# The Triton loss kernel (train.loss_kernel auto's choice on NVIDIA GPUs) is tested on CPU through triton's
# interpreter. A CUDA build of torch brings its own triton, which is kept (it must match that build); the CPU wheel
# brings none, so the tests get the triton the H200 figures were taken with. Outside requirements.lock on purpose:
# pinned there, it would replace a CUDA torch's own triton.
TRITON_VERSION := 3.6.0
TRITON_STAMP   := $(VENV)/.triton-checked-$(TRITON_VERSION)
$(TRITON_STAMP): $(STAMP)
	$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/pip install --quiet triton==$(TRITON_VERSION)
	touch $@

# Two pytest workers, a whole test file each at a time, the DAG modules first (README "Tests"; tests/conftest.py).
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: setup $(TRITON_STAMP)  ## run the test suite (unit + end-to-end dvc repro on a tiny profile)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15  # the slowest tests last: CI has a 25-minute budget

BENCHES := dedup_speed dedup_scale contamination_index decontaminate_speed quality_speed tokenize_speed train_speed extraction_quality scrape_throughput dvc_noop
bench: setup  ## benchmarks vs their references (not tests; need ../shared/data): one table at the end, bench/out/summary.json
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || echo "== bench/$$b.py FAILED"; done
	$(BIN)/python bench/summary.py

clean-resume:  ## remove resume state of killed stages (data/resume)
	rm -rf data/resume
