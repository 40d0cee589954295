"""Model 1's parse targets (stage 2a, and the parse loss kept on in stage 2b) and the training-only head
that predicts them from the text encoder's pooled state. Model 2's targets are ``recipe2.text_targets``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .prompts import REL_WORDS, Claims
from .scenes import COLOUR_NAMES, POSITION_NAMES, SHAPES, SIZE_NAMES, Scene

# The text encoder first learns to parse prompts: from the pooled (end-of-text) state, linear heads
# predict what the prompt claims, keyed by object colour (colours in a scene are distinct).  This is
# cheap (no images) and gives the UNet a text representation that already separates colour, shape,
# size, position and relation, instead of one it must discover through the diffusion loss alone.
RELS = list(REL_WORDS)
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
AUX_GROUPS = (("present", 2), ("shape", len(SHAPES)), ("size", len(SIZE_NAMES)), ("pos", len(POSITION_NAMES)),
              ("rel", len(RELS)))
N_COL = len(COLOUR_NAMES)
IGNORE = -100


def text_targets(scene: Scene, claims: Claims | None) -> list[int]:
    """Flat target vector: background, then per colour (present, shape, size, position, relation)."""
    t = {g: [IGNORE] * N_COL for g, _ in AUX_GROUPS}
    bg = IGNORE
    if claims is not None:
        if claims.background:
            bg = COLOUR_NAMES.index(scene.background)
        if all(c.colour for c in claims.objects):
            t["present"] = [0] * N_COL
        for o, c in zip(scene.objects, claims.objects, strict=True):
            if not c.colour:
                continue
            k = COLOUR_NAMES.index(o.colour)
            t["present"][k] = 1
            if c.shape:
                t["shape"][k] = SHAPES.index(o.shape)
            if c.size:
                t["size"][k] = SIZE_NAMES.index(o.size)
            if c.position:
                t["pos"][k] = POSITION_NAMES.index(o.pos)
        if claims.relation is not None:
            a, rel, b = claims.relation
            if claims.objects[a].colour and claims.objects[b].colour:
                t["rel"][COLOUR_NAMES.index(scene.objects[a].colour)] = RELS.index(rel)
                t["rel"][COLOUR_NAMES.index(scene.objects[b].colour)] = RELS.index(INVERSE[rel])
    out = [bg]
    for g, _ in AUX_GROUPS:
        out += t[g]
    return out


class ParseHead(torch.nn.Module):
    """Training-only linear heads on the pooled text state (not shipped)."""

    def __init__(self, hidden: int, groups=AUX_GROUPS):
        super().__init__()
        self.aux_groups = groups
        self.bg = torch.nn.Linear(hidden, N_COL)
        self.groups = torch.nn.ModuleList(torch.nn.Linear(hidden, N_COL * k) for _, k in groups)

    def loss(self, pooled: torch.Tensor, targets: torch.Tensor, with_acc: bool = False
             ) -> tuple[torch.Tensor, float | None]:
        """Summed cross-entropy; the accuracy (a host sync per head) only when asked, for logging."""
        logits = [self.bg(pooled)]
        tg = [targets[:, 0]]
        for i, (head, (_, k)) in enumerate(zip(self.groups, self.aux_groups, strict=True)):
            logits.append(head(pooled).view(-1, N_COL, k).reshape(-1, k))
            tg.append(targets[:, 1 + i * N_COL:1 + (i + 1) * N_COL].reshape(-1))
        loss = sum(F.cross_entropy(lg, t, ignore_index=IGNORE)
                   for lg, t in zip(logits, tg, strict=True) if (t != IGNORE).any())
        if not with_acc:
            return loss, None
        with torch.no_grad():
            hit = tot = 0
            for lg, t in zip(logits, tg, strict=True):
                m = t != IGNORE
                hit += (lg.argmax(-1)[m] == t[m]).sum().item()
                tot += m.sum().item()
        return loss, hit / max(tot, 1)
