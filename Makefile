# Two commands do everything on a fresh clone: `make train` (demo training) and `make test`.
# Both create .venv and install the project into it first; the install is skipped while
# pyproject.toml is unchanged, so repeated calls start at once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast lint clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## train the demo model on the embedded demo data (add ARGS="key=value ...")
	$(BIN)/python -m detect.train $(ARGS)

test: $(STAMP)  ## every test, slow ones included
	WANDB_MODE=disabled $(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## the tests without the slow marker
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check detect tests scripts benchmarks

clean-demo:  ## delete the generated demo data (it is regenerated on the next run)
	rm -rf data/demo
