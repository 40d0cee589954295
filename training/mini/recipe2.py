"""What model 2 trains on and with: ``world2`` scenes, ``language`` prompts, their parse targets, and
the UNet chosen for speed on AVX2-only CPUs (docs/imagegate-mini.md, "Model 2: the recipe").

``train.py --world 2`` uses these; ``--world 1`` (the default) is model 1 unchanged.
"""

from __future__ import annotations

from .language import REL_WORDS, Claims2, corpus2, train_example2
from .parse import IGNORE, INVERSE, N_COL
from .scenes import COLOUR_NAMES, POSITION_NAMES
from .world2 import KIND_NAMES, SIZES, Scene2, render2, sample_scene2, sample_training_scene2

# Training prompts reach 42 tokens with model 2's tokenizer, but words it never saw fall back to bytes:
# single-thing held-out phrasings reach 57 tokens (500 sampled, 2026-12-03), which 48 positions would cut.
MAX_LENGTH = 64
RELS = list(REL_WORDS)
SIZE_NAMES = list(SIZES)
AUX_GROUPS = (("present", 2), ("kind", len(KIND_NAMES)), ("size", len(SIZE_NAMES)), ("pos", len(POSITION_NAMES)),
              ("count", 3), ("rel", len(RELS)))

# The UNet: model 1's (32, 64, 128, 128) took 0.54 s for a medium image on this repo's AVX2-only EPYC and
# 0.79-0.87 s on others (target 0.5 s). Runs 13-14 used (16, 32, 64, 128) (a UNet call at batch 2 with CFG
# 34-36 ms, a medium image 0.32-0.39 s) and lost the asked silhouette even from a rendered start at
# strength 0.45 (run 14: 57.5% kept). Run 16 gives the two outline levels (32x32 and 16x16 latents) model 1's
# widths: a call 48 ms (medium 0.40 s measured), a training step 1.44x (pilot 4 in docs/imagegate-mini.md);
# shapes moved only 42.3 -> 44.7%, everyday things 6.7 -> 19%.
UNET_CHANNELS = (32, 64, 64, 128)
UNET_ATTENTION_HEAD_DIM = 4


def make_unet(channels: tuple[int, ...] = UNET_CHANNELS):
    from diffusers import UNet2DConditionModel

    from imagegate.mini import NATIVE_SIZE

    return UNet2DConditionModel(
        sample_size=NATIVE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128, attention_head_dim=UNET_ATTENTION_HEAD_DIM, norm_num_groups=8,
    )


def text_targets(scene: Scene2, claims: Claims2 | None) -> list[int]:
    """Flat target vector: background, then per colour (present, kind, size, position, count, relation).
    Colours key the things (a counted group shares one colour; other things' colours are distinct)."""
    t = {g: [IGNORE] * N_COL for g, _ in AUX_GROUPS}
    bg = IGNORE
    if claims is not None:
        if claims.background:
            bg = COLOUR_NAMES.index(scene.background)
        # a full description names every thing, so an unnamed colour is absent; an edit does not
        if claims.edit is None and claims.things and all(c.colour for c in claims.things):
            t["present"] = [0] * N_COL
        for c in claims.things:
            if not c.colour:
                continue
            th = scene.things[c.idx[0]]
            k = COLOUR_NAMES.index(th.colour)
            t["present"][k] = 1
            t["count"][k] = len(c.idx) - 1
            if c.kind:
                t["kind"][k] = KIND_NAMES.index(th.kind)
            if c.size:
                t["size"][k] = SIZE_NAMES.index(th.size)
            if c.position and len(c.idx) == 1:
                t["pos"][k] = POSITION_NAMES.index(th.pos)
        named = {i for c in claims.things if c.colour for i in c.idx}
        if claims.relation is not None and {claims.relation[0], claims.relation[2]} <= named:
            a, rel, b = claims.relation
            t["rel"][COLOUR_NAMES.index(scene.things[a].colour)] = RELS.index(rel)
            t["rel"][COLOUR_NAMES.index(scene.things[b].colour)] = RELS.index(INVERSE[rel])
    out = [bg]
    for g, _ in AUX_GROUPS:
        out += t[g]
    return out


def backdrop(scene: Scene2) -> list[str]:
    return [scene.background] + ([scene.band] if scene.band else [])


__all__ = ["AUX_GROUPS", "MAX_LENGTH", "backdrop", "corpus2", "make_unet", "render2", "sample_scene2",
           "sample_training_scene2", "text_targets", "train_example2"]
