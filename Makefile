# covidviz: `make app` (demo + app) and `make test` are the two commands a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: venv demo app test test-slow test-data test-all lint bench clean-demo

venv: $(VENV)/.installed

# pyproject.toml is the one list of dependencies; the package is installed editable, so
# `import covidviz` works from app_pages/, bench/, experiments/ and tests/ without sys.path edits.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

## Build the demo experiment (synthetic phantoms, DenseNet121 + ResNet50) unless it already exists.
demo: venv
	@if [ -f runs/demo/manifest.json ]; then echo "runs/demo exists; skipping training"; \
	else $(BIN)/python train.py --demo; fi

## Serve the explorer on http://localhost:$(PORT)
app: demo
	$(BIN)/streamlit run app.py --server.port $(PORT)

## ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade); settings in pyproject.toml.
lint: venv
	$(BIN)/ruff check .

## The default suite: fast unit, view, AppTest, end-to-end and (if chromium is installed) browser tests.
test: venv
	$(BIN)/python -m pytest -q

## Slower tests: DDP with two processes, demo-sized training, real-data training.
test-slow: venv
	$(BIN)/python -m pytest -q -m slow

## Only the tests that read ../shared/data (they also run inside `make test` when the data is there).
test-data: venv
	$(BIN)/python -m pytest -q -m needs_data

test-all: test test-slow

## Every benchmark in bench/, one after the other (tens of minutes on 2 cores; each prints its ratios).
BENCHES := loader cam diagnose leak projection latent som_page
bench: venv
	@for b in $(BENCHES); do echo "== python -m bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

clean-demo:
	rm -rf runs/demo
