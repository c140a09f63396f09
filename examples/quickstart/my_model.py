"""The MLServer quickstart's document-similarity model, served by inferkit.

The original loads spaCy's ``en_core_web_lg`` vectors. That model is a download from outside the
package registries, so when spaCy or the model is missing we fall back to a light similarity that
needs no download: the cosine of the two documents' word-count vectors. Install spaCy and
``en_core_web_lg`` to get the original behaviour; the request and response are the same.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from inferkit import Model, decode_args


class BagOfWords:
    """``nlp(text).similarity(other)`` with word counts instead of word vectors."""

    def __call__(self, text: str) -> _Doc:
        return _Doc(Counter(re.findall(r"[a-z0-9']+", text.lower())))


class _Doc:
    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts

    def similarity(self, other: _Doc) -> float:
        dot = sum(n * other.counts[w] for w, n in self.counts.items())
        norm = math.sqrt(sum(n * n for n in self.counts.values()))
        norm *= math.sqrt(sum(n * n for n in other.counts.values()))
        return dot / norm if norm else 0.0


def _load_nlp() -> Any:
    try:
        import spacy

        return spacy.load("en_core_web_lg")
    except (ImportError, OSError):
        return BagOfWords()


class MyKulModel(Model):
    """Similarity of two documents, as in the MLServer quickstart."""

    async def load(self) -> None:
        self.model = _load_nlp()

    @decode_args
    async def predict(self, docs: list[str]) -> np.ndarray:
        doc1 = self.model(docs[0])
        doc2 = self.model(docs[1])
        return np.array(doc1.similarity(doc2))
