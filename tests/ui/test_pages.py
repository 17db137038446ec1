"""The web UI end to end: real Chromium, the real query service, traces sent through real OTLP.

Every test saves a screenshot of the page it checked to tests/ui/artifacts/ (git-ignored).
"""
from __future__ import annotations

import re
import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tracehouse.tests.conftest import wait_for

from . import dataset
from .conftest import screenshot


@pytest.fixture(scope="module")
def data(server):
    sent = dataset.send(server.grpc_endpoint)
    server.wait_stored()
    return sent


def row_names(page) -> list[str]:
    return page.locator("#traces-table tbody tr td:nth-child(2)").all_inner_texts()


def open_traces(page, base, project, **query):
    page.goto(f"{base}/?project={project}" + "".join(f"&{k}={v}" for k, v in query.items()))
    page.wait_for_selector("#traces-table tbody tr")


def test_traces_page_searches_by_tag_and_the_url_holds_the_query(page, query_api, data):
    open_traces(page, query_api.url, data.project)
    assert row_names(page) == ["xss_probe", "billing_followup", "password_reset"]   # newest first

    page.fill("input[name=filter]", "tags.customer_tier = 'premium'")
    page.press("input[name=filter]", "Enter")
    page.wait_for_function("document.querySelectorAll('#traces-table tbody tr').length === 2")
    assert row_names(page) == ["xss_probe", "password_reset"]
    first = page.locator("#traces-table tbody tr").nth(1)
    assert first.locator("td").nth(2).inner_text() == "OK"
    assert first.locator("td").nth(3).inner_text() == "2.40 s"
    assert first.locator("td").nth(4).inner_text() == "5"
    assert first.locator("td").nth(5).inner_text() == "1030 / 83"
    assert "customer_tier premium" in first.locator("td").nth(7).inner_text()
    assert first.locator("td").nth(8).inner_text() == data.session
    assert first.locator("td").nth(9).inner_text() == "How do I reset my password?"
    query = parse_qs(urlparse(page.url).query)
    assert query["q"] == ["tags.customer_tier = 'premium'"] and query["project"] == [data.project]

    # The URL is the search: opened fresh (as a shared link would be), it shows the same rows.
    page.goto(page.url)
    page.wait_for_function("document.querySelectorAll('#traces-table tbody tr').length === 2")
    assert row_names(page) == ["xss_probe", "password_reset"]
    assert page.input_value("input[name=filter]") == "tags.customer_tier = 'premium'"

    # Sorting is the server's: by duration, longest first.
    page.click("th[data-col=duration]")
    page.wait_for_function("new URL(location).searchParams.get('sort') === 'execution_time_ms:desc'")
    page.wait_for_function("document.querySelector('#traces-table tbody tr td:nth-child(2)').innerText === 'password_reset'")
    screenshot(page, "traces")


def test_traces_page_pages_through_results(page, query_api, data):
    page.goto(f"{query_api.url}/?project={data.project}&size=50")
    page.wait_for_selector("#traces-table tbody tr")
    assert page.locator(".pager button", has_text="Next").is_disabled()   # 3 traces fit one page
    assert page.locator(".pager", has_text="rows 1–3").count() == 1


def test_filter_box_completes_fields_and_seen_tag_keys(page, query_api, data):
    open_traces(page, query_api.url, data.project)
    box = page.locator("input[name=filter]")
    box.click()
    box.type("tags.cus")
    suggestion = page.locator(".suggestions li", has_text="tags.customer_tier")
    suggestion.wait_for()
    box.press("Tab")
    assert box.input_value() == "tags.customer_tier "
    box.type("= ")
    box.press("End")
    box.type("'premium' AND trace.st")
    page.locator(".suggestions li", has_text="trace.status").wait_for()
    box.press("Tab")
    box.type("= ")
    page.locator(".suggestions li", has_text="'ERROR'").wait_for()
    screenshot(page, "traces-completion")


def test_malformed_filter_shows_the_api_error_not_a_broken_page(page, query_api, data):
    open_traces(page, query_api.url, data.project)
    page.fill("input[name=filter]", "tgs.x = 'y'")
    page.click("button:has-text('Search')")
    error = page.locator("#search-error .error-box")
    error.wait_for()
    assert "unknown field 'tgs.x' at column 1; did you mean 'tags.x'?" in error.inner_text()
    assert error.locator("pre").inner_text() == "tgs.x = 'y'\n^"
    screenshot(page, "traces-filter-error")
    # Still a working page: fix the filter and the rows come back.
    page.fill("input[name=filter]", "tags.customer_tier = 'standard'")
    page.press("input[name=filter]", "Enter")
    page.wait_for_function("document.querySelectorAll('#traces-table tbody tr').length === 1")
    assert row_names(page) == ["billing_followup"]
    assert page.locator("#search-error .error-box").count() == 0


