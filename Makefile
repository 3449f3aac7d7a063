# Every target sets itself up on a fresh machine with only python3, pip and make:
# uv is bootstrapped through pip when missing, the workspace environment is synced
# (all four packages installed, editable) and torch's CPU build is added with pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .uvboot/bin/uv
endif
STAMP := $(VENV)/.tokengate-synced

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(shell command -v $(PYTHON))
export UV_LINK_MODE := copy

.PHONY: setup demo test bench soak docs docs-serve lint typecheck pytest pytest-switch wheels clean

$(UV):
	$(PYTHON) -m venv .uvboot
	.uvboot/bin/python -m pip install --quiet uv

$(STAMP): $(UV) pyproject.toml packages/*/pyproject.toml
	$(UV) sync --all-packages --group dev --locked 2>/dev/null || $(UV) sync --all-packages --group dev
	$(UV) pip install --python $(PY) --quiet pip
	$(PY) -m pip install --quiet torch==2.13.0 || echo "torch could not be installed: its tests will be skipped"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m tokengate.core demo all

bench: $(STAMP)
	$(PY) -m tokengate.core bench --baseline --json bench-results.json --plot docs/assets/bench.png

soak: $(STAMP)
	$(PY) -m pytest tests/soak -p no:randomly --timeout 3600 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# One mypy run for the sources and the cross-package tests, then one per package's tests
# (each package's tests/ is its own root: conftest.py and test names may repeat across them).
typecheck: $(STAMP)
	$(VENV)/bin/mypy packages/*/src tests
	for tests in packages/*/tests; do $(VENV)/bin/mypy $$tests || exit 1; done

pytest: $(STAMP)
	$(PY) -m pytest packages/*/tests tests --ignore=tests/soak -q

wheels: $(STAMP)
	UV=$(UV) $(PY) tests/tools/check_wheels.py

# Every distribution's wheel into dist/ (pip install --find-links dist tokengate-core ...).
dist: $(STAMP)
	$(UV) build --all-packages --wheel --out-dir dist

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# The core and cross-package suites once more, threads switching after every few bytecodes
# (sys.setswitchinterval(1e-6)): rare interleavings become common.
pytest-switch: $(STAMP)
	TOKENGATE_SWITCH_INTERVAL=1e-6 $(PY) -m pytest -p tests.switchinterval -p no:randomly packages/tokengate-core/tests tests --ignore=tests/soak --ignore=tests/test_docs.py --ignore=tests/test_docs_offline.py --ignore=packages/tokengate-core/tests/test_plugins_authoring.py --ignore=packages/tokengate-core/tests/test_typing.py --ignore=packages/tokengate-core/tests/test_cli.py -q

test: lint typecheck pytest pytest-switch wheels docs

clean:
	rm -rf $(VENV) .uvboot site dist .mypy_cache .ruff_cache
