"""The web demo in a real browser: Playwright drives a headless Chromium (Debian's ``chromium``, which .ci/run
installs) against the demo served on 127.0.0.1. Runs wherever that Chromium runs; skipped off Linux only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from demo_helpers import served, tiny_pipeline
from playwright.sync_api import sync_playwright

from negguide.demo.app import build_demo
from negguide.demo.browser import VIEWPORT, generate_in_page, launch_chromium, open_demo

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the Chromium of Debian's package"),
]


def test_generate_perpneg_in_the_browser() -> None:
    demo = build_demo(pipeline=tiny_pipeline())
    with served(demo) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_demo(page, url)
            captions = generate_in_page(page, "a blue square", ["Perp-Neg"], steps=2)
            assert captions == ["plain prompt", "standard negative", "Perp-Neg"]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-browser.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo-browser.png").stat().st_size > 0
