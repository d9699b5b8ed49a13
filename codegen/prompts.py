"""From a spec's view (models.spec_view) to a chat prompt, and from the answer back to code.

Template-level hint: {"language": ..., "path": "{function_name}.py"}. Property roles: `name`,
`description`, `signature`, `tests`, `items` (a list of {kind, name, signature, description}),
`context`, `imports` and `setup`. Properties without a role still reach the prompt as requirements,
so a tenant's own template works without any template-specific code here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from codegen.base import Message, Role, Span
from models.spec_view import SpecView

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


class Labelled:
    """Text built piece by piece that records where each labelled piece lands (codegen.base.Span)."""

    def __init__(self, text: str = "", label: str | None = None) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.spans: list[Span] = []
        if text:
            self.add(text, label)

    def add(self, text: str, label: str | None = None) -> Labelled:
        if label and text:
            self.spans.append(Span(label, self._length, self._length + len(text)))
        self._parts.append(text)
        self._length += len(text)
        return self

    def extend(self, other: Labelled) -> Labelled:
        shift = self._length
        self._parts.append(other.text)
        self._length += len(other.text)
        self.spans += [Span(s.label, s.start + shift, s.end + shift) for s in other.spans]
        return self

    def lines(self, values: list[str], label: Callable[[int], str | None]) -> Labelled:
        """`values` one per line, the i-th (from 0) labelled `label(i)`."""
        for i, value in enumerate(values):
            if i:
                self.add("\n")
            self.add(value, label(i))
        return self

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @staticmethod
    def join(blocks: list[Labelled], sep: str = "\n\n") -> Labelled:
        out = Labelled()
        for i, block in enumerate(blocks):
            if i:
                out.add(sep)
            out.extend(block)
        return out

    def message(self, role: Role = "user") -> Message:
        return Message(role, self.text, tuple(self.spans))


Reference = tuple[str, str]  # a retrieved snippet: its id, its content


def spec_blocks(view: SpecView, *, signatures: str, tests: str) -> list[Labelled]:
    """The spec's parts as prompt blocks (description, imports, signatures, items, requirements, context,
    the tests' setup, tests), each value labelled; `signatures` and `tests` are the headers of those two
    blocks. The declared imports are also added to the generated module when the model leaves one out
    (codegen.declared_imports)."""
    parts: list[Labelled] = []
    if view.description:
        parts.append(Labelled("Description: ").add(view.description, "description"))
    if view.imports:
        parts.append(Labelled("The code must start with these imports:\n").add("\n".join(view.imports), "imports"))
    if view.signatures:
        parts.append(Labelled(f"{signatures}:\n").add("\n".join(view.signatures), "signature"))
    for item in view.items:
        sig = item.get("signature") or item.get("name")
        line = f"{item.get('kind', 'function')} {sig}: {item.get('description', '')}"
        parts.append(Labelled("- ").add(line, f"item:{item.get('name') or sig}"))
    if view.requirements:
        block = Labelled("Requirements:\n")
        for i, requirement in enumerate(view.requirements):
            block.add("\n- " if i else "- ").add(requirement, f"requirement:{i + 1}")
        parts.append(block)
    if view.context:
        parts.append(Labelled("Context:\n").add("\n".join(view.context), "context"))
    if view.setup and view.tests:
        header = "The tests run after this setup (it is not part of the code):\n"
        parts.append(Labelled(header).add("\n".join(view.setup), "setup"))
    if view.tests:
        parts.append(Labelled(f"{tests}:\n").lines(view.tests, lambda i: f"test:{i + 1}"))
    return parts


def reference_block(references: list[Reference], language: str) -> Labelled:
    """The retrieved snippets, each fenced and labelled `snippet:<id>`."""
    block = Labelled("Related code from this team's knowledge base (reuse what helps):\n")
    for i, (ref_id, content) in enumerate(references):
        block.add("\n\n" if i else "").add(f"```{language}\n").add(content, f"snippet:{ref_id}").add("\n```")
    return block


def build_messages(
    view: SpecView, *, references: list[Reference] | None = None, feedback: str | None = None
) -> list[Message]:
    lang = view.language
    system = (
        f"You are an expert {lang} programmer. Answer with the complete code in a single "
        f"```{lang} code block and nothing else."
    )
    kind = "module" if view.items else "function"
    parts = [Labelled(f"Write a {lang} {kind}" + (f" named `{view.name}`" if view.name else "") + ".")]
    parts += spec_blocks(view, signatures="Signature", tests="It must pass these tests")
    if references:
        parts.append(reference_block(references, lang))
    if feedback:
        parts.append(Labelled("A previous attempt failed:\n").add(feedback, "failure").add("\nFix it."))
    return [Message("system", system), Labelled.join(parts).message()]


def extract_code(text: str, language: str = "python") -> str:
    """The first fenced block (preferring one tagged with the language), else the whole text."""
    blocks = _FENCE.findall(text)
    for tag, body in blocks:
        if tag.lower() in (language, language[:2]):
            return body.strip("\n")
    if blocks:
        return blocks[0][1].strip("\n")
    return text.strip("\n")


def parses(code: str, language: str = "python") -> bool | None:
    """Whether the code parses (None: no parser for that language)."""
    if language != "python":
        return None
    return syntax_error(code) is None


def syntax_error(code: str) -> str | None:
    """Python's own message for why `code` does not parse (None: it parses)."""
    try:
        ast.parse(code)
    except SyntaxError as err:
        return f"line {err.lineno}: {err.msg}"
    except ValueError as err:  # a NUL byte
        return str(err)
    return None
