"""Screenshot a student's browser on a shared run (README, "A class on one Space").

    GRADIO_SERVER_PORT=7861 .venv/bin/python app.py &
    .venv/bin/python scripts/shoot_shared.py --url http://127.0.0.1:7861/ --out docs/screenshots [--steps N]

The teacher (a gradio_client user) runs the quickstart session (or --steps N of it) and shares the run
(`/share_run`); then a student's browser (Debian Chromium through Playwright) opens the link: the Distill tab
shows the shared run read-only (shared-run.png), Export is refused, and the Dark knowledge tab answers on the
student's own text (shared-dark-knowledge.png). Prints the link and what each screenshot shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gradio_client import Client
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_test  # noqa: E402  (the scripts folder: the session's inputs by name)
from shoot_app import open_app  # noqa: E402

OWN_TEXT = "My grandmother always said that a good soup needs"


def teacher_shares(url: str, steps: int | None) -> str:
    """The teacher's session, then its share link (visitors may not export)."""
    client = Client(url, verbose=False)
    session, _, _ = load_test.session_inputs(None, steps)
    status = client.predict(*load_test.api_args(client, "/run_session", session), api_name="/run_session")[0]
    print("teacher:", str(status).splitlines()[0])
    note, link = client.predict(False, api_name="/share_run")
    print("share:", note)
    return str(link)


def student_browser(link: str, out: Path, timeout_s: float) -> None:
    with sync_playwright() as pw:
        browser, page = open_app(pw, link, ready_text=None)
        page.get_by_role("tab", name="Distill").click()
        page.locator("#run-status").get_by_text("Shared run").wait_for(timeout=timeout_s * 1000)
        page.locator("#export-btn").click()
        page.locator("#export-note").get_by_text("shared with you read-only").wait_for(timeout=60_000)
        page.locator("#loss-plot .js-plotly-plot").wait_for(timeout=timeout_s * 1000)  # the run's curves drawn
        time.sleep(2)
        page.screenshot(path=str(out / "shared-run.png"), full_page=True)
        print("shared-run.png:", page.locator("#run-status").inner_text().splitlines()[0])
        print("  export:", page.locator("#export-note").inner_text().splitlines()[0])
        page.get_by_role("tab", name="Dark knowledge").click()
        page.locator("#probe-text textarea, #probe-text input").first.fill(OWN_TEXT)
        page.locator("#probe-position input").fill("-1")
        page.locator("#probe-btn").click()
        page.locator("#probe-note").get_by_text("shared run").wait_for(timeout=timeout_s * 1000)
        page.locator("#bars-plot .js-plotly-plot").wait_for(timeout=60_000)
        time.sleep(2)
        page.screenshot(path=str(out / "shared-dark-knowledge.png"), full_page=True)
        print("shared-dark-knowledge.png:", page.locator("#probe-note").inner_text().splitlines()[0])
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--steps", type=int, default=None, help="override the teacher's session's steps")
    parser.add_argument("--link", default=None, help="a share link already made (skips the teacher's session)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a view")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    link = args.link or teacher_shares(args.url, args.steps)
    print("link:", link)
    student_browser(link, out, args.timeout)


if __name__ == "__main__":
    main()
