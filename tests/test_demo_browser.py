"""The web demo in a real browser: Playwright drives a headless Chromium (Debian's ``chromium``, which .ci/run
installs) against the demo served on 127.0.0.1. Runs wherever that Chromium runs; skipped off Linux only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from demo_helpers import served, tiny_pipeline
from playwright.sync_api import expect, sync_playwright

from negguide.demo.app import build_demo
from negguide.demo.browser import LOADED, VIEWPORT, generate_in_page, launch_chromium, open_demo

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the Chromium of Debian's package"),
]


def test_generate_perpneg_then_an_example_in_the_browser() -> None:
    demo = build_demo(pipeline=tiny_pipeline())
    with served(demo) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_demo(page, url)
            captions = generate_in_page(page, "a blue square", ["Perp-Neg"], steps=2)
            assert captions == ["plain prompt", "standard negative", "Perp-Neg"]
            page.get_by_text("NegToMe steers away from a reference image").click()
            expect(page.locator("#prompt textarea")).to_have_value("a red square")
            expect(page.locator("#gallery .caption-label").nth(2)).to_have_text("NegToMe", timeout=120_000)
            page.wait_for_function(LOADED, timeout=120_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-browser.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo-browser.png").stat().st_size > 0
