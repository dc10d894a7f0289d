"""The web page end to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): type a query,
see the expected thumbnail first, click it, see its neighbours; the status page lists the skipped files."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
if not os.path.exists(CHROMIUM):
    print(f"\nskipping the browser test: {CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


def _api(live: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{live}{path}", timeout=30) as response:
        return json.load(response)


def test_search_click_similar_and_status_in_a_real_browser(live: str) -> None:
    expected = _api(live, "/api/search?q=a+red+star&k=48")["results"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"http://{live}/")
            page.fill("#q", "a red star")
            page.press("#q", "Enter")
            page.wait_for_selector("#grid[data-query^='for'] .card")
            cards = page.locator(".card")
            assert cards.count() == len(expected)
            first = cards.first
            assert first.get_attribute("data-path") == expected[0]["path"]
            assert first.locator("img").evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
            assert expected[0]["caption"] in first.inner_text()

            first.locator("img").click()
            page.wait_for_selector("#grid[data-query^='similar'] .card")
            neighbours = _api(live, f"/api/similar/{expected[0]['id']}?k=48")["results"]
            shown = page.locator(".card").evaluate_all("cards => cards.map(c => Number(c.dataset.id))")
            assert shown == [n["id"] for n in neighbours] and shown[0] == expected[0]["id"]

            page.goto(f"http://{live}/status")
            page.wait_for_selector("#skipped")
            text = page.inner_text("#status")
            assert "50" in text and "broken_00_empty.jpg" in text and "outside_root" in text
        finally:
            browser.close()
