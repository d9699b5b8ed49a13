"""A syntax-tree encoder for scoring generated Python candidates (the `tree_transformers` technique).

`nodes` turns source into a node sequence with each node's root-to-node path, `positions` encodes those
paths, `model` is the transformer over them, and `mutants` makes the broken and the equivalent variants
of a function. Training: `train` (phase 1, contrastive), `rank` (phase 2, and the combined score's
weights), `build` (the recipes for the built-in and a tenant's checkpoint). Serving: `checkpoints`
(versions, the tenant's or the built-in one) and `select` (the generation worker's scoring and snippet
reranking; models/techniques/tree_transformers.py names them).
"""
