"""A syntax-tree encoder for scoring generated Python candidates (the `tree_transformers` technique).

The building blocks, not yet wired into generation: `nodes` turns source into a node sequence with each
node's root-to-node path, `positions` encodes those paths, `model` is the transformer over them, and
`mutants` makes the broken and the equivalent variants of a function that training and the tests use.
Only `positions` and `model` import torch.
"""
