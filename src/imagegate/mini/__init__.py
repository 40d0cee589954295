"""imagegate-mini: the small built-in text-to-image model.

Importing this package is cheap (no torch).  It holds what serving needs: the weights
and the presets.  Training and evaluation live in training/mini/ at the repository
root, outside the installed package.  See docs/imagegate-mini.md.
"""

from pathlib import Path

WEIGHTS_DIR: Path = Path(__file__).parent / "weights"
NATIVE_SIZE: int = 128
# quality -> (num_inference_steps, guidance_scale), DPM-Solver++(2M) scheduler
QUALITY_PRESETS: dict[str, tuple[int, float]] = {
    "low": (4, 4.0),
    "medium": (8, 4.0),
    "high": (16, 4.0),
}

__all__ = ["NATIVE_SIZE", "QUALITY_PRESETS", "WEIGHTS_DIR"]
