"""multi_head_attention's work on the generation worker (models/techniques/multi_head_attention.py): the
kept candidate's prompt built again exactly as its round built it (codegen.generate.candidate_messages),
its code teacher-forced after it as the model's fenced answer, and the reliance of each line on each
labelled span measured by the requested method."""

from __future__ import annotations

from uuid import UUID

from codegen.generate import candidate_messages
from codegen.provenance.explain import fenced, summary
from codegen.provenance.heads import read_weights
from codegen.technique_steps import StepContext, Unavailable
from models.generation import Reference
from models.spec_view import SpecView
from models.techniques.multi_head_attention import MAX_EXACT_SPANS


def explain(payload: dict, context: StepContext) -> dict:
    if context.backend is None:
        raise Unavailable("no model backend on this worker")
    backend = context.backend(payload["model"])
    if not hasattr(backend, "explain"):
        raise ValueError(f"{payload['model']} does not expose its attention or its log-probabilities")
    view = SpecView.model_validate(payload["view"])
    references = [Reference(id=UUID(r["id"]), content=r["content"]) for r in payload["references"]]
    messages = candidate_messages(view, references, payload.get("feedback"))
    method, weights = payload["method"], None
    spans = sum(len(m.spans) for m in messages)
    if method == "exact" and spans > MAX_EXACT_SPANS:
        raise ValueError(f"exact provenance: {spans} labelled parts, over the limit of {MAX_EXACT_SPANS}")
    if method == "estimate":
        label = backend.local_model  # the configured name the weights ship under, not the file it resolves to
        weights = read_weights(label)
        if weights is None:
            raise Unavailable(f"no fitted head weights for {label}: bench/provenance.py fit makes them")
    code = payload["code"]
    return summary(backend.explain(messages, fenced(code, view.language), code, method, weights), code)
