"""No technique is named by a string outside its own module and the registry (models/techniques/): the
rest of the code reads a technique's name, settings and behaviour from its module, so that adding one is
a module and a registry line.

Every Python file of the product, the benchmarks and the tests is parsed; a string constant that is
exactly a technique's name fails the test (prose that mentions one, in a docstring or a message, is not a
constant equal to it)."""

from __future__ import annotations

import ast
from pathlib import Path

from models.techniques import MODULES, REGISTRY

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (
    "api",
    "activities",
    "bench",
    "codegen",
    "infra",
    "knowledge",
    "models",
    "sandbox",
    "store",
    "tests",
    "workers",
    "workflows",
)
OWN = ROOT / "models" / "techniques"


def _files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if OWN not in p.parents)


def _named(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in REGISTRY
    ]


def test_no_technique_is_named_by_a_string_outside_its_module():
    found = [hit for path in _files() for hit in _named(path)]
    assert not found, "use the technique module's TECHNIQUE.name:\n" + "\n".join(found)


def test_the_check_sees_a_name_written_as_a_string(tmp_path):
    name = next(iter(REGISTRY))
    sample = tmp_path / "sample.py"
    sample.write_text(f"requested = [{name!r}]\nprose = 'uses {name} in a sentence'\n")
    assert [hit.split(": ", 1)[1] for hit in _named(sample, tmp_path)] == [repr(name)]


def test_the_registry_lists_one_module_per_technique():
    assert [m.TECHNIQUE.name for m in MODULES] == list(REGISTRY)
    for module in MODULES:
        assert module.__name__.rsplit(".", 1)[1] == module.TECHNIQUE.name  # the module is named after it
