"""Train and evaluate imagegate-mini, the built-in model (see docs/imagegate-mini.md).

    python -m training.mini.train --out src/imagegate/mini/weights --seed 0 --no-sheets
    python -m training.mini.evaluate --model src/imagegate/mini/weights --n 300

The installed package keeps only what serving needs: the weights and presets in
``imagegate.mini`` (which these modules import).  Run from the repository root.
"""
