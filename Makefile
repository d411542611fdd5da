# Set-up is implicit: every target that needs the environment depends on .venv/.installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mask-pipeline demo $(or $(OUT),demo-output)

test: $(STAMP)
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks fuzz
	$(BIN)/ruff format --check pipeline tests benchmarks fuzz
	$(BIN)/mypy

# BENCH_ARGS: options of python -m benchmarks, e.g. make bench BENCH_ARGS="--section storage".
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Coverage-guided fuzzing of every door (PNG, image metadata, video chunks with their names,
# ClearML frames, job files, all JSON doors at once); FUZZ_SECONDS per target (findings: crash-*).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= png metadata chunk frames jobfile json
fuzz: $(STAMP)
	for target in $(FUZZ_TARGETS); do \
		$(BIN)/python -m fuzz $$target -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; \
	done

clean:
	rm -rf $(VENV) demo-output bench-output fuzz-corpus .pytest_cache .mypy_cache .ruff_cache
	# numba's on-disk cache is not invalidated when a kernel's callee in another module changes.
	find pipeline -name '*.nbi' -delete -o -name '*.nbc' -delete
