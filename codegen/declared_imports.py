"""A spec's declared imports (the `imports` role) in the generated module, whatever the model wrote.

The prompt tells the model the imports (codegen.prompts.spec_blocks); when its code still lacks one, the
line is added when the candidate is assembled (codegen.generate), so the candidates that are tested,
the generation that is stored and the artifact that is integrated are the same module, and it stands
alone. Nothing is executed: the code and the lines are only parsed.
"""

from __future__ import annotations

import ast

Binding = tuple  # ("import", name, asname) or ("from", module, name, asname)


def with_imports(code: str, imports: list[str]) -> str:
    """`code` with each declared import line it does not have at module level added at its top: after a
    module docstring and the `from __future__` imports (a declared `from __future__` line goes first). An
    import counts as present when the code binds the same names the same way (`import os, sys` has
    `import os`). Code that does not parse gets the missing lines prepended; a declared line that is not
    an import statement (the template's check refuses those) is left out."""
    declared = [(line.strip(), _bindings(line.strip())) for line in dict.fromkeys(imports)]
    declared = [(line, bindings) for line, bindings in declared if bindings]  # only import statements
    if not declared:
        return code
    tree = _parse(code)
    have = set() if tree is None else {b for node in tree.body for b in _node_bindings(node)}
    missing = [(line, bindings) for line, bindings in declared if not bindings <= have]
    if not missing:
        return code
    future = [line for line, bindings in missing if any(b[:2] == ("from", "__future__") for b in bindings)]
    others = [line for line, _ in missing if line not in future]
    block = [f"{line}\n" for line in future + others]
    if tree is None:
        return "".join(block) + code
    newline = code.endswith("\n")
    lines = (code if newline else code + "\n").splitlines(keepends=True)
    head, after_future = _insertion_points(tree)
    out = lines[:head] + block[: len(future)] + lines[head:after_future] + block[len(future) :] + lines[after_future:]
    text = "".join(out)
    return text if newline else text.removesuffix("\n")


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _bindings(line: str) -> frozenset[Binding]:
    tree = _parse(line)
    return frozenset(b for node in (tree.body if tree else []) for b in _node_bindings(node))


def _node_bindings(node: ast.stmt) -> list[Binding]:
    if isinstance(node, ast.Import):
        return [("import", a.name, a.asname) for a in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level:
        return [("from", node.module or "", a.name, a.asname) for a in node.names]
    return []


def _insertion_points(tree: ast.Module) -> tuple[int, int]:
    """Line indexes (0-based) after the module docstring, and after the `from __future__` imports that follow it."""
    body = list(tree.body)
    head = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            head = body.pop(0).end_lineno or 0
    after = head
    for node in body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            break
        after = node.end_lineno or after
    return head, after
