"""Broken and equivalent variants of a function's source, made on its `ast` tree and written by `ast.unparse`.

`mutants(source, seed)` gives at most one mutant per kind (KINDS), each a small change of meaning: a
flipped comparison, an off-by-one constant, swapped arguments, a deleted statement, a wrong operator, a
wrong returned name. The site is the first, in an order the seed shuffles, whose mutant parses and whose
node sequence (`codegen/tree/nodes.py: linearize`, untruncated) differs from the original's: a change
the encoder cannot see would be a negative example it cannot learn from (swapping two names at their
first occurrence is one, since identifiers are renamed by first occurrence). A kind with no such site is
absent. `rewrites(source, seed)` gives changes of form only: a consistent renaming of local variables
and arguments, docstrings removed, and both.

Sources come back as `ast.unparse` writes them: comments and formatting are not kept. Source that does
not parse has no mutants and no rewrites.
"""

from __future__ import annotations

import ast
import copy
import keyword
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from codegen.tree.nodes import BUILTIN_METHODS, KEPT_NAMES, is_docstring, linearize, parse_python

KINDS = ("flip_comparison", "off_by_one", "swap_arguments", "delete_statement", "wrong_operator", "wrong_return")
MAX_TRIES = 32  # sites tried per kind
_UNLIMITED = 1 << 62

_FLIPS = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
          ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}  # fmt: skip
_WRONG = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult, ast.LShift: ast.RShift,
          ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitOr,
          ast.And: ast.Or, ast.Or: ast.And}  # fmt: skip
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

Site = tuple  # (index of the node in ast.walk order, details of the change)


@dataclass(frozen=True, slots=True)
class Mutant:
    kind: str
    source: str


def mutants(source: str, seed: int = 0) -> list[Mutant]:
    """One mutant of each kind that has a site, in KINDS order."""
    tree = parse_python(source)
    if tree is None:
        return []
    original = linearize(ast.unparse(tree), _UNLIMITED)
    found = []
    for kind in KINDS:
        finder, apply = _KINDS[kind]
        sites = finder(list(ast.walk(tree)))
        random.Random(f"{kind}:{seed}").shuffle(sites)
        for site in sites[:MAX_TRIES]:
            fresh = copy.deepcopy(tree)
            apply(list(ast.walk(fresh)), site)
            mutated = ast.unparse(fresh)
            changed = linearize(mutated, _UNLIMITED)
            if changed.parsed and (changed.tokens, changed.paths) != (original.tokens, original.paths):
                found.append(Mutant(kind, mutated))
                break
    return found


# --- sites and changes, one pair per kind ------------------------------------------------------------


def _comparison_sites(nodes: list[ast.AST]) -> list[Site]:
    return [(i, k) for i, node in enumerate(nodes) if isinstance(node, ast.Compare) for k in range(len(node.ops))]


def _flip(nodes: list[ast.AST], site: Site) -> None:
    compare, k = nodes[site[0]], site[1]
    compare.ops[k] = _FLIPS[type(compare.ops[k])]()


def _bound_sites(nodes: list[ast.AST]) -> list[Site]:
    """Int constants in the arithmetic of a range(...) argument or of a subscript's index or slice bounds."""
    index = {id(node): i for i, node in enumerate(nodes)}
    found: set[Site] = set()
    for node in nodes:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            roots = list(node.args)
        elif isinstance(node, ast.Subscript):
            roots = [node.slice]
        else:
            continue
        for constant in _arithmetic_ints(roots):
            found.update({(index[id(constant)], 1), (index[id(constant)], -1)})
    return sorted(found)


def _arithmetic_ints(roots: Sequence[ast.AST]) -> Iterator[ast.Constant]:
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Constant) and type(node.value) is int:
            yield node
        elif isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Slice, ast.Tuple)):
            stack.extend(ast.iter_child_nodes(node))


def _shift(nodes: list[ast.AST], site: Site) -> None:
    nodes[site[0]].value += site[1]


def _argument_sites(nodes: list[ast.AST]) -> list[Site]:
    found = []
    for i, node in enumerate(nodes):
        if not isinstance(node, ast.Call):
            continue
        args = [ast.dump(arg) for arg in node.args]
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            continue
        found += [(i, a, b) for a in range(len(args)) for b in range(a + 1, len(args)) if args[a] != args[b]]
    return found


def _swap(nodes: list[ast.AST], site: Site) -> None:
    args, a, b = nodes[site[0]].args, site[1], site[2]
    args[a], args[b] = args[b], args[a]


def _statement_sites(nodes: list[ast.AST]) -> list[Site]:
    """Statements of a body of two or more, less docstrings, `pass` and a body's closing return."""
    found = []
    for i, node in enumerate(nodes):
        for field, body in ast.iter_fields(node):
            if not isinstance(body, list) or len(body) < 2 or not isinstance(body[0], ast.stmt):
                continue
            for k, statement in enumerate(body):
                closing_return = isinstance(statement, ast.Return) and k == len(body) - 1
                if not (closing_return or isinstance(statement, ast.Pass) or is_docstring(node, k)):
                    found.append((i, field, k))
    return found


def _delete(nodes: list[ast.AST], site: Site) -> None:
    del getattr(nodes[site[0]], site[1])[site[2]]


