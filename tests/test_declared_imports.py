"""A spec's declared imports and test setup lines on their way to the model, the module and the candidates'
tests (pure: no service runs)."""

from __future__ import annotations

import uuid

from codegen.declared_imports import with_imports
from codegen.prompts import build_messages
from models.builtin_templates import PYTHON_FUNCTION, PYTHON_FUNCTION_1_1
from models.generation import GenerationInput, SpecSnapshot
from models.generation_steps import visible_tests
from models.spec_view import spec_view

VALUES = {
    "function_name": "tomorrow",
    "description": "The day after d.",
    "imports": ["import datetime"],
    "setup": ["import datetime", "FIRST = datetime.date(2020, 1, 1)"],
    "tests": ["assert tomorrow(FIRST) == datetime.date(2020, 1, 2)"],
}


def test_a_missing_declared_import_is_added_at_the_top_and_a_present_one_is_not():
    body = "def tomorrow(d):\n    return d + datetime.timedelta(days=1)"
    assert with_imports(body, ["import datetime"]) == "import datetime\n" + body
    assert with_imports("import os, datetime\n" + body, ["import datetime"]) == "import os, datetime\n" + body
    assert with_imports(body, []) == body
    # after the docstring and the __future__ imports; a declared __future__ line goes first
    code = '"""Dates."""\nfrom __future__ import annotations\n\nx = 1\n'
    assert with_imports(code, ["from typing import Optional", "from __future__ import division"]) == (
        '"""Dates."""\nfrom __future__ import division\nfrom __future__ import annotations\n'
        "from typing import Optional\n\nx = 1\n"
    )
    # `from x import a` is not `import x`; code that does not parse still gets the line; a non-import is ignored
    assert with_imports("from datetime import date\n", ["import datetime"]).startswith("import datetime\n")
    assert with_imports("def f(:", ["import datetime"]) == "import datetime\ndef f(:"
    assert with_imports("x = 1", ["x = 2", "print('hi')"]) == "x = 1"


def test_the_prompt_names_the_imports_and_the_setup():
    [_, user] = build_messages(spec_view(PYTHON_FUNCTION_1_1, VALUES))
    assert "The code must start with these imports:\nimport datetime" in user.content
    setup = "The tests run after this setup (it is not part of the code):\nimport datetime\nFIRST = "
    assert setup in user.content
    assert user.content.index("FIRST = datetime") < user.content.index("assert tomorrow(FIRST)")


def _job(schema: dict, values: dict) -> GenerationInput:
    spec = SpecSnapshot(
        template_id=uuid.uuid4(),
        template_name="python-function",
        template_version="1.1.0",
        schema=schema,
        values=values,
        values_hash="h",
        instance_id=uuid.uuid4(),
    )
    ids = {"generation_id": uuid.uuid4(), "tenant_id": uuid.uuid4(), "user_id": uuid.uuid4()}
    return GenerationInput(**ids, spec=spec, model="openai_api", techniques=[], max_new_tokens=64, n=1, temperature=0.0)


def test_the_candidates_visible_tests_carry_the_setup_and_old_specs_are_unchanged():
    assert visible_tests(_job(PYTHON_FUNCTION_1_1, VALUES)) == [
        "import datetime\nFIRST = datetime.date(2020, 1, 1)\nassert tomorrow(FIRST) == datetime.date(2020, 1, 2)"
    ]
    old = {"function_name": "add", "description": "d", "tests": ["assert add(1, 2) == 3"]}
    assert visible_tests(_job(PYTHON_FUNCTION, old)) == ["assert add(1, 2) == 3"]
