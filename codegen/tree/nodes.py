"""Python source as a sequence of syntax-tree nodes, each with its path from the root.

`linearize(source)` walks the `ast` tree in pre-order and gives one token per node: the node's type,
with its value where it has one (`BinOp:+`, `Compare:<,<=`, `Name:v0`, `Attribute:append`,
`Constant:str-short`). Identifiers are renamed by first occurrence (`v0`, `v1`, ...) except the names of
builtins, of common library modules and of their attributes (`math.floor` stays `Attribute:floor`), and
the methods of the builtin types; so a consistent renaming of local variables leaves the sequence
unchanged. Docstrings are dropped, so removing one changes nothing either. Contexts (`Load`, `Store`,
`Del`) and operator nodes emit nothing: an operator is its parent's value.

Code that does not parse still gets a sequence, one that starts with `<parse-error>`: the named nodes
of tree-sitter-python's concrete tree (tokens `ts:...`, error nodes included) where tree-sitter is
installed, else the `ast` tree of the longest prefix of whole lines that parses
(`codegen/syntax_check.py: parsing_prefix`).
"""

from __future__ import annotations

import ast
import builtins
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codegen.syntax_check import parsing_prefix

MAX_CHILDREN = 16  # a child index in a path is clipped at MAX_CHILDREN - 1
PARSE_ERROR = "<parse-error>"
LIBRARY_MODULES = frozenset(
    "math re itertools collections functools heapq bisect string os sys json typing random statistics operator "
    "copy datetime decimal fractions numpy np".split()
)
KEPT_NAMES = frozenset(dir(builtins)) | LIBRARY_MODULES
BUILTIN_METHODS = frozenset(
    name for kind in (str, list, dict, set, tuple, int, float) for name in dir(kind) if not name.startswith("_")
)

