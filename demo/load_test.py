"""Load-test the web demo, from a clone: ``python demo/load_test.py [--clients 32] [--steps 2] [--model PATH]``.

Serves the demo on this machine, has ``--clients`` `gradio_client` clients submit one generation each at once (the
plain prompt, the standard negative and Perp-Neg), and meanwhile loads the page (its HTML and configuration) again
and again. Prints one JSON object: generations served and lost, the wall time, and the page's load times during
the load. Exits with 1 when a generation is lost or the page stops answering.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gradio_client import Client

from negguide.demo.app import build_demo, launch_demo

ROWS = ("plain prompt", "standard negative", "Perp-Neg")
PAGE_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 120.0


def page_latencies(url: str, stop: threading.Event) -> list[float | None]:
    """Load the page again and again until ``stop``: the seconds each load took, ``None`` for one that failed or
    took longer than `PAGE_TIMEOUT_S`."""
    latencies: list[float | None] = []
    while not stop.is_set():
        start = time.perf_counter()
        try:
            for path in ("", "config"):
                with urllib.request.urlopen(f"{url.rstrip('/')}/{path}", timeout=PAGE_TIMEOUT_S) as response:
                    response.read()
            latencies.append(time.perf_counter() - start)
        except OSError:
            latencies.append(None)
        stop.wait(0.2)
    return latencies


def served_rows(result: Any) -> bool:
    """Whether a generate result holds the three rows."""
    galleries = [output["value"] for output in result if isinstance(output, dict) and "columns" in output]
    return len(galleries) == 1 and [item["caption"] for item in galleries[0]] == list(ROWS)


def load_test(url: str, clients: int, steps: int) -> dict[str, Any]:
    """Submit ``clients`` generations at once to the demo at ``url`` while loading its page; the numbers."""
    with ThreadPoolExecutor(clients) as pool:
        made = list(
            pool.map(lambda _: Client(url, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S}), range(clients))
        )
    stop = threading.Event()
    with ThreadPoolExecutor(1) as watcher:
        page = watcher.submit(page_latencies, url, stop)
        start = time.perf_counter()
        jobs = [
            client.submit(prompt=f"a red circle number {i}", steps=steps, methods=["perpneg"], api_name="/generate")
            for i, client in enumerate(made)
        ]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(served_rows(job.result(timeout=None)))
            except Exception:  # noqa: BLE001 - a lost generation is counted, whatever the cause
                outcomes.append(False)
        wall = time.perf_counter() - start
        stop.set()
        latencies = page.result()
    answered = [latency for latency in latencies if latency is not None]
    return {
        "clients": clients,
        "steps": steps,
        "generations_served": sum(outcomes),
        "generations_lost": len(outcomes) - sum(outcomes),
        "images": sum(outcomes) * len(ROWS),
        "wall_s": round(wall, 2),
        "generations_per_s": round(sum(outcomes) / wall, 3),
        "page_loads_during_load": len(latencies),
        "page_loads_failed": len(latencies) - len(answered),
        "page_load_median_s": round(statistics.median(answered), 3) if answered else None,
        "page_load_max_s": round(max(answered), 3) if answered else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="generations submitted at once (default: 32)")
    parser.add_argument("--steps", type=int, default=2, help="steps of each generation (default: 2)")
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
    args = parser.parse_args(argv)
    demo = build_demo(args.model)
    try:
        numbers = load_test(launch_demo(demo, block=False), args.clients, args.steps)
    finally:
        demo.close()
    sys.stdout.write(json.dumps(numbers) + "\n")
    return 0 if numbers["generations_lost"] == 0 and numbers["page_loads_failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
