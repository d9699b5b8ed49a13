"""The techniques' names for the tests, read from their modules (tests/test_technique_names.py)."""

from models.techniques import (
    hierarchical_generation,
    hybrid_grammar_neural,
    multi_head_attention,
    retrieval_augmentation,
    syntax_aware_beam_search,
    tree_transformers,
)

RETRIEVAL = retrieval_augmentation.TECHNIQUE.name
HIERARCHICAL = hierarchical_generation.TECHNIQUE.name
BEAM = syntax_aware_beam_search.TECHNIQUE.name
GRAMMAR = hybrid_grammar_neural.TECHNIQUE.name
TREE = tree_transformers.TECHNIQUE.name
ATTENTION = multi_head_attention.TECHNIQUE.name
