"""With API keys configured, the page asks for a key, keeps it for the tab, and shows only the
key's project."""
from __future__ import annotations

import pytest

from tracehouse.tests.conftest import RunningQueryService, collector_settings

from . import dataset
from .conftest import screenshot


@pytest.fixture(scope="module")
def two_projects(server):
    a = dataset.send(server.grpc_endpoint)
    b = dataset.send(server.grpc_endpoint)
    server.wait_stored()
    return a, b


@pytest.fixture(scope="module")
def keyed_service(store, two_projects, tmp_path_factory):
    a, _ = two_projects
    settings = collector_settings(tmp_path_factory.mktemp("ui-auth"), store.dsn, api_keys=f"ui-key-project-a={a.project}")
    service = RunningQueryService(settings, store)
    yield service
    service.stop()


def test_the_page_asks_for_a_key_and_shows_only_its_project(page, keyed_service, two_projects):
    a, b = two_projects
    page.goto(f"{keyed_service.url}/?range=24h")
    dialog = page.locator("#auth-dialog")
    dialog.wait_for()
    assert "requires an API key" in dialog.inner_text()
    screenshot(page, "auth-prompt")

    page.fill("#auth-dialog input[name=key]", "not-a-valid-key")
    page.press("#auth-dialog input[name=key]", "Enter")
    page.locator("#auth-dialog", has_text="did not accept").wait_for()
    page.fill("#auth-dialog input[name=key]", "ui-key-project-a")
    page.press("#auth-dialog input[name=key]", "Enter")
    page.wait_for_selector("#traces-table tbody tr")
    projects = page.locator("select[name=project] option").all_inner_texts()
    assert projects == ["All projects", a.project]
    ids = set(page.eval_on_selector_all("#traces-table tbody tr", "rows => rows.map(r => r.dataset.traceId)"))
    assert set(a.ids.values()) <= ids and not ids & set(b.ids.values())

    # Another project's trace by its link: not found, never shown.
    page.goto(f"{keyed_service.url}/traces/{b.ids['password_reset']}")
    page.locator(".error-box", has_text="not found").wait_for()
    assert page.locator("#auth-dialog").count() == 0          # the key lasts for the tab
    page.click("#auth-status button:has-text('Sign out')")
    page.locator("#auth-dialog").wait_for()
