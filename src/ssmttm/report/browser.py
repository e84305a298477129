"""Open a report page in a real headless browser (Debian's Chromium, driven by playwright) and check what loads.

    python -m ssmttm.report.browser results/report/index.html --screenshot docs/report.png

Checks that every <audio> element has its metadata (readyState >= 1, no media error, a duration), every <img> has
a natural width, and the page holds its tables; saves a full-page screenshot. Exit status 1 when anything failed to
load. playwright (the `dev` extra) drives the system's Chromium through `executable_path`: no browser download.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("SSMTTM_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOADED = "Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error !== null)"
AUDIO_STATE = """Array.from(document.querySelectorAll('audio')).map(a => ({src: a.getAttribute('src'),
    readyState: a.readyState, error: a.error ? a.error.code : null, duration: a.duration}))"""
IMAGE_STATE = """Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
    naturalWidth: i.naturalWidth}))"""


def chromium_available(path: str = CHROMIUM) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def open_page(context: Any, page_path: str | Path, timeout_s: float = 60.0) -> Any:
    """Open a local file in a new tab and wait until every audio element has loaded its metadata (or failed)."""
    page = context.new_page()
    page.goto(Path(page_path).resolve().as_uri())
    page.wait_for_function(LOADED, timeout=timeout_s * 1000)
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=timeout_s * 1000)
    return page


def inspect(page: Any) -> dict[str, Any]:
    """What loaded and what did not, on an open page."""
    audio = page.evaluate(AUDIO_STATE)
    images = page.evaluate(IMAGE_STATE)
    return {
        "audio": len(audio),
        "audio_failed": [a for a in audio if a["error"] is not None or a["readyState"] < 1 or not a["duration"]],
        "images": len(images),
        "images_failed": [i for i in images if not i["naturalWidth"]],
        "tables": page.evaluate("document.querySelectorAll('table').length"),
    }


def launch(profile: str | Path, chromium: str = CHROMIUM) -> tuple[Any, Any]:
    """(playwright, a persistent browser context on a fresh profile folder); stop both with `close`."""
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    context = driver.chromium.launch_persistent_context(
        str(profile), executable_path=chromium, headless=True, args=FLAGS, accept_downloads=True,
        viewport={"width": 1300, "height": 900},
    )  # fmt: skip
    return driver, context


def close(driver: Any, context: Any) -> None:
    context.close()
    driver.stop()


def check_report(page_path: str | Path, screenshot: str | Path | None = None, chromium: str = CHROMIUM) -> dict:
    """Open `page_path`, inspect it and save a full-page screenshot; returns inspect()'s findings."""
    with tempfile.TemporaryDirectory(prefix="ssmttm-chromium-") as profile:
        driver, context = launch(profile, chromium)
        try:
            page = open_page(context, page_path)
            found = inspect(page)
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                found["screenshot"] = str(screenshot)
        finally:
            close(driver, context)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="the HTML page, e.g. results/report/index.html")
    parser.add_argument("--screenshot", help="save a full-page PNG here")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"browser executable (default {CHROMIUM})")
    args = parser.parse_args(argv)
    if not chromium_available(args.chromium):
        print(f"error: {args.chromium} not found; apt-get install -y --no-install-recommends chromium", file=sys.stderr)
        return 1
    found = check_report(args.page, args.screenshot, args.chromium)
    print(json.dumps(found, indent=1))
    return 1 if found["audio_failed"] or found["images_failed"] or not found["tables"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
