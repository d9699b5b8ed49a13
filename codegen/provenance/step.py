"""multi_head_attention's work on the generation worker (models/techniques/multi_head_attention.py): the
kept candidate's prompt built again exactly as its round built it (codegen.generate.candidate_messages;
under hierarchical_generation, each planned item's body prompt, codegen.generate.body_prompt), its code
teacher-forced after it as the model's fenced answer, and the reliance of each line on each labelled
span measured by the requested method."""

from __future__ import annotations

from uuid import UUID

from codegen.generate import body_prompt, candidate_messages
from codegen.hierarchical import item_blocks
from codegen.provenance.explain import combine, fenced, nothing, summary
from codegen.provenance.heads import read_weights
from codegen.technique_steps import StepContext, Unavailable
from models.generation import Plan, Reference
from models.spec_view import SpecView
from models.techniques.multi_head_attention import MAX_EXACT_SPANS

OUTSIDE_ITEMS = "lines outside the planned items (the imports gathered at the top) are not explained"
NOT_PARSED = "the module does not parse, so its planned items cannot be found: nothing is explained"


def explain(payload: dict, context: StepContext) -> dict:
    if context.backend is None:
        raise Unavailable("no model backend on this worker")
    backend = context.backend(payload["model"])
    if not hasattr(backend, "explain"):
        raise ValueError(f"{payload['model']} does not expose its attention or its log-probabilities")
    view = SpecView.model_validate(payload["view"])
    references = [Reference(id=UUID(r["id"]), content=r["content"]) for r in payload["references"]]
    code, method = payload["code"], payload["method"]
    if payload.get("plan"):  # one answer per planned item, each to its own prompt
        plan = Plan.model_validate(payload["plan"])
        lines = code.split("\n")
        answers = [
            (body_prompt(view, plan, item, references), "\n".join(lines[first - 1 : last]), first - 1)
            for item, first, last in item_blocks(code, plan)
        ]
    else:
        answers = [(candidate_messages(view, references, payload.get("feedback")), code, 0)]
    spans = max((sum(len(m.spans) for m in messages) for messages, _, _ in answers), default=0)
    if method == "exact" and spans > MAX_EXACT_SPANS:
        raise ValueError(f"exact provenance: {spans} labelled parts, over the limit of {MAX_EXACT_SPANS}")
    weights = None
    if method == "estimate":
        label = backend.local_model  # the configured name the weights ship under, not the file it resolves to
        weights = read_weights(label)
        if weights is None:
            raise Unavailable(f"no fitted head weights for {label}: bench/provenance.py fit makes them")
    parts = [
        (backend.explain(messages, fenced(block, view.language), block, method, weights), offset)
        for messages, block, offset in answers
    ]
    if not parts:  # a module that does not parse is returned as it is, unexplained
        return {**summary(nothing(method), code), "note": NOT_PARSED}
    out = summary(combine(parts), code)
    return {**out, "note": OUTSIDE_ITEMS} if payload.get("plan") else out
