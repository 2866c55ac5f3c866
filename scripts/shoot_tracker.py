"""Screenshot trackio's dashboard as the app's Run history button opens it (the README's tracker picture): the
app started, the Distill tab's Run history opened, the link it gives followed, the day's runs shown.

    GRADIO_SERVER_PORT=7864 .venv/bin/python app.py &
    .venv/bin/python scripts/shoot_tracker.py --url http://127.0.0.1:7864/ --out docs/screenshots

Writes run-history.png (the app's link) and tracker.png (the dashboard), and prints the dashboard's address."""

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from shoot_app import open_app  # scripts/ is on the path when this runs as a script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--wait", type=float, default=20, help="seconds the dashboard gets to draw its charts")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = open_app(pw, args.url)
        page.get_by_role("tab", name="Distill").click()
        page.locator("#history").get_by_text("Run history").first.click()
        page.locator("#history-btn").click()
        link = page.locator("#history-link a").first
        link.wait_for(timeout=120_000)
        time.sleep(1)
        page.locator("#history").screenshot(path=str(out / "run-history.png"))
        url = link.get_attribute("href")
        print(f"dashboard: {url}", flush=True)
        page.goto(url)
        time.sleep(args.wait)
        page.screenshot(path=str(out / "tracker.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