def test_trace_view_shows_the_tree_the_timeline_and_a_chat(page, query_api, data):
    page.goto(f"{query_api.url}/traces/{data.ids['password_reset']}")
    rows = page.locator("#waterfall-rows .wf-row")
    rows.first.wait_for()
    assert page.inner_text("#trace-name") == "password_reset"
    assert rows.locator(".label").all_inner_texts() == [
        "password_reset", "retrieve docs", "chat gpt-4o", "execute_tool lookup_account", "chat gpt-4o-mini"]
    assert [rows.nth(i).get_attribute("aria-level") for i in range(5)] == ["1", "2", "2", "2", "2"]
    # Bars to scale: the root spans the whole 2.4 s; `chat gpt-4o` runs 0.2–1.1 s.
    widths = page.eval_on_selector_all("#waterfall-rows .wf-bar", "bars => bars.map(b => [parseFloat(b.style.left), parseFloat(b.style.width)])")
    assert widths[0] == pytest.approx([0, 100], abs=0.01)
    assert widths[2] == pytest.approx([200 / 2400 * 100, 900 / 2400 * 100], abs=0.01)

    rows.filter(has_text="chat gpt-4o-mini").click()
    chat = page.locator("#span-inputs .chat")
    chat.wait_for()
    assert page.inner_text("#span-name") == "chat gpt-4o-mini"
    assert chat.locator(".msg.role-user .text").inner_text() == "How do I reset my password?"
    assert "tool result (call_1)" in chat.locator(".msg.role-tool").inner_text()
    assert page.locator("#span-outputs .msg.role-assistant .text").inner_text() == \
        "Open Settings → Security and choose Reset password."
    detail = page.inner_text("#span-detail")
    assert "gpt-4o-mini" in detail and "610 in · 48 out" in detail
    assert "span=" in page.url  # the selected span is part of the link

    rows.filter(has_text="chat gpt-4o").first.click()
    tool_call = page.locator("#span-outputs .tool-call")
    tool_call.wait_for()
    assert "lookup_account" in tool_call.inner_text()

    rows.filter(has_text="retrieve docs").click()
    docs = page.locator("#span-outputs .doc")
    docs.first.wait_for()
    assert docs.count() == 2
    assert "kb-17" in docs.nth(0).inner_text() and "score 0.910" in docs.nth(0).inner_text()
    screenshot(page, "trace")

    page.click("#copy-trace-id")
    page.locator(".copy-ok", has_text="Copied").wait_for()


def test_trace_view_marks_errors_and_shows_exceptions(page, query_api, data):
    page.goto(f"{query_api.url}/traces/{data.ids['billing_followup']}")
    page.locator("#waterfall-rows .wf-row").first.wait_for()
    assert page.locator("#waterfall-rows .wf-row.error").count() == 2
    assert page.locator("#waterfall-rows .wf-bar.error").count() == 2
    exception = page.locator("#span-detail .exception")
    exception.wait_for()
    assert "RuntimeError" in exception.inner_text() and "billing service unavailable" in exception.inner_text()
    screenshot(page, "trace-error")


def test_untrusted_content_renders_as_text(page, query_api, data):
    open_traces(page, query_api.url, data.project)
    page.goto(f"{query_api.url}/traces/{data.ids['xss_probe']}")
    page.locator("#waterfall-rows .wf-row").first.wait_for()
    page.locator("#waterfall-rows .wf-row", has_text="chat gpt-4o").click()
    page.locator("#span-inputs .msg.role-user").wait_for()
    assert page.locator("#span-inputs .msg.role-user .text").inner_text() == dataset.XSS
    assert dataset.XSS in page.inner_text("body")            # shown, as text
    assert page.locator("#page img").count() == 0             # never parsed as HTML
    assert page.evaluate("window.__xss") is None
    screenshot(page, "trace-untrusted")


def test_feedback_is_stored_through_the_api(page, query_api, data):
    trace_id = data.ids["password_reset"]
    page.goto(f"{query_api.url}/traces/{trace_id}")
    page.locator("#assessments").wait_for()
    page.fill("#assessments textarea[name=comment]", "clear and correct")
    page.click("button[aria-label='Thumbs up']")
    page.locator("#assessments .copy-ok", has_text="Saved").wait_for()
    page.locator("#assessment-list .assessment", has_text="user_feedback").wait_for()
    page.fill("#assessments input[name=feedback-name]", "helpfulness")
    page.fill("#assessments input[name=score]", "4")
    page.click("button:has-text('Save score')")
    page.locator("#assessment-list .assessment", has_text="helpfulness").wait_for()
    screenshot(page, "trace-feedback")

    stored = httpx.get(f"{query_api.url}/api/v1/traces/{trace_id}").json()["assessments"]
    by_name = {a["name"]: a for a in stored}
    thumbs, score = by_name["user_feedback"], by_name["helpfulness"]
    assert (thumbs["value"], thumbs["kind"], thumbs["source_type"], thumbs["rationale"]) == (
        True, "feedback", "HUMAN", "clear and correct")
    assert score["value"] == 4


