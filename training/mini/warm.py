"""Warm start: model 2's stage 2b begins from model 1's trained UNet and text encoder.

Model 2's CPU runs from scratch drew shapes worse than model 1 (runs 13-21, docs/imagegate-mini.md): one
150-minute run on two cores gives a third of the steps its silhouettes need. Model 1 already draws the six
shapes crisply, in ten colours, at nine places and two sizes. With model 1's UNet widths, its UNet is model 2's
architecture exactly, so it is copied whole. The text encoders differ only in their vocabulary (each world fits
its own byte-level BPE, ``tokenizer.py``) and in their number of positions (48 and 64): a token that both
vocabularies hold (the same string: ``red</w>``, ``circle</w>``, ``,</w>``, a byte) takes model 1's embedding
row, a token only model 2 has (``house</w>``, ``crimson</w>``) keeps its fresh random row, and positions
beyond model 1's (padding, for its prompts) take its last position's row. Every layer above the embeddings
is model 1's. So a prompt in model 1's grammar reads exactly as model 1 read it at the first step (a test
checks the hidden states), and training teaches the new words, kinds and settings on top.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _vocab(tok_dir: Path) -> dict[str, int]:
    return json.loads((Path(tok_dir) / "vocab.json").read_text(encoding="utf-8"))


def warm_start(unet: torch.nn.Module, te: torch.nn.Module, src: str | Path, tok_dir: str | Path) -> dict[str, int]:
    """Copy the pipeline folder ``src``'s UNet (whole) and text encoder (by token string) into ``unet``/``te``.

    ``tok_dir`` is the tokenizer ``te`` was built for. Returns counts of what was copied. A UNet of other widths
    is refused, naming both."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    src = Path(src)
    missing = [p for p in ("unet", "text_encoder", "tokenizer/vocab.json") if not (src / p).exists()]
    if missing:
        raise SystemExit(f"--warm-from {src}: not a pipeline folder (no {', '.join(missing)})")
    old_unet = UNet2DConditionModel.from_pretrained(src / "unet", dtype=torch.float32)
    theirs, ours = tuple(old_unet.config.block_out_channels), tuple(unet.config.block_out_channels)
    if theirs != ours:
        raise SystemExit(f"--warm-from {src}: its UNet has widths {theirs}, this run's {ours}; "
                         f"pass --unet-channels {' '.join(map(str, theirs))}")
    unet.load_state_dict(old_unet.state_dict())
    old_te = CLIPTextModel.from_pretrained(src / "text_encoder", dtype=torch.float32)
    old_sd, new_sd = old_te.state_dict(), te.state_dict()
    tok_key = next(k for k in old_sd if k.endswith("token_embedding.weight"))
    pos_key = next(k for k in old_sd if k.endswith("position_embedding.weight"))
    for k, v in old_sd.items():
        if k in (tok_key, pos_key) or k.endswith("position_ids"):
            continue
        if new_sd[k].shape != v.shape:
            raise SystemExit(f"--warm-from {src}: text encoder {k} is {tuple(v.shape)}, "
                             f"this run's {tuple(new_sd[k].shape)}")
        new_sd[k] = v.clone()
    old_vocab, new_vocab = _vocab(src / "tokenizer"), _vocab(tok_dir)
    emb = new_sd[tok_key].clone()
    shared = 0
    for token, i in new_vocab.items():
        j = old_vocab.get(token)
        if j is not None:
            emb[i] = old_sd[tok_key][j]
            shared += 1
    new_sd[tok_key] = emb
    pos = new_sd[pos_key].clone()
    n_pos = min(len(pos), len(old_sd[pos_key]))
    pos[:n_pos] = old_sd[pos_key][:n_pos]
    pos[n_pos:] = old_sd[pos_key][n_pos - 1]  # extra positions hold padding: make them read as model 1's last
    new_sd[pos_key] = pos
    te.load_state_dict(new_sd)
    return {"tokens_shared": shared, "tokens_new": len(new_vocab) - shared, "positions_copied": n_pos}
