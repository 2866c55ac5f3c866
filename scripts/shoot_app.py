"""Screenshot every tab of a running app after a real session (the README's pictures).

    GRADIO_SERVER_PORT=7861 .venv/bin/python app.py &
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --out docs/screenshots [--steps N]

Drives Debian's Chromium through Playwright: checks compatibility of the default pair, runs a
session (the quickstart recipe, or --steps N), probes dark knowledge, and saves one PNG per tab.
"""

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--steps", type=int, default=None, help="override the session's steps")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the session")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(args.url)
        page.get_by_text("Distill Studio").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Check compatibility").click()
        page.locator("#compat-report").get_by_text("same vocabulary").wait_for(timeout=180_000)
        page.screenshot(path=str(out / "setup.png"), full_page=True)

        page.get_by_role("tab", name="Distill").click()
        if args.steps:
            page.locator("#steps input").fill(str(args.steps))
        page.locator("#run-btn").click()
        start = time.time()
        while "Before / after" not in page.locator("#run-summary").inner_text():
            status = page.locator("#run-status").inner_text()
            if status.startswith("Error") or time.time() - start > args.timeout:
                raise SystemExit(f"session did not finish: {status[:300]}")
            time.sleep(3)
        print(f"session finished in {time.time() - start:.0f} s", flush=True)
        time.sleep(2)
        page.screenshot(path=str(out / "distill.png"), full_page=True)

        page.get_by_role("tab", name="Dark knowledge").click()
        page.locator("#probe-btn").click()
        page.locator("#probe-stats").get_by_text("student (after)").wait_for(timeout=180_000)
        time.sleep(2)
        page.screenshot(path=str(out / "dark-knowledge.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
