"""tree_transformers' work on the generation worker (models/techniques/tree_transformers.py names these
functions in its `activities`): scoring candidates, and reranking snippets by their trees.

Each takes the step's payload and a `StepContext` (codegen/technique_steps.py) and returns a JSON-able dict.
The checkpoint is the tenant's own when it has one, else the built-in one (codegen/tree/checkpoints.py).
"""

from __future__ import annotations

from codegen.technique_steps import StepContext, Unavailable
from codegen.tree import checkpoints


def _selector(context: StepContext) -> tuple[checkpoints.Selector, str | None]:
    try:
        return checkpoints.for_tenant(context.models_path, context.tenant_id)
    except checkpoints.TreeUnavailable as err:
        raise Unavailable(str(err)) from err


def features(candidate: dict, tree: float) -> list[float | None]:
    """A candidate's features for the combined score, in checkpoints.FEATURES' order."""
    parses = candidate.get("parses")
    return [
        tree,
        candidate.get("mean_logprob"),
        candidate.get("visible_share"),
        None if parses is None else float(parses),
    ]


def score(payload: dict, context: StepContext) -> dict:
    """{"candidates": [{code, mean_logprob, visible_share, parses}], "selector": "combined" | "tree"} ->
    each candidate's tree score and the score it is chosen by."""
    candidates = payload["candidates"]
    if not candidates:
        return {"tree": [], "selection": [], "checkpoint": None}
    selector, note = _selector(context)
    trees, _ = checkpoints.encode(selector.encoder, [c["code"] for c in candidates])
    tree = [round(float(t), 4) for t in trees]
    if payload.get("selector", "combined") == "tree":
        selection = tree
    else:
        selection = [round(selector.combiner(features(c, t)), 4) for c, t in zip(candidates, tree, strict=True)]
    return {"tree": tree, "selection": selection, "checkpoint": selector.label, "note": note}


def rerank(payload: dict, context: StepContext) -> dict:
    """{"draft": code, "snippets": [content]} -> the snippets' order by their trees' cosine similarity to the
    draft's (best first; ties keep the search's order) and each snippet's similarity, in the given order."""
    snippets = payload["snippets"]
    if not snippets:
        return {"order": [], "similarity": [], "checkpoint": None}
    selector, note = _selector(context)
    _, embedded = checkpoints.encode(selector.encoder, [payload["draft"], *snippets])
    similarity = [round(float(s), 4) for s in embedded[1:] @ embedded[0]]
    order = sorted(range(len(snippets)), key=lambda i: (-similarity[i], i))
    return {"order": order, "similarity": similarity, "checkpoint": selector.label, "note": note}
