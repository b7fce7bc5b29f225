"""Take the README's screenshot of the demo, from a clone: ``python demo/screenshot.py [--model PATH] [--out PNG]``.

Serves the demo on this machine, generates the plain prompt, the standard negative and Perp-Neg in a headless
Chromium (see `negguide.demo.browser`), and saves the whole page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from playwright.sync_api import sync_playwright

from negguide.demo.app import build_demo, launch_demo
from negguide.demo.browser import VIEWPORT, generate_in_page, launch_chromium, open_demo

DEFAULT_OUT = Path("docs/demo.png")
PROMPT = "a red circle"
METHODS = ("Perp-Neg",)
TIMEOUT_S = 900.0
"""How long loading the model and generating may take (a busy CPU is slow)."""


def take_screenshot(
    out: Path, model: str | None = None, prompt: str = PROMPT, methods: Sequence[str] = METHODS
) -> Path:
    """Generate ``prompt`` with ``methods`` in the demo on ``model`` and save the page as the PNG ``out``."""
    demo = build_demo(model)
    try:
        url = launch_demo(demo, block=False)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                open_demo(page, url, TIMEOUT_S)
                generate_in_page(page, prompt, methods, timeout_s=TIMEOUT_S)
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
