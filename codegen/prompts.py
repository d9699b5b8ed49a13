"""From a spec's view (models.spec_view) to a chat prompt, and from the answer back to code.

Template-level hint: {"language": ..., "path": "{function_name}.py"}. Property roles: `name`,
`description`, `signature`, `tests`, `items` (a list of {kind, name, signature, description}),
`context`, `imports` and `setup`. Properties without a role still reach the prompt as requirements,
so a tenant's own template works without any template-specific code here.
"""

from __future__ import annotations

import ast
import re

from codegen.base import Message
from models.spec_view import SpecView

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def spec_lines(view: SpecView, *, signatures: str, tests: str) -> list[str]:
    """The spec's parts as prompt lines (description, imports, signatures, items, requirements, context,
    the tests' setup, tests); `signatures` and `tests` are the labels of those two blocks. The declared
    imports are also added to the generated module when the model leaves one out
    (codegen.declared_imports)."""
    parts: list[str] = []
    if view.description:
        parts.append(f"Description: {view.description}")
    if view.imports:
        parts.append("The code must start with these imports:\n" + "\n".join(view.imports))
    if view.signatures:
        parts.append(f"{signatures}:\n" + "\n".join(view.signatures))
    for item in view.items:
        sig = item.get("signature") or item.get("name")
        parts.append(f"- {item.get('kind', 'function')} {sig}: {item.get('description', '')}")
    if view.requirements:
        parts.append("Requirements:\n" + "\n".join(f"- {r}" for r in view.requirements))
    if view.context:
        parts.append("Context:\n" + "\n".join(view.context))
    if view.setup and view.tests:
        parts.append("The tests run after this setup (it is not part of the code):\n" + "\n".join(view.setup))
    if view.tests:
        parts.append(f"{tests}:\n" + "\n".join(view.tests))
    return parts


def build_messages(
    view: SpecView, *, references: list[str] | None = None, feedback: str | None = None
) -> list[Message]:
    lang = view.language
    system = (
        f"You are an expert {lang} programmer. Answer with the complete code in a single "
        f"```{lang} code block and nothing else."
    )
    parts: list[str] = []
    if view.items:
        parts.append(f"Write a {lang} module" + (f" named `{view.name}`" if view.name else "") + ".")
    else:
        parts.append(f"Write a {lang} function" + (f" named `{view.name}`" if view.name else "") + ".")
    parts += spec_lines(view, signatures="Signature", tests="It must pass these tests")
    if references:
        parts.append(
            "Related code from this team's knowledge base (reuse what helps):\n"
            + "\n\n".join(f"```{lang}\n{r}\n```" for r in references)
        )
    if feedback:
        parts.append(f"A previous attempt failed:\n{feedback}\nFix it.")
    return [Message("system", system), Message("user", "\n\n".join(parts))]


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
