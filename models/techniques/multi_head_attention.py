"""multi_head_attention: not implemented yet (the catalog says so; a request for it is a 422)."""

from __future__ import annotations

from models.techniques.base import Technique


class MultiHeadAttention(Technique):
    name = "multi_head_attention"
    description = "Multi-head attention, as every transformer backend computes it."
    implemented = False


TECHNIQUE = MultiHeadAttention()
