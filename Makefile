.PHONY: serve test train-mini eval-mini bench bench-server

# The main job: set up .venv and serve the built-in model on 127.0.0.1:8000 (SQLite, ./data).
serve:
	bash scripts/serve.sh

# The whole test suite (sets up .venv first).
test:
	bash scripts/test.sh

# Retrain the built-in model from scratch (deterministic from the seed).
train-mini:
	bash scripts/bootstrap.sh
	OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m imagegate.mini.train --out src/imagegate/mini/weights --seed 0 \
	  --vae-minutes 7 --vae-batch 8 --n-scenes 16000 --batch 32 --steps 2400 --minutes 60 --lr 8e-4 --ema 0.995 \
	  --weighting v --dec-minutes 20

eval-mini:
	.venv/bin/python -m imagegate.mini.evaluate --model src/imagegate/mini/weights --n 300

bench-server:
	bash scripts/bootstrap.sh test
	.venv/bin/python bench/bench_server.py
