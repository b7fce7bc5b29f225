"""The web demo in a real browser: Playwright drives a headless Chromium (Debian's ``chromium``, which .ci/run
installs) against the demo served on 127.0.0.1. Runs wherever that Chromium runs; skipped off Linux only."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from demo_helpers import served, tiny_pipeline
from playwright.sync_api import Page, expect, sync_playwright

from negguide.demo.app import build_demo
from negguide.demo.browser import VIEWPORT, generate_in_page, hidden_images, launch_chromium, open_demo, run_example
from negguide.demo.changes import changed_settings
from negguide.demo.comparison import MODULES, title
from negguide.demo.examples import Example, examples
from negguide.demo.form import FORM_DEFAULTS
from negguide.demo.settings import module_fields

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
FIELDS = [field for name in MODULES for field in module_fields(name)]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the Chromium of Debian's package"),
]


def expected_captions(example: Example) -> list[str]:
    values = {**FORM_DEFAULTS, **example.values}
    rows = ["plain prompt", "standard negative", *map(title, values["methods"])]
    if values["images"] == 1:
        return rows
    return [f"{row}, seed {seed}" for row in rows for seed in range(values["seed"], values["seed"] + values["images"])]


def assert_every_image_shown(page: Page) -> None:
    hidden, height = hidden_images(page)
    assert hidden == [], f"images cut off inside the gallery: {hidden}"
    assert height <= VIEWPORT["height"], f"the gallery is {height} px tall, more than the window"


def assert_changes_shown(page: Page, example: Example) -> None:
    defaults = {field.key: field.default for field in FIELDS}
    changes = page.locator("#changes")
    for change in changed_settings({**defaults, **example.values}, defaults, FIELDS):
        expect(changes).to_contain_text(change)
    if example.note:
        expect(changes).to_contain_text(example.note[:60])
    reference = page.locator("#reference-used img")
    if example.values.get("reference"):
        expect(reference).to_be_visible()
    else:
        expect(reference).to_have_count(0)


def test_the_first_screen_every_example_and_typed_values_in_the_browser() -> None:
    demo = build_demo(pipeline=tiny_pipeline())
    with served(demo) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_demo(page, url)
            first, *others = examples()
            expect(page.locator("#prompt textarea")).to_have_value(first.values["prompt"])
            expected = expected_captions(first)
            assert run_example(page, first, expected) == expected
            assert_every_image_shown(page)
            assert_changes_shown(page, first)
            for example in others:
                expected = expected_captions(example)
                assert run_example(page, example, expected, timeout_s=300) == expected, example.title
                expect(page.locator("#prompt textarea")).to_have_value(example.values["prompt"])
                assert_every_image_shown(page)
                assert_changes_shown(page, example)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-browser.png"), full_page=True)
            page.locator("#images input[type=number]").fill("1")
            captions = generate_in_page(page, "a blue square", ["Perp-Neg"], steps=2)
            assert captions == ["plain prompt", "standard negative", "Perp-Neg"]
            box = page.locator("#steps input[type=number]")
            box.fill("0")
            box.press("Tab")
            page.locator("#generate").click()
            expect(page.get_by_text(re.compile(r"Steps. must lie between 1 and 100, got 0"))).to_be_visible()
            expect(box).to_have_value("0")
        finally:
            browser.close()
    assert (ARTIFACTS / "demo-browser.png").stat().st_size > 0
