"""hierarchical_generation: plan the module, then write each item's body with the plan as context.

1. The plan: the model answers a JSON object {"items": [{"kind", "name", "signature", "docstring"}]}.
   `parse_plan` checks it: the JSON parses, kinds are function/class, names are identifiers (not
   keywords, not repeated), and every signature parses as Python once turned into a stub
   (`def ...: ...` / `class ...: ...`) that defines that name. `make_plan` keeps the planner's output
   valid by checking and retrying: each retry is told the previous validation error (bounded
   attempts), on every backend. local_llama also constrains its decoding to `PLAN_SCHEMA` (xgrammar,
   through `GenerationParams.json_schema`); the checks still run, as signatures are free text.
2. The bodies: one model call per plan item (`body_messages`), its answer reduced to the item's
   definition, the helpers it defines and its imports (`build_piece`).
3. The module: imports deduplicated at the top, then the items in plan order (`assemble`).
"""

from __future__ import annotations

import ast
import json
import keyword
from collections.abc import Callable
from dataclasses import dataclass, field

from codegen.base import Completion, Message
from codegen.prompts import Labelled, Reference, extract_code, reference_block, spec_blocks
from models.generation import Plan, PlanItem
from models.spec_view import SpecView
from models.techniques.hierarchical_generation import SETTINGS as HIERARCHICAL

MAX_ITEMS = HIERARCHICAL.max_items
IDENT = "^[A-Za-z_][A-Za-z0-9_]*$"
PLAN_SCHEMA = {  # what local_llama's decoding is constrained to (other backends: check and retry only)
    "type": "object",
    "required": ["items"],
    "additionalProperties": False,
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "required": ["kind", "name", "signature", "docstring"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"enum": ["function", "class"]},
                    "name": {"type": "string", "pattern": IDENT, "maxLength": 64},
                    "signature": {"type": "string", "maxLength": 200, "pattern": "^[^{}\\n]+$"},
                    "docstring": {"type": "string", "maxLength": 200},
                },
            },
        }
    },
}
PLAN_SHAPE = (
    '{"items": [{"kind": "function" or "class", "name": "...", '
    '"signature": "def name(args) -> type" or "class Name(Base)", "docstring": "one line"}]}'
)


class PlanError(ValueError):
    """The planner's answer is not a valid plan; the message says why (it is fed back on retry)."""


# --- the plan ---------------------------------------------------------------------------------


def _spec_blocks(view: SpecView) -> list[Labelled]:
    named = [Labelled("Name: ").add(view.name, "name")] if view.name else []
    return named + spec_blocks(view, signatures="Signatures", tests="Tests")


def plan_messages(view: SpecView, *, feedback: str | None = None) -> list[Message]:
    system = f"You plan {view.language} modules. Answer with one JSON object and nothing else."
    parts = [
        Labelled("Specification:"),
        *_spec_blocks(view),
        Labelled(f"List every top-level function and class the module needs, without bodies, as JSON: {PLAN_SHAPE}"),
    ]
    if feedback:
        parts.append(
            Labelled("Your previous answer was not a valid plan: ")
            .add(feedback[:300], "failure")
            .add("\nAnswer again with valid JSON only.")
        )
    return [Message("system", system), Labelled.join(parts).message()]


def _json_object(text: str) -> object:
    body = extract_code(text, "json").strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0:
        raise PlanError("the answer holds no JSON object")
    if end < start:
        raise PlanError("the JSON object is never closed (was the answer cut short?)")
    try:
        return json.loads(body[start : end + 1])
    except json.JSONDecodeError as err:
        raise PlanError(f"the JSON does not parse: {err.msg} at line {err.lineno} column {err.colno}") from err