SYMBOLS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.MatMult: "@", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^",
    ast.BitAnd: "&", ast.Invert: "~", ast.Not: "not", ast.UAdd: "+", ast.USub: "-", ast.And: "and",
    ast.Or: "or", ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_SILENT = (ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_TS_OPERATORS = frozenset(
    {"binary_operator", "boolean_operator", "comparison_operator", "unary_operator", "augmented_assignment"}
)
_TS_STRING_PARTS = frozenset({"string_start", "string_content", "string_end", "comment"})


@dataclass(frozen=True, slots=True)
class Linear:
    """A node sequence: `tokens[i]` is node i's token, `paths[i]` its child indices from the root."""

    tokens: tuple[str, ...]
    paths: tuple[tuple[int, ...], ...]
    parsed: bool  # False: the source did not parse, and tokens[0] is PARSE_ERROR
    truncated: bool  # True: the tree had more than max_nodes nodes, and this is its pre-order prefix


class Renamer:
    """Identifiers by first occurrence: `v0`, `v1`, ...; builtins and library module names kept as they are."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name in KEPT_NAMES:
            return name
        return self._names.setdefault(name, f"v{len(self._names)}")

    def dotted(self, name: str) -> str:
        return name if name == "*" else ".".join(self(part) for part in name.split("."))


def parse_python(source: str) -> ast.Module | None:
    """The module's `ast` tree, or None when it does not parse."""
    try:
        with warnings.catch_warnings():  # invalid escapes and the like are warnings, not errors
            warnings.simplefilter("ignore")
            return ast.parse(source)
    except (SyntaxError, ValueError, OverflowError):  # ValueError: NUL bytes, lone surrogates
        return None
    except (RecursionError, MemoryError):  # nesting too deep for CPython's parser (MemoryError: its stack)
        return None


def linearize(source: str, max_nodes: int = 384) -> Linear:
    """`source`'s syntax tree as a pre-order node sequence of at most `max_nodes` nodes."""
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, not {max_nodes}")
    tree = parse_python(source)
    if tree is not None:
        tokens, paths, truncated = _walk(tree, _ast_children, _ast_tokenizer(), max_nodes)
        return Linear(tuple(tokens), tuple(paths), parsed=True, truncated=truncated)
    tokens, paths, truncated = _fallback(source, max_nodes - 1)
    return Linear((PARSE_ERROR, *tokens), ((), *((0, *path) for path in paths)), parsed=False, truncated=truncated)


def _fallback(source: str, max_nodes: int) -> tuple[list[str], list[tuple[int, ...]], bool]:
    """What a source that does not parse still shows: tree-sitter's tree, else its longest parsing prefix."""
    if max_nodes < 1:
        return [], [], True
    language = _ts_language()
    if language is not None:
        import tree_sitter

        root = tree_sitter.Parser(language).parse(source.encode("utf-8", "replace")).root_node
        return _walk(root, _ts_children, _ts_tokenizer(), max_nodes)
    try:
        prefix = parsing_prefix(source)
    except (RecursionError, MemoryError):  # as in parse_python: nesting too deep
        prefix = None
    tree = parse_python(prefix) if prefix else None
    tree = tree or ast.Module(body=[], type_ignores=[])
    return _walk(tree, _ast_children, _ast_tokenizer(), max_nodes)


@functools.cache
def _ts_language() -> Any | None:
    """tree-sitter's Python grammar, or None where tree-sitter is not installed."""
    try:
        import tree_sitter
        import tree_sitter_python
    except ImportError:
        return None
    return tree_sitter.Language(tree_sitter_python.language())


def _walk(
    root: Any, children: Callable[[Any], Sequence[Any]], token: Callable[[Any], str], max_nodes: int
) -> tuple[list[str], list[tuple[int, ...]], bool]:
    """Pre-order tokens and paths of the first `max_nodes` nodes, and whether any node was left out."""
    tokens: list[str] = []
    paths: list[tuple[int, ...]] = []
    stack: list[tuple[Any, tuple[int, ...]]] = [(root, ())]
    while stack:
        if len(tokens) == max_nodes:
            return tokens, paths, True
        node, path = stack.pop()
        tokens.append(token(node))
        paths.append(path)
        kids = children(node)
        stack.extend((kids[i], (*path, min(i, MAX_CHILDREN - 1))) for i in range(len(kids) - 1, -1, -1))
    return tokens, paths, False


def is_docstring(node: ast.AST, index: int) -> bool:
    """Whether statement `index` of `node`'s body is its docstring."""
    if not isinstance(node, _SCOPES) or index != 0 or not node.body:
        return False
    first = node.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _ast_children(node: ast.AST) -> list[ast.AST]:
    docstring = getattr(node, "body")[0] if is_docstring(node, 0) else None  # noqa: B009 - only some nodes have one
    return [kid for kid in ast.iter_child_nodes(node) if not isinstance(kid, _SILENT) and kid is not docstring]


def _ast_tokenizer() -> Callable[[ast.AST], str]:
    rename = Renamer()

    def token(node: ast.AST) -> str:
        value = _ast_value(node, rename)
        return type(node).__name__ if value is None else f"{type(node).__name__}:{value}"

    return token


def _ast_value(node: ast.AST, rename: Renamer) -> str | None:
    match node:
        case ast.BinOp(op=op) | ast.UnaryOp(op=op) | ast.BoolOp(op=op):
            return SYMBOLS[type(op)]
        case ast.AugAssign(op=op):
            return SYMBOLS[type(op)] + "="
        case ast.Compare(ops=ops):
            return ",".join(SYMBOLS[type(op)] for op in ops)
        case ast.Name(id=name) | ast.arg(arg=name):
            return rename(name)
        case ast.FunctionDef(name=name) | ast.AsyncFunctionDef(name=name) | ast.ClassDef(name=name):
            return rename(name)
        case ast.Attribute(value=ast.Name(id=module), attr=attr) if module in LIBRARY_MODULES:
            return attr  # math.floor is not math.ceil
        case ast.Attribute(attr=attr):
            return attr if attr in BUILTIN_METHODS else rename(attr)
        case ast.Constant(value=value):
            return constant_bucket(value)
        case ast.keyword(arg=arg):  # the callee's parameter name, kept
            return arg
        case ast.ExceptHandler(name=str(name)) | ast.MatchAs(name=str(name)) | ast.MatchStar(name=str(name)):
            return rename(name)
        case ast.MatchMapping(rest=str(name)):
            return rename(name)
        case ast.alias(name=name, asname=asname):
            return rename.dotted(name) + (f" as {rename(asname)}" if asname else "")
        case ast.ImportFrom(module=str(module)) if module.split(".")[0] in LIBRARY_MODULES:
            return module
    return None


def constant_bucket(value: object) -> str:
    """A constant's token value: small ints, booleans and None as they are, the rest by kind and size."""
    if value is None or value is Ellipsis or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value) if -10 <= value <= 10 else f"int{'+' if value > 0 else '-'}{_magnitude(abs(value))}"
    if isinstance(value, float):
        return _float_bucket(value)
    if isinstance(value, (str, bytes)):
        return type(value).__name__ + _length(len(value))
    return type(value).__name__  # complex


def _magnitude(n: float) -> str:
    return "mid" if n <= 100 else "big" if n <= 1_000_000 else "huge"


def _length(n: int) -> str:
    return "0" if n == 0 else "-short" if n <= 8 else "-long"


def _float_bucket(value: float) -> str:
    if math.isnan(value):
        return "float-nan"
    if value == 0:
        return "float0"
    sign = "+" if value > 0 else "-"
    size = "inf" if math.isinf(value) else "small" if abs(value) < 1 else _magnitude(abs(value))
    return f"float{sign}{size}"


# --- tree-sitter's concrete tree, for code that does not parse ------------------------------------------


def _ts_children(node: Any) -> list[Any]:
    return [kid for kid in node.named_children if kid.type not in _TS_STRING_PARTS]


def _ts_tokenizer() -> Callable[[Any], str]:
    rename = Renamer()

    def token(node: Any) -> str:
        value = _ts_value(node, rename)
        return f"ts:{node.type}" if value is None else f"ts:{node.type}:{value}"

    return token


def _ts_value(node: Any, rename: Renamer) -> str | None:
    if node.is_missing:
        return "missing"
    text = (node.text or b"").decode("utf-8", "replace")
    if node.type == "identifier":
        return text if text in BUILTIN_METHODS else rename(text)
    if node.type in _TS_OPERATORS:
        return ",".join(kid.type for kid in node.children if not kid.is_named and kid.type not in ("(", ")"))
    if node.type == "string":
        return "str" + _length(sum(len(kid.text or b"") for kid in node.children if kid.type == "string_content"))
    if node.type in ("integer", "float"):
        try:
            return constant_bucket(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return None
    return None