def _operator_sites(nodes: list[ast.AST]) -> list[Site]:
    return [(i,) for i, node in enumerate(nodes) if isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp))]


def _wrong_operator(nodes: list[ast.AST], site: Site) -> None:
    node = nodes[site[0]]
    node.op = _WRONG[type(node.op)]()


def _return_sites(nodes: list[ast.AST]) -> list[Site]:
    """`return NAME` in a function's own scope, with each other local name of that function."""
    index = {id(node): i for i, node in enumerate(nodes)}
    found = []
    for function in nodes:
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        own = list(_scope_nodes([function.args, *function.body]))
        local = sorted(_bound(own))
        for node in own:
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Name):
                found += [(index[id(node.value)], name) for name in local if name != node.value.id]
    return found


def _return_other(nodes: list[ast.AST], site: Site) -> None:
    nodes[site[0]].id = site[1]


_KINDS: dict[str, tuple[Callable[[list[ast.AST]], list[Site]], Callable[[list[ast.AST], Site], None]]] = {
    "flip_comparison": (_comparison_sites, _flip),
    "off_by_one": (_bound_sites, _shift),
    "swap_arguments": (_argument_sites, _swap),
    "delete_statement": (_statement_sites, _delete),
    "wrong_operator": (_operator_sites, _wrong_operator),
    "wrong_return": (_return_sites, _return_other),
}


# --- rewrites -------------------------------------------------------------------------------------------


def rewrites(source: str, seed: int = 0) -> list[str]:
    """Sources that mean what `source` means: locals renamed, docstrings removed, and both (those that differ)."""
    tree = parse_python(source)
    if tree is None:
        return []
    renamed = _rename_locals(copy.deepcopy(tree), random.Random(seed))
    variants = [renamed, _strip_docstrings(copy.deepcopy(tree)), _strip_docstrings(copy.deepcopy(renamed))]
    original, found = ast.unparse(tree), []
    for variant in map(ast.unparse, variants):
        if variant != original and variant not in found:
            found.append(variant)
    return found


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    """Docstrings removed, but from a body that is nothing else (which would not parse without it)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if is_docstring(node, 0) and body is not None and len(body) > 1:
            del body[0]
    return tree


def _rename_locals(tree: ast.Module, rng: random.Random) -> ast.Module:
    """Every local variable and argument that is safe to rename, renamed to a fresh name everywhere."""
    old = sorted(renameable(tree))
    taken = _identifiers(tree) | KEPT_NAMES | BUILTIN_METHODS | set(keyword.kwlist) | set(keyword.softkwlist)
    mapping: dict[str, str] = {}
    for name in old:
        fresh = name
        while fresh in taken:
            fresh = rng.choice("abcdefghkmnpqrstuwxyz") + str(rng.randrange(1000))
        mapping[name] = fresh
        taken.add(fresh)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]
    return tree


def renameable(tree: ast.Module) -> set[str]:
    """Names bound in functions that can be renamed everywhere without changing what the code does: bound in
    every scope that names them, never named at module or class level, never an attribute, keyword, import,
    function, class, global, nonlocal, exception or pattern name, and neither a builtin nor a library module."""
    bound, unsafe = set(), set()
    for scope, nodes in _scopes(tree):
        here = _bound(nodes)
        named = here | {node.id for node in nodes if isinstance(node, ast.Name)}
        unsafe |= named if scope is tree else named - here
        bound |= set() if scope is tree else here
    return bound - unsafe - (_identifiers(tree, names=False) | KEPT_NAMES)


def _identifiers(tree: ast.Module, names: bool = True) -> set[str]:
    """Every identifier in the tree (names=False: less variable and argument names)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.arg)):
            found |= {node.id if isinstance(node, ast.Name) else node.arg} if names else set()
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.update(node.names)
        elif isinstance(node, ast.alias):
            found.update((node.name + "." + (node.asname or "")).split("."))
        elif isinstance(node, ast.MatchClass):
            found.update(node.kwd_attrs)
        else:
            for field in ("name", "attr", "arg", "rest", "module"):
                value = getattr(node, field, None)
                found.update(value.split(".") if isinstance(value, str) else ())
    return found


# --- scopes ---------------------------------------------------------------------------------------------


def _scope_nodes(roots: Sequence[ast.AST]) -> Iterator[ast.AST]:
    """The nodes of one scope: nested functions and lambdas are left out (but for their decorators and
    defaults, evaluated here); comprehensions and class bodies count as part of it."""
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _FUNCTIONS):
            here = [*getattr(node, "decorator_list", []), *node.args.defaults, *node.args.kw_defaults]
            stack.extend(reversed([child for child in here if child is not None]))
        else:
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST, list[ast.AST]]]:
    """(scope, its nodes) for the module and every function and lambda in it."""
    yield tree, list(_scope_nodes(tree.body))
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTIONS):
            body = node.body if isinstance(node.body, list) else [node.body]
            yield node, list(_scope_nodes([node.args, *body]))


def _bound(nodes: list[ast.AST]) -> set[str]:
    """Names these nodes bind: arguments, and names stored or deleted."""
    names = {node.arg for node in nodes if isinstance(node, ast.arg)}
    return names | {node.id for node in nodes if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
