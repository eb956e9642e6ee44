"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
log in with a key, start a run, watch it stream, approve its pending call, see it finish;
open a long run lazily, fork it from an event, and see costs per agent. Screenshots go
to $AUTONOMIC_TEST_ARTIFACTS (or the test's temporary directory)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

CHROMIUM = os.environ.get("AUTONOMIC_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield await browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            await browser.close()


def _artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("AUTONOMIC_TEST_ARTIFACTS", tmp_path)) / "dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


async def _log_in(page: Page, url: str, key: str) -> None:
    await page.goto(url + "/")
    await page.fill("#key", key)
    await page.click("#login-form button")
    await expect(page.locator("#who")).to_have_text("test @ acme")


async def test_start_watch_approve_and_finish_a_run(service, page: Page, tmp_path: Path) -> None:
    shots = _artifacts(tmp_path)
    await _log_in(page, service.url, service.key())
    await page.screenshot(path=shots / "1-runs.png")
    await page.click("a[href='#/new']")
    await page.select_option("#new-agent", "payer")
    await page.fill("#new-goal", "pay acme")
    await page.click("#new-form button")
    approval = page.locator("#timeline li[data-type='ApprovalRequested']")
    await expect(approval).to_have_count(1)  # streamed live into the timeline
    await expect(approval).to_contain_text('approval needed: pay(account="acme", amount=3)')
    card = page.locator("#run-approvals .approval")
    await expect(card).to_contain_text("tool pay always requires approval")
    await page.screenshot(path=shots / "2-waiting.png")
    await card.locator("button", has_text="Approve").click()
    await expect(page.locator("#timeline li[data-type='RunCompleted']")).to_contain_text(
        "completed: paid"
    )
    await expect(page.locator("#run-summary")).to_have_attribute("data-status", "completed")
    seqs = [
        int(s)
        for s in await page.locator("#timeline li").evaluate_all(
            "items => items.map(li => li.dataset.seq)"
        )
    ]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice
    granted = page.locator("#timeline li[data-type='ApprovalGranted']")
    await expect(granted).to_contain_text("approved by key:test(")
    await page.screenshot(path=shots / "3-completed.png", full_page=True)
    assert (shots / "3-completed.png").stat().st_size > 0


async def test_a_long_run_loads_lazily_forks_and_counts_costs(
    service, page: Page, tmp_path: Path
) -> None:
    key = service.key()
    async with service.client(key) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "chatty", "goal": "go"})).json()["run_id"]
        total = (await c.get(f"/v1/runs/{run_id}/wait")).json()["events"]
    assert total > 400
    await _log_in(page, service.url, key)
    await page.click(f"tr[data-run-id='{run_id}']")
    items = page.locator("#timeline li")
    await expect(items).to_have_count(200)  # one page until the end of the list is seen
    while await items.count() < total:
        await page.locator("#timeline-end").scroll_into_view_if_needed()
        await page.wait_for_timeout(50)
    await expect(items.last).to_have_attribute("data-type", "RunCompleted")
    await (
        page.locator("#timeline li[data-type='ModelCalled']")
        .first.locator("button", has_text="context")
        .click()
    )
    await expect(page.locator("#context")).to_contain_text("[user]")
    await page.screenshot(path=_artifacts(tmp_path) / "4-long-run.png")
    await page.locator("#timeline li[data-seq='5'] button", has_text="fork here").click()
    await expect(page.locator("#run-summary")).to_contain_text(f"{run_id} at 5")
    await page.click("a[href='#/costs']")
    await expect(page.locator("#cost-agents tr")).to_have_count(1)
    await expect(page.locator("#cost-agents")).to_contain_text("chatty")


async def test_the_api_docs_render_with_no_internet(service, page: Page) -> None:
    """Swagger UI's files come from this server: a request to any other host fails."""
    elsewhere: list[str] = []

    async def loopback_only(route) -> None:  # type: ignore[no-untyped-def]
        host = route.request.url.split("/")[2].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost", "[::1]"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await page.route("**/*", loopback_only)
    await page.goto(service.url + "/docs")
    await expect(page.locator(".opblock-summary-path", has_text="/v1/runs").first).to_be_visible()
    assert elsewhere == []
