# paraplan: `make run` (main job) and `make test` (whole suite) set everything up on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-gpu validate lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,fp8,ray,kubernetes]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/paraplan ui

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks gpu

validate: $(STAMP)
	$(BIN)/paraplan validate-published --loso --out docs/VALIDATION.md

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
