"""Builds CLIPTokenizer files (vocab.json, merges.txt, ...) locally.

A byte-level BPE in CLIP's exact on-disk format is learned on the prompt
corpus: the base vocabulary holds all 256 byte symbols, with and without the
``</w>`` end-of-word marker, so *any* text (unknown words, other scripts,
emoji) still tokenizes; merges are learned until every corpus word is a
single token.  Special tokens: ``<|startoftext|>`` and ``<|endoftext|>``
(also used for padding, as in Stable Diffusion).
"""

from __future__ import annotations

import collections
import itertools
import json
import re
from pathlib import Path

MAX_LENGTH = 48
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_WORD_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def learn_bpe(texts: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    b2u = bytes_to_unicode()
    freqs: collections.Counter[str] = collections.Counter()
    for t in texts:
        for w in _WORD_RE.findall(" ".join(t.lower().split())):
            freqs["".join(b2u[b] for b in w.encode("utf-8"))] += 1
    words = {w: (*w[:-1], w[-1] + "</w>") for w in freqs}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for w, syms in words.items():
            for a, b in itertools.pairwise(syms):
                pairs[(a, b)] += freqs[w]
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for w, syms in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = tuple(out)
    base = list(b2u.values())
    vocab_list = base + [c + "</w>" for c in base]
    for a, b in merges:
        vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    seen: dict[str, int] = {}
    for tok in vocab_list:
        if tok not in seen:
            seen[tok] = len(seen)
    return seen, merges


def build_tokenizer(out_dir: str | Path, texts: list[str], max_length: int = MAX_LENGTH) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = learn_bpe(texts)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    cfg = dict(special, model_max_length=max_length, do_lower_case=True, tokenizer_class="CLIPTokenizer",
               clean_up_tokenization_spaces=False, errors="replace", add_prefix_space=False)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return out
