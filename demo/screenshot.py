"""Take the README's screenshot of the demo, from a clone: ``python demo/screenshot.py [--model PATH] [--out PNG]``.

Serves the demo on this machine, runs its first example (the form's initial case: the plain prompt, the standard
negative, Perp-Neg and NAG) in a headless Chromium (see `negguide.demo.browser`), and saves the whole page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from playwright.sync_api import sync_playwright

from negguide.demo.app import build_demo, launch_demo
from negguide.demo.browser import VIEWPORT, launch_chromium, open_demo, run_example
from negguide.demo.comparison import title
from negguide.demo.examples import examples
from negguide.demo.form import FORM_DEFAULTS

DEFAULT_OUT = Path("docs/demo.png")
TIMEOUT_S = 900.0
"""How long loading the model and generating may take (a busy CPU is slow)."""


def take_screenshot(out: Path, model: str | None = None) -> Path:
    """Run the first example in the demo on ``model`` and save the page as the PNG ``out``."""
    first = examples()[0]
    methods = first.values.get("methods", FORM_DEFAULTS["methods"])
    captions = ["plain prompt", "standard negative", *map(title, methods)]
    demo = build_demo(model)
    try:
        url = launch_demo(demo, block=False)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                open_demo(page, url, TIMEOUT_S)
                run_example(page, first, captions, timeout_s=TIMEOUT_S)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    sys.stdout.write(f"{take_screenshot(args.out, args.model)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
