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
	  --vae-steps 1300 --vae-minutes 9 --vae-batch 8 --text-steps 300 --text-batch 192 \
	  --n-scenes 20000 --steps 6000 --batch 32 --lr 8e-4 --ema 0.998 --weighting v --minutes 74 --ckpt-minutes 15 \
	  --no-sheets

eval-mini:
	.venv/bin/python -m imagegate.mini.evaluate --model src/imagegate/mini/weights --n 300

bench-server:
	bash scripts/bootstrap.sh test
	.venv/bin/python bench/bench_server.py
