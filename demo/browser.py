"""Driving the demo in a headless Chromium with Playwright: for the browser test and the README screenshot.

Playwright's own browser download needs the internet, so a system Chromium is used (Debian's ``chromium``
package, ``/usr/bin/chromium``; ``NEGGUIDE_CHROMIUM`` names another executable).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect

from negguide.demo.examples import Example

CHROMIUM = os.environ.get("NEGGUIDE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1400, "height": 1000}
SHOWN = """captions => {
  const labels = [...document.querySelectorAll('#gallery .caption-label')].map(label => label.innerText.trim());
  const images = [...document.querySelectorAll('#gallery img')];
  const loaded = images.length > 0 && images.every(image => image.complete && image.naturalWidth > 0);
  return loaded && JSON.stringify(labels) === JSON.stringify(captions) ? labels : null;
}"""
"""In the page: the gallery's captions once they are ``captions`` and every image of the gallery has been fetched
and decoded, else null."""


def launch_chromium(playwright: Playwright) -> Browser:
    """The system Chromium, headless; FileNotFoundError naming `CHROMIUM` when it is not installed."""
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) or set NEGGUIDE_CHROMIUM"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))


def open_demo(page: Page, url: str, timeout_s: float = 120.0) -> None:
    """Load the demo at ``url`` and wait until its form is there."""
    page.goto(url)
    expect(page.locator("#prompt textarea")).to_be_visible(timeout=timeout_s * 1000)


def generate_in_page(
    page: Page, prompt: str, methods: Sequence[str], steps: int | None = None, timeout_s: float = 120.0
) -> list[str]:
    """In the open demo: type ``prompt``, tick exactly the methods titled ``methods``, set ``steps`` (when given),
    generate, and wait until the gallery holds every row; returns the gallery's captions."""
    page.locator("#prompt textarea").fill(prompt)
    for checkbox in page.locator("#methods input[type=checkbox]").all():
        name = checkbox.evaluate("box => box.closest('label').innerText.trim()")
        checkbox.set_checked(name in methods)
    if steps is not None:
        box = page.locator("#steps input[type=number]")
        box.fill(str(steps))
        box.press("Tab")
    page.locator("#generate").click()
    return wait_for_rows(page, ["plain prompt", "standard negative", *methods], timeout_s, prompt)


def run_example(page: Page, example: Example, captions: Sequence[str], timeout_s: float = 120.0) -> list[str]:
    """Click ``example`` and wait until the form holds its prompt and the gallery shows ``captions`` for it;
    returns the captions."""
    page.get_by_text(example.title, exact=True).click()
    prompt = example.values["prompt"]
    expect(page.locator("#prompt textarea")).to_have_value(prompt, timeout=timeout_s * 1000)
    return wait_for_rows(page, captions, timeout_s, prompt)


def wait_for_rows(page: Page, captions: Sequence[str], timeout_s: float = 120.0, prompt: str = "") -> list[str]:
    """Wait until the summary of ``prompt``'s generation is written and the gallery holds images captioned
    ``captions``, all loaded; returns the gallery's captions as read in that same moment (the gallery may be drawn
    again after the last update, so a later read can catch it empty)."""
    expect(page.locator("#info")).to_contain_text(f"'{prompt[:50]}", timeout=timeout_s * 1000)
    expect(page.locator("#info")).to_contain_text(" s. Each download", timeout=timeout_s * 1000)
    expect(page.locator("#gallery .caption-label")).to_have_text(list(captions), timeout=timeout_s * 1000)
    handle = page.wait_for_function(SHOWN, arg=list(captions), timeout=timeout_s * 1000)
    return handle.json_value()


HIDDEN_IMAGES = """() => {
  const gallery = document.querySelector('#gallery');
  const images = [...gallery.querySelectorAll('img')];
  const hidden = [];
  for (const image of images) {
    const box = image.getBoundingClientRect();
    let clipped = box.width < 48 || box.height < 48;
    for (let el = image.parentElement; el && !clipped; el = el.parentElement) {
      const style = getComputedStyle(el);
      if (['auto', 'scroll', 'hidden'].includes(style.overflowY) || ['auto', 'scroll', 'hidden'].includes(style.overflowX)) {
        const outer = el.getBoundingClientRect();
        clipped = box.top < outer.top - 1 || box.bottom > outer.bottom + 1 || box.left < outer.left - 1
          || box.right > outer.right + 1;
      }
      if (el === gallery) break;
    }
    if (clipped) hidden.push(image.alt || image.src);
  }
  return {hidden, height: gallery.getBoundingClientRect().height};
}"""
"""In the page: the gallery's images that are smaller than 48 px or cut off by a scrolling or clipping box inside
the gallery, and the gallery's height."""


def hidden_images(page: Page) -> tuple[list[str], float]:
    """The gallery's images not shown whole (`HIDDEN_IMAGES`), and the gallery's height in pixels."""
    found = page.evaluate(HIDDEN_IMAGES)
    return found["hidden"], found["height"]
