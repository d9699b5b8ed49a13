"""Integration's static checks of the round's files: nothing is imported or executed, only parsed.

Per file: does it parse; do its imports resolve (a project module and the names taken from it, the
standard library, or an allowed package the sandbox shows); and pyflakes' findings of undefined names
and unused imports, as "line 3: undefined name 'datetime'". An undefined name is `blocking`: the tests
would only stop at its NameError, so run_spec_tests sends the artifact to the repair round with these
problems instead of spending a sandbox run on it.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Set

from pyflakes import checker as pyflakes
from pyflakes import messages as found

REPORTED = (found.UndefinedName, found.UndefinedLocal, found.UndefinedExport, found.UnusedImport)
MAX_FINDINGS = 20  # per file; the rest are counted
_UNDEFINED = re.compile(r"^line \d+: undefined name '\w+'$")


def blocking(problems: list[str]) -> list[str]:
    """The problems that stop an artifact before its tests: its undefined names."""
    return [p for p in problems if _UNDEFINED.match(p)]


class FileChecks:
    """One file's findings: whether it parses, and the problems, in the order found."""

    def __init__(self) -> None:
        self.parses: bool = True
        self.problems: list[str] = []


def static_checks(files: dict[str, str], importable: Set[str] = frozenset()) -> dict[str, FileChecks]:
    """Per file: does it parse, do its imports resolve (a project module and the names taken from it,
    the standard library, or an allowed package the sandbox shows, `importable`), and pyflakes'
    undefined names and unused imports. CPU-bound: callers run it on a thread."""
    trees: dict[str, ast.Module] = {}
    out = {path: FileChecks() for path in files}
    for path, content in files.items():
        try:
            trees[path] = ast.parse(content)
        except (SyntaxError, ValueError) as err:
            out[path].parses = False
            out[path].problems.append(f"does not parse: {getattr(err, 'msg', err)}")
        except (RecursionError, MemoryError):  # nesting deeper than the parser can take: never a crash
            out[path].parses = False
            out[path].problems.append("does not parse: nested too deeply for the parser")
    modules = {path.removesuffix(".py").replace("/", "."): tree for path, tree in trees.items()}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    _check_module(alias.name, modules, importable, out[path])
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in modules:
                    defined = _top_level_names(modules[node.module])
                    missing = [a.name for a in node.names if a.name != "*" and a.name not in defined]
                    if missing:
                        out[path].problems.append(f"{node.module} does not define {', '.join(missing)}")
                else:
                    _check_module(node.module, modules, importable, out[path])
        out[path].problems += names_findings(tree, path)
    return out


def names_findings(tree: ast.Module, path: str) -> list[str]:
    """pyflakes on the parsed tree (never on imported code): undefined names, unused imports."""
    try:
        messages = pyflakes.Checker(tree, filename=path).messages
    except (RecursionError, MemoryError):
        return ["names not checked: nested too deeply for the checker"]
    lines = [
        f"line {m.lineno}: {m.message % m.message_args}"
        for m in sorted(messages, key=lambda m: (m.lineno, m.col))
        if isinstance(m, REPORTED)
    ]
    if len(lines) > MAX_FINDINGS:
        lines = lines[:MAX_FINDINGS] + [f"and {len(lines) - MAX_FINDINGS} more finding(s) of names"]
    return lines


def _check_module(name: str, modules: dict, importable: Set[str], checks: FileChecks) -> None:
    top = name.split(".")[0]
    if name in modules or top in modules or top in sys.stdlib_module_names or top in importable:
        return
    allowed = f" or the allowed packages ({', '.join(sorted(importable))})" if importable else ""
    checks.problems.append(f"import {name} does not resolve: not in the project, the standard library{allowed}")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names
