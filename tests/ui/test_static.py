"""How the query service serves the UI (no browser needed): page URLs get the app, API paths
keep their own answers, and the vendored libraries are byte for byte what npm published."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from tracehouse.query import ui

VENDOR = ui.STATIC_DIR / "vendor"


def test_page_urls_get_the_app_with_a_strict_content_security_policy(query_api):
    for path in ["/", "/traces/0123456789abcdef0123456789abcdef", "/sessions/s-1", "/evaluations/compare", "/overview"]:
        response = httpx.get(query_api.url + path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html"), path
        assert '<script type="module" src="/js/main.js">' in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
    script = httpx.get(query_api.url + "/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_api_paths_keep_their_own_answers(query_api):
    assert httpx.get(query_api.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(query_api.url + "/openapi.json").json()["info"]["title"] == "tracehouse"
    assert "swagger" in httpx.get(query_api.url + "/docs").text.lower()
    assert httpx.get(query_api.url + "/api/services").json()["data"] is not None           # Jaeger
    assert httpx.get(query_api.url + "/tempo/api/echo").text == "echo"                       # Tempo
    for path in ["/api/v1/no-such-endpoint", "/tempo/nothing", "/js/missing.js"]:
        response = httpx.get(query_api.url + path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/json", path
    assert httpx.post(query_api.url + "/traces/x").status_code == 404


def test_ui_endpoints_list_projects_and_completions(query_api):
    fields = httpx.get(query_api.url + "/api/v1/filter/completions").json()
    names = {f["name"]: f for f in fields["fields"]}
    assert names["tags"]["keyed"] and not names["trace.status"]["keyed"]
    assert names["trace.status"]["values"] == ["OK", "ERROR", "IN_PROGRESS"]
    assert set(fields["keys"]) == {"tags", "metadata", "span.attributes", "resource", "feedback", "expectation"}
    assert isinstance(httpx.get(query_api.url + "/api/v1/projects").json()["projects"], list)


def test_vendored_files_match_the_manifest():
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    listed = set()
    for package in manifest["packages"]:
        assert package["version"] and package["integrity"].startswith("sha512-")
        for name, entry in package["files"].items():
            digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
            assert digest == entry["sha256"], f"{name} differs from {package['package']}@{package['version']}"
            listed.add(Path(name))
    on_disk = {p.relative_to(VENDOR) for p in VENDOR.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert on_disk == listed, "every vendored file is listed in the manifest, with its package's LICENSE"