def test_sessions_page_reads_like_a_chat(page, query_api, data):
    page.goto(f"{query_api.url}/sessions?project={data.project}")
    page.locator("#sessions-table a", has_text=data.session).click()
    page.locator("#conversation .turn").first.wait_for()
    assert page.locator("#conversation .bubble.user").all_inner_texts() == [
        "How do I reset my password?", "And why was I charged twice?"]
    assert page.locator("#conversation .bubble.assistant").nth(0).inner_text() == \
        "Open Settings → Security and choose Reset password."
    assert "ERROR" in page.locator("#conversation .turn").nth(1).inner_text()
    screenshot(page, "session")


def _finished_job(base: str, project: str, scorers: list, name: str) -> str:
    response = httpx.post(f"{base}/api/v1/evaluations", json={"projects": [project], "scorers": scorers, "name": name})
    if response.status_code == 404:
        pytest.skip("the evaluation API (issue #5) is not in this build")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    wait_for(lambda: httpx.get(f"{base}/api/v1/evaluations/{job_id}").json()["status"] in ("succeeded", "failed"),
             timeout=60, interval=0.2, what="the evaluation job to finish")
    return job_id


def test_evaluations_page_shows_a_finished_job_and_compares_two(page, query_api, data):
    strict = _finished_job(query_api.url, data.project, ["json_valid", {"type": "latency_budget", "max_ms": 1000}],
                           f"strict-{uuid.uuid4().hex[:4]}")
    lenient = _finished_job(query_api.url, data.project, ["json_valid", {"type": "latency_budget", "max_ms": 5000}],
                            f"lenient-{uuid.uuid4().hex[:4]}")
    page.goto(f"{query_api.url}/evaluations")
    row = page.locator(f"#jobs-table tr[data-job-id='{strict}']")
    row.wait_for()
    assert "succeeded" in row.inner_text() and "6 / 6" in row.inner_text()   # 3 traces × 2 scorers
    assert "latency_budget" in row.inner_text()
    screenshot(page, "evaluations")

    row.locator("a").first.click()
    page.locator("#metrics-table").wait_for()
    assert "latency_budget mean" in page.inner_text("#metrics-table")
    page.locator("#results-table tbody tr").first.wait_for()
    assert page.locator("#results-table tbody tr").count() == 6          # 3 traces × 2 scorers
    page.check("input[name=failing]")
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length < 6")
    failing = page.locator("#results-table tbody tr").all_inner_texts()
    assert failing and all("fail" in r or "error" in r.lower() for r in failing)
    assert any(data.ids["password_reset"][:12] in r and "latency_budget" in r for r in failing)  # 2.4 s > 1 s
    assert "failing=1" in page.url
    screenshot(page, "evaluation-job")

    page.goto(f"{query_api.url}/evaluations")
    page.locator(f"#jobs-table tr[data-job-id='{strict}'] input[type=checkbox]").check()
    page.locator(f"#jobs-table tr[data-job-id='{lenient}'] input[type=checkbox]").check()
    page.click("#compare-jobs")
    metric = page.locator("#compare-table tr[data-metric='latency_budget/v1/mean']")
    metric.wait_for()
    cells = metric.locator("td").all_inner_texts()
    assert float(cells[1]) < float(cells[2]) == 1.0 and cells[3].startswith("+")
    screenshot(page, "evaluation-compare")


def test_overview_charts_load(page, query_api, data):
    page.goto(f"{query_api.url}/overview?project={data.project}&range=6h")
    page.wait_for_function("document.querySelectorAll('#charts .chart canvas').length === 9")
    tiles = page.inner_text("#tiles")
    assert re.search(r"TRACES\s+3", tiles, re.I) and re.search(r"ERROR RATE\s+33\.3%", tiles, re.I)
    legend = page.inner_text("[data-chart='LLM calls by model']")
    assert "gpt-4o" in legend and "gpt-4o-mini" in legend
    # The overview follows the traces page: its nav link carries the same range and project.
    page.click("#nav a[data-nav=traces]")
    page.wait_for_selector("#traces-table tbody tr")
    assert parse_qs(urlparse(page.url).query) == {"project": [data.project], "range": ["6h"]}
    page.click("#nav a[data-nav=overview]")
    page.wait_for_function("document.querySelectorAll('#charts .chart canvas').length === 9")
    screenshot(page, "overview")


def test_new_traces_appear_while_the_page_is_open(page, query_api, server):
    project = f"ui_live_{uuid.uuid4().hex[:6]}"
    page.goto(f"{query_api.url}/?project={project}")
    page.locator(".empty", has_text="No traces").wait_for()
    page.evaluate("window.__marker = 1")            # gone if the page reloads
    dataset.send(server.grpc_endpoint, project=project, start_ns=time.time_ns() - 10 * 60_000_000_000)
    server.wait_stored()
    page.wait_for_function("document.querySelectorAll('#traces-table tbody tr').length === 3", timeout=20_000)
    assert page.evaluate("window.__marker") == 1
    assert page.locator("#traces-table tr.row-new").count() == 3
