"""The README stays true: every setting is in its configuration table, every route in its examples."""

from __future__ import annotations

import re
from pathlib import Path

from api.app import create_app
from models.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_documented():
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.M))
    assert rows == {name.upper() for name in Settings.model_fields}


def test_every_route_has_a_curl_example():
    app = create_app(Settings(_env_file=None, jwt_secret="x", database_url="postgresql://x@127.0.0.1:1/x"))
    paths = [p for p in app.openapi()["paths"] if p.startswith(("/api", "/auth", "/health")) and "{path" not in p]
    assert {"/api/projects", "/api/generate", "/auth/token"} <= set(paths)  # the check sees the routes
    for path in paths:
        pattern = re.sub(r"\{[a-z_]+\}", r"\\$[A-Z_]+", re.escape(path).replace(r"\{", "{").replace(r"\}", "}"))
        assert re.search(r"\$B" + pattern + r"(?![/\w])", README), f"no curl example for {path}"
