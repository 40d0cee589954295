"""Moderation, two stages: the input (prompt and, for edits, the input images) before any
model work, and the output (every generated image, previews included) before it leaves.
The service calls `check_input` and `check_output`; `/v1/moderations` calls `assess`.

A `Moderator` turns texts and images into category scores (0..1); the thresholds of the
request's `moderation` level turn scores into a block. sexual/minors is blocked at every
level and by any score above 0."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from ..errors import ModerationBlocked
from ..settings import Settings
from .images import NsfwClassifier, shared_classifier
from .text import HIGH, MEDIUM, MINORS, WordLists

# OpenAI's moderation categories, in its order (the /v1/moderations result carries all).
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
              "violence/graphic")
IMAGE_CATEGORIES = ("sexual",)  # what the image classifier scores
# Text scores are MEDIUM (a plain list entry) or HIGH (a `high:` entry): auto blocks both,
# low only the second.
TEXT_THRESHOLDS = {"auto": 0.5, "low": 0.9}
assert MEDIUM >= TEXT_THRESHOLDS["auto"] > 0 and HIGH >= TEXT_THRESHOLDS["low"] > MEDIUM


class Moderator(Protocol):
    """Scores per category for texts and for images. Word lists and the NSFW classifier are
    the two shipped here; an upstream /v1/moderations endpoint is a third kind."""

    def text_scores(self, text: str) -> dict[str, float]: ...

    def image_scores(self, images: Sequence[Image.Image]) -> list[dict[str, float]]: ...


class LocalModerator:
    """Word lists for text, open_nsfw for images."""

    def __init__(self, words: WordLists, classifier: NsfwClassifier) -> None:
        self.words = words
        self.classifier = classifier

    def text_scores(self, text: str) -> dict[str, float]:
        return self.words.score(text).scores

    def image_scores(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        return [{"sexual": s} for s in self.classifier.scores(images)]


@dataclass
class Assessment:
    """One input's (or one request's) scores and what the level blocks."""

    scores: dict[str, float] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)  # category → ["text", "image"]
    flagged: list[str] = field(default_factory=list)


class Moderation:
    def __init__(self, settings: Settings, pool: Executor, moderator: Moderator | None = None) -> None:
        self.enabled = settings.moderation == "on"
        self.pool = pool
        self.image_thresholds = {"auto": settings.moderation_output_threshold_auto,
                                 "low": settings.moderation_output_threshold_low}
        self.settings = settings
        self._moderator = moderator
        if self.enabled:  # a bad list file or a missing classifier stops start-up, not a request
            _ = self.moderator

    @property
    def moderator(self) -> Moderator:
        """Made on first use when moderation is off (only /v1/moderations needs it then)."""
        if self._moderator is None:
            s = self.settings
            words = WordLists.from_files(s.moderation_deny_file, s.moderation_allow_file)
            self._moderator = LocalModerator(words, shared_classifier(s.torch_threads or 1))
        return self._moderator

    # -- thresholds ---------------------------------------------------------------------
    def flagged(self, scores: dict[str, float], kind: str, level: str) -> list[str]:
        out = []
        for cat, score in scores.items():
            if cat == MINORS:
                hit = score > 0.0
            elif kind == "text":
                hit = score >= TEXT_THRESHOLDS[level]
            else:
                hit = score >= self.image_thresholds[level]
            if hit:
                out.append(cat)
        return sorted(out, key=lambda c: CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES))

    # -- the service's two stages -------------------------------------------------------
    async def check_input(self, texts: Sequence[str], images: Sequence[Image.Image], level: str) -> None:
        """Raises ModerationBlocked (stage input) when the prompt or an input image is blocked."""
        if not self.enabled:
            return
        a = await self.assess(texts, images, level)
        if a.flagged:
            raise ModerationBlocked("input", a.flagged)

    async def check_output(self, images: Sequence[Image.Image], level: str) -> None:
        """Raises ModerationBlocked (stage output) when any of the images is blocked (one batched call)."""
        if not self.enabled or not images:
            return
        a = await self.assess([], images, level)
        if a.flagged:
            raise ModerationBlocked("output", a.flagged)

    async def assess(self, texts: Sequence[str], images: Sequence[Image.Image], level: str = "auto") -> Assessment:
        """Scores of texts and images together (the maximum per category), off the event loop."""
        loop = asyncio.get_running_loop()
        moderator = await loop.run_in_executor(self.pool, lambda: self.moderator)

        def run() -> Assessment:
            a = Assessment()
            for text in texts:
                self._merge(a, moderator.text_scores(text), "text", level)
            for scores in moderator.image_scores(images) if images else []:
                self._merge(a, scores, "image", level)
            return a

        return await loop.run_in_executor(self.pool, run)

    def _merge(self, a: Assessment, scores: dict[str, float], kind: str, level: str) -> None:
        for cat, score in scores.items():
            a.scores[cat] = max(a.scores.get(cat, 0.0), score)
            if score > 0 and kind not in a.applied.setdefault(cat, []):
                a.applied[cat].append(kind)
        for cat in self.flagged(scores, kind, level):
            if cat not in a.flagged:
                a.flagged.append(cat)
