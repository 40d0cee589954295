.PHONY: serve test mini1-weights train-mini train-mini1 train-mini2 train-mini2-gpu eval-mini eval-mini2 mini-lexicon bench bench-server

# The main job: set up .venv and serve the built-in model on 127.0.0.1:8000 (SQLite, ./data).
serve:
	bash scripts/serve.sh

# Lint (ruff), type-check (mypy, strict for src/), then the whole test suite (sets up .venv first).
test:
	bash scripts/test.sh

# The shipped built-in model (imagegate-mini 2, run 31; docs/imagegate-mini.md, "Run 22", "Run 24", "Run 27", "Run 29",
# "Run 30", "Run 31"): model 1's weights, taken from the commit that shipped them (so the command gives the same run
# whatever weights are checked out), trained on model 2's world and language for 6,000 steps of stage 2b (69 minutes on
# 2026-12-06's EPYC, 0.69 s a step; capped at 80 where a step is slower), then continued for 3,400 steps (36-40 minutes;
# capped at 45) on 20,000 new scenes, half of them one thing alone, the eleven kinds run 27 missed most drawn twice as
# often (runs 24, 27, 29, 30, 31): one 2-core CPU run of about 125 minutes on that EPYC, at most about 145 where the
# caps stop both lines (stage 1 and both latent caches included), resumable (stop it, run the same command again).
# Writes src/imagegate/mini/weights.
MINI1_REV = 377b0ff38c1f79024c51088cffc7750a9ebdbc73
MINI2_WORK = .mini-runs/work2-seed0
MINI_WORK = .mini-runs/work-mini
MINI1_WEIGHTS = .mini-runs/mini1-shipped
train-mini: mini1-weights
	bash scripts/bootstrap.sh
	.venv/bin/python -m training.mini.train --world 2 --out $(MINI_WORK)/run31-line1 --work $(MINI_WORK) --seed 0 \
	  --no-sheets --vae-init $(MINI1_WEIGHTS)/vae --vae-steps 300 --vae-minutes 8 --vae-lr 3e-4 \
	  --n-scenes 20000 --text-steps 200 --steps 6000 --minutes 80 --ckpt-minutes 10 --timesteps uniform \
	  --unet-channels 32 64 128 128 --warm-from $(MINI1_WEIGHTS) --lr 4e-4
	.venv/bin/python -m training.mini.train --world 2 --out src/imagegate/mini/weights --work $(MINI_WORK)/run31 \
	  --seed 1 --no-sheets --vae-from $(MINI_WORK)/run31-line1/vae --n-scenes 20000 --steps 3400 --minutes 45 \
	  --ckpt-minutes 10 --timesteps uniform --unet-channels 32 64 128 128 --init-from $(MINI_WORK)/run31-line1 --lr 2e-4 \
	  --one-share 0.5 --hard-kinds umbrella sun fish cup apple flower rocket tree dog boat crown --hard-weight 2

# Model 1's shipped folder (its UNet, text encoder and VAE), taken from the commit that shipped it: the model-2
# targets start from it whatever weights are checked out.
mini1-weights:
	rm -rf $(MINI1_WEIGHTS) && mkdir -p $(MINI1_WEIGHTS)
	git archive $(MINI1_REV) src/imagegate/mini/weights | tar -x -C $(MINI1_WEIGHTS) --strip-components 4

# Model 1 (run 11, shipped 2026-12-02 to 2026-12-04) from scratch, deterministic from the seed: the recipe is
# training/mini/train.py's defaults (docs/imagegate-mini.md lists them); runs from the repo root.
train-mini1:
	bash scripts/bootstrap.sh
	.venv/bin/python -m training.mini.train --out .mini-runs/mini1/weights --seed 0 --no-sheets

# Model 2 from scratch (docs/imagegate-mini.md, "Model 2"; run 16's recipe, shape 44.7%: not shipped), the same
# 2-core CPU budget, resumable.
train-mini2: mini1-weights
	bash scripts/bootstrap.sh
	.venv/bin/python -m training.mini.train --world 2 --out $(MINI2_WORK)/weights --work $(MINI2_WORK) --seed 0 \
	  --no-sheets --vae-init $(MINI1_WEIGHTS)/vae --vae-steps 300 --vae-minutes 8 --vae-lr 3e-4 \
	  --n-scenes 20000 --text-steps 200 --steps 8500 --minutes 125 --ckpt-minutes 10 --timesteps mid

# The same recipe on a CUDA GPU, as run 20 was (docs/imagegate-mini.md, "Run 20"): a smoke run measures a step,
# then the run fills about 6 minutes of UNet training; the weights land in /tmp/mini2-gpu/weights, the logs in
# .mini-runs/gpu. Not reproducible bit for bit (GPU kernels; the step count follows the measured speed).
train-mini2-gpu: mini1-weights
	bash scripts/bootstrap.sh
	PY=.venv/bin/python OUT=.mini-runs/gpu VAE_INIT=$(MINI1_WEIGHTS)/vae LIMIT_S=100000 bash training/mini/gpu_run.sh

# The issue #27 target lines, 300 prompts a line, one thread (about 90 minutes on 2026-12-06's EPYC; add
# --part splits and --part rest to the command for two processes, one a core); MINI_MODEL=DIR for another folder.
MINI_MODEL ?= src/imagegate/mini/weights
eval-mini2:
	.venv/bin/python -m training.mini.evaluate --targets --model $(MINI_MODEL) --n-per-line 300

# Rebuild src/imagegate/mini/lexicon.json (colour names, WordNet kinds and sizes, typing slips for the built-in
# model's prompts) from its sources; installs Debian's wordnet-base, wamerican and wbritish if missing
# (docs/imagegate-mini.md, "Lexicon", "Prose read").
mini-lexicon:
	bash scripts/build_mini_lexicon.sh

eval-mini:
	.venv/bin/python -m training.mini.evaluate --model $(MINI_MODEL) --n 300

bench-server:
	bash scripts/bootstrap.sh test
	.venv/bin/python bench/bench_server.py
