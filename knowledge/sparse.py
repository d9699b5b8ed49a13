"""The lexical half of hybrid retrieval: code-aware tokens as Qdrant sparse vectors.

Identifiers are split on snake_case and camelCase, lower-cased and lightly stemmed, and a compound
identifier is also kept whole (as a code-search analyzer's "preserve original" does), so
`has_close_elements` matches `close` and `elements` and, more strongly, its exact name. Each term's
weight is BM25's saturated term frequency, and Qdrant's IDF modifier supplies the inverse document
frequency at query time, so the collection scores BM25-like without a separate text index.
Changing the terms changes the index: run `specmill knowledge reindex` after an upgrade.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

from qdrant_client import models as qm

K1, B, AVG_LEN = 1.2, 0.75, 60.0
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|\d+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
STOP = frozenset(
    "a an and are as at be by def do else for from if in into is it its of on or return returns the this that "
    "to with self none true false not import pass elif while lambda given list lists".split()
)


def _stem(word: str) -> str:
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + keep
    return word


def tokens(text: str) -> list[str]:
    out: list[str] = []
    for ident in _IDENT.findall(text):
        parts = [p for raw in _WORD.findall(ident.replace("_", " ")) for p in (_CAMEL.findall(raw) or [raw])]
        for part in parts:
            word = part.lower()
            if len(word) > 1 and word not in STOP:
                out.append(_stem(word))
        if len(parts) > 1:
            out.append(ident.strip("_").lower())
    return out


def _index(term: str) -> int:
    return zlib.crc32(term.encode())  # a stable u32: the same term maps to the same dimension everywhere


def document_vector(text: str) -> qm.SparseVector:
    counts = Counter(tokens(text))
    length = sum(counts.values()) or 1
    norm = K1 * (1 - B + B * length / AVG_LEN)
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        weights[_index(term)] = weights.get(_index(term), 0.0) + tf * (K1 + 1) / (tf + norm)
    return qm.SparseVector(indices=list(weights), values=list(weights.values()))


def query_vector(text: str) -> qm.SparseVector:
    weights: dict[int, float] = {}
    for term in set(tokens(text)):
        weights[_index(term)] = 1.0
    return qm.SparseVector(indices=list(weights), values=list(weights.values()))
