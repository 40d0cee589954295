"""What a saved stage-2b state must match to be continued, and the state itself (``stage2.py`` writes
it every checkpoint and at a stop; the same command continues it).
"""

from __future__ import annotations

from pathlib import Path

import torch

# What must match for a saved state to be continued: everything that shapes the run's numbers.
RESUME_KEYS = ("world", "seed", "batch_seed", "steps", "batch", "lr", "warmup", "ema", "n_scenes", "text_steps",
               "text_batch", "text_lr", "aux_weight", "edge_weight", "weighting", "minutes", "init_from",
               "timesteps", "uniform_from")


# Added later; in the fingerprint only when set, so that states written before them still resume.
RESUME_KEYS_IF_SET = ("workers", "unet_channels", "warm_from", "one_share", "hard_kinds", "hard_weight")


def _fingerprint(args) -> dict:
    fp = {k: getattr(args, k) for k in RESUME_KEYS}
    fp.update({k: getattr(args, k) for k in RESUME_KEYS_IF_SET if getattr(args, k, None)})
    return fp


def save_training_state(path: Path, args, step: int, elapsed: float, losses, rng, gen, opt, **modules) -> None:
    """Everything stage 2b needs to continue exactly where it stopped, written atomically."""
    state = {k: m.state_dict() for k, m in modules.items()}
    state.update(step=step, elapsed=elapsed, losses=list(losses[-500:]), rng=rng.getstate(), gen=gen.get_state(),
                 opt=opt.state_dict(), fingerprint=_fingerprint(args))
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path, args):
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    if state["fingerprint"] != _fingerprint(args):
        raise SystemExit(f"{path} was written by a run with other settings ({state['fingerprint']}); "
                         "delete it to start again, or run the same command to continue it")
    return state
