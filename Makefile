.PHONY: serve test train-mini eval-mini bench bench-server

# The main job: set up .venv and serve the built-in model on 127.0.0.1:8000 (SQLite, ./data).
serve:
	bash scripts/serve.sh

# Lint (ruff), type-check (mypy, strict for src/), then the whole test suite (sets up .venv first).
test:
	bash scripts/test.sh

# Retrain the built-in model from scratch (deterministic from the seed); the recipe is
# training/mini/train.py's defaults (docs/imagegate-mini.md lists them); runs from the repo root.
train-mini:
	bash scripts/bootstrap.sh
	.venv/bin/python -m training.mini.train --out src/imagegate/mini/weights --seed 0 --no-sheets

eval-mini:
	.venv/bin/python -m training.mini.evaluate --model src/imagegate/mini/weights --n 300

bench-server:
	bash scripts/bootstrap.sh test
	.venv/bin/python bench/bench_server.py