def stub_header(kind: str, name: str, signature: str) -> str:
    """The item's signature as a header line (`def name(...) -> T` / `class Name(Base)`); PlanError
    unless `<header>: ...` parses as Python and defines `name`."""
    sig = " ".join(signature.split()).rstrip(":").strip()
    if kind == "function":
        is_async = sig.startswith("async ")
        sig = sig.removeprefix("async ").strip().removeprefix("def ").strip()
        header = ("async def " if is_async else "def ") + sig
        types: tuple[type, ...] = (ast.FunctionDef, ast.AsyncFunctionDef)
    else:
        header = "class " + sig.removeprefix("class ").strip()
        types = (ast.ClassDef,)
    try:
        tree = ast.parse(f"{header}: ...")
    except SyntaxError as err:
        raise PlanError(f"{name}: signature {signature!r} does not parse as a {kind} stub: {err.msg}") from err
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, types) or node.name != name:
        raise PlanError(f"{name}: signature {signature!r} does not define the {kind} {name!r}")
    return header


def parse_plan(text: str) -> list[PlanItem]:
    """The plan in the planner's answer, checked; PlanError with the first problem found."""
    data = _json_object(text)
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PlanError('the JSON object needs a non-empty "items" list')
    if len(items) > MAX_ITEMS:
        raise PlanError(f"{len(items)} items: at most {MAX_ITEMS}")
    out: list[PlanItem] = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise PlanError(f"item {i} is not an object")
        kind, name, sig, doc = raw.get("kind"), raw.get("name"), raw.get("signature"), raw.get("docstring", "")
        if kind not in ("function", "class"):
            raise PlanError(f'item {i}: kind must be "function" or "class", not {kind!r}')
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise PlanError(f"item {i}: name {name!r} is not a Python identifier")
        if any(p.name == name for p in out):
            raise PlanError(f"item {i}: {name!r} is planned twice")
        if not isinstance(sig, str) or not sig.strip():
            sig = name if kind == "class" else ""
            if not sig:
                raise PlanError(f"item {i} ({name}): a function needs a signature")
        if not isinstance(doc, str):
            raise PlanError(f"item {i} ({name}): docstring must be a string")
        lines = doc.strip().splitlines()
        out.append(
            PlanItem(
                kind=kind,
                name=name,
                signature=stub_header(kind, name, sig),
                docstring=lines[0].strip() if lines else "",
            )
        )
    return out


Chat = Callable[[list[Message]], Completion]


def make_plan(chat: Chat, view: SpecView, *, attempts: int = HIERARCHICAL.plan_attempts) -> Plan:
    """Ask for a plan until one is valid, feeding back the last validation error; PlanError after
    `attempts` invalid answers (its message names the last problem)."""
    feedback: str | None = None
    tokens_in = tokens_out = 0
    latency = 0.0
    for attempt in range(1, max(1, attempts) + 1):
        completion = chat(plan_messages(view, feedback=feedback))
        tokens_in, tokens_out = tokens_in + completion.tokens_in, tokens_out + completion.tokens_out
        latency += completion.latency_s
        try:
            items = parse_plan(completion.text)
        except PlanError as err:
            cut = " (the answer hit its token limit)" if completion.finish_reason == "length" else ""
            feedback = f"{err}{cut}"
            continue
        return Plan(
            items=items, attempts=attempt, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=round(latency, 3)
        )
    raise PlanError(f"no valid plan after {attempts} attempt(s); last problem: {feedback}")


# --- the bodies -------------------------------------------------------------------------------


def stub(item: PlanItem, body: str = "...") -> str:
    doc = f'    """{_doc(item.docstring)}"""\n' if item.docstring else ""
    return f"{item.signature}:\n{doc}    {body}"


def _doc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def body_messages(
    view: SpecView, plan: Plan, item: PlanItem, *, references: list[Reference] | None = None
) -> list[Message]:
    lang = view.language
    system = (
        f"You are an expert {lang} programmer. Answer with the complete code of one {item.kind}, "
        f"the imports it needs first, in a single ```{lang} code block and nothing else."
    )
    stubs = "\n\n".join(stub(p) for p in plan.items)
    asked = f"{item.kind} `{item.signature}`" + (f": {item.docstring}" if item.docstring else "")
    parts = [
        *_spec_blocks(view),
        Labelled(f"The module `{view.path}` is planned as:\n```{lang}\n").add(stubs, "plan").add("\n```"),
        Labelled("Write the complete ").add(asked, "plan_item").add("" if item.docstring else "."),
        Labelled("The other items of the plan exist: use them, do not rewrite them."),
    ]
    if references:
        parts.append(reference_block(references, lang))
    return [Message("system", system), Labelled.join(parts).message()]


