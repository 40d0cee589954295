#!/usr/bin/env bash
# The prepared GPU run of imagegate-mini 2 (issue #27: "one prepared run of at most 8 minutes"), as it was
# sent to a lent GPU machine from the repo root (docs/imagegate-mini.md, "Run 20"). That machine has torch and
# transformers but not diffusers: the diffusers wheel travels in .whl/. Output: $OUT/weights.tar.* (the
# pipeline folder, split under the transfer's 16 MiB a file), $OUT/smoke.log, $OUT/train.log.
#
# 1. A smoke run at toy size on the GPU with the real batch (every stage, 120 steps) fails fast if the CUDA
#    path breaks, and measures a step.
# 2. The run itself, step-bound: --steps fills BUDGET_S seconds of stage 2b at the measured rate (--minutes and
#    the timeout are only safety caps), mid timesteps for the first 40% of the steps, then uniform. The exact command is
#    printed; that is what the Makefile's train-mini2-gpu records.
set -euo pipefail
OUT=${OUT:-/tmp/out} PY=${PY:-python3}
mkdir -p "$OUT"
# stage 1 fine-tunes model 1's VAE. The Makefile takes it from the commit that shipped model 1; the default here
# is the shipped folder, which was model 1 until run 22 replaced it (2026-12-04): on a machine without the git
# history, carry .mini-runs/mini1-shipped (make mini1-weights) and pass VAE_INIT=.mini-runs/mini1-shipped/vae
VAE_INIT=${VAE_INIT:-src/imagegate/mini/weights/vae}
BUDGET_S=${BUDGET_S:-345}
# knobs for a dry run on a CPU (DEVICE=cpu BATCH=8 SCENES=400 SMOKE_SCENES=300 BUDGET_S=20)
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-256} SCENES=${SCENES:-100000} SMOKE_SCENES=${SMOKE_SCENES:-2000}
W=/tmp/mini2-gpu
SCRIPT_START=$(date +%s)
LIMIT_S=${LIMIT_S:-580}  # the device call's 600 s, less the tar
export PYTHONPATH=src:. TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if ! $PY -c "import diffusers" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=src:.:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

COMMON=(--world 2 --seed 0 --device $DEVICE --no-sheets --vae-init "$VAE_INIT"
        --workers 12 --unet-channels 32 64 128 128 --batch $BATCH --lr 1.6e-3 --warmup 300 --ema 0.999 ${EXTRA:-})

rm -rf $W && mkdir -p $W
$PY -m training.mini.train --out $W/smoke --work $W/smoke-work "${COMMON[@]}" \
  --vae-steps 3 --n-scenes $SMOKE_SCENES --text-steps 3 --steps 120 --minutes 3 --ckpt-minutes 100 2>&1 | tee $OUT/smoke.log
PER_STEP=$($PY - "$OUT/smoke.log" <<'EOF'
import re, sys
el = {int(m[1]): float(m[2]) for m in re.finditer(r"step (\d+) loss \S+ parse \S+ lr \S+ ([\d.]+)s", open(sys.argv[1]).read())}
print(max((el[100] - el[25]) / 75, 0.004), round(el[0]))
EOF
)
read -r PER_STEP STARTUP <<<"$PER_STEP"
LEFT=$(( LIMIT_S - ($(date +%s) - SCRIPT_START) ))
# stage 2b gets BUDGET_S, or less if the smoke took long: the stages before it and the saves take ~130 s, and
# the batch workers' start (STARTUP, the smoke's step 0: 62 s on the H200 machine) counts too
STEPS=$($PY -c "print(max(200, int(min($BUDGET_S, $LEFT - 130 - $STARTUP) / $PER_STEP) // 100 * 100))")
UNIFORM=$($PY -c "print(int($STEPS * 0.4))")
echo "smoke: ${PER_STEP}s a step at batch $BATCH, ${STARTUP}s to the first -> --steps $STEPS --uniform-from $UNIFORM"

CMD=($PY -m training.mini.train --out $W/weights --work $W/work "${COMMON[@]}"
     --vae-steps 300 --vae-minutes 8 --vae-lr 3e-4 --n-scenes $SCENES --text-steps 200
     --steps "$STEPS" --minutes 6.2 --ckpt-minutes 2 --timesteps mid --uniform-from "$UNIFORM")
echo "command: ${CMD[*]}"
start=$(date +%s)
# At the call's limit the trainer alone gets SIGTERM (--foreground: not its batch workers): the step ends, the
# weights and the state are saved.
timeout --foreground -s TERM $(( LIMIT_S - ($(date +%s) - SCRIPT_START) )) "${CMD[@]}" 2>&1 | tee $OUT/train.log || true
echo "whole run: $(( $(date +%s) - start )) s" | tee -a $OUT/train.log
tar -C $W -cf - weights | split -b 15m - $OUT/weights.tar.
ls -la $OUT
