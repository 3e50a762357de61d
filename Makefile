# The two set-up commands: `make run` (quickstart sweep) and `make test`.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: run test lint format clean docs

$(PY):
	python3 -m venv .venv

# Re-install only when pyproject changes; torch/torchvision pins come from pyproject.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m orchestrator sweeps/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: $(STAMP)
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

# The generated blocks of docs/ (sweep-file keys, metric names); tests/unit/test_docs.py checks them.
docs: $(STAMP)
	$(PY) scripts/gen_docs.py

clean:
	rm -rf results mlruns .pytest_cache