@dataclass
class Piece:
    """One item's code in the module, the imports it needs, and whether the model wrote it."""

    item: PlanItem
    code: str
    imports: list[str] = field(default_factory=list)
    written: bool = True  # False: the answer did not define the item (a stub raising NotImplementedError stands in)


def _segment(lines: list[str], node: ast.stmt) -> str:
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[start - 1 : node.end_lineno]).rstrip()


def build_piece(item: PlanItem, text: str, plan: Plan | None = None, language: str = "python") -> Piece:
    """The item's code from the model's answer: its definition with the helpers and imports it
    wrote; a bare body is put under the planned header; code that does not parse is kept as it
    is (the module will then not parse: that is reported, not hidden)."""
    code = extract_code(text, language).strip("\n")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return Piece(item, code)
    lines = code.splitlines()
    planned = {p.name for p in plan.items} if plan else {item.name}
    want = (ast.ClassDef,) if item.kind == "class" else (ast.FunctionDef, ast.AsyncFunctionDef)
    imports = [_segment(lines, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    target = next((n for n in tree.body if isinstance(n, want) and n.name == item.name), None)
    if target is not None:
        helpers = [_segment(lines, n) for n in tree.body if n is not target and _is_helper(n, planned)]
        return Piece(item, "\n\n\n".join([*helpers, _segment(lines, target)]), imports)
    rest = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    if rest and not defs:  # a bare body: put it under the planned header
        body = "\n".join(lines[rest[0].lineno - 1 :])
        has_doc = (
            isinstance(rest[0], ast.Expr)
            and isinstance(rest[0].value, ast.Constant)
            and isinstance(rest[0].value.value, str)
        )
        head = stub(item, "").rstrip() if not has_doc else f"{item.signature}:"
        return Piece(item, head + "\n" + _indent(body), imports)
    return Piece(item, stub(item, 'raise NotImplementedError("not generated")'), imports, written=False)


def _is_helper(node: ast.stmt, planned: set[str]) -> bool:
    """Top-level definitions an answer adds beside its item (kept), but not another planned item."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name not in planned
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return all(isinstance(t, ast.Name) and t.id not in planned for t in targets)
    return False  # examples, asserts, `if __name__ == "__main__":` blocks


def _indent(text: str) -> str:
    import textwrap

    return textwrap.indent(textwrap.dedent(text), "    ")


def item_blocks(code: str, plan: Plan) -> list[tuple[PlanItem, int, int]]:
    """Where each planned item's answer sits in the assembled module (`assemble`): its first and last line
    (from 1), the helpers written before it included, the imports gathered at the top not. Items the
    module does not define, and every item of a module that does not parse, are left out."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    defined = {
        n.name: i
        for i, n in enumerate(tree.body)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    out, after = [], 0  # `after`: the index of the first top-level statement not yet in a block
    for item in plan.items:
        at = defined.get(item.name)
        if at is None or at < after:
            continue
        nodes = [n for n in tree.body[after : at + 1] if not isinstance(n, (ast.Import, ast.ImportFrom))]
        first = min([nodes[0].lineno] + [d.lineno for d in getattr(nodes[0], "decorator_list", [])])
        out.append((item, first, tree.body[at].end_lineno or first))
        after = at + 1
    return out


def assemble(pieces: list[Piece]) -> str:
    """The module: each import once at the top (`from __future__` first), then the items in plan order."""
    seen: dict[str, None] = {}
    for piece in pieces:
        for imp in piece.imports:
            seen.setdefault(imp.strip(), None)
    future = [i for i in seen if i.startswith("from __future__")]
    imports = future + [i for i in seen if i not in future]
    blocks = ["\n".join(imports)] if imports else []
    blocks += [p.code for p in pieces]
    return "\n\n\n".join(blocks).rstrip() + "\n"
