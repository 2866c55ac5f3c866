"""Screenshot the Distill tab's progress in every phase of one session (the README's "first result" pictures):
start the app on an empty cache so the first Run converts the teacher and the teacher writes its corpus.

    DISTILL_STUDIO_CACHE=$(mktemp -d) GRADIO_SERVER_PORT=7863 .venv/bin/python app.py &
    .venv/bin/python scripts/shoot_phases.py --url http://127.0.0.1:7863/ --out docs/screenshots

Writes phase-<name>.png the first time the status names each phase (conversion, teacher, corpus, student,
evaluation, training, saving; the corpus again once the teacher is writing) and phase-done.png at the end, each clipped to the Run button and the status,
and prints the seconds from Run to each."""

import argparse
import re
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from shoot_app import open_app  # scripts/ is on the path when this runs as a script
NAMES = {"converting the teacher": "conversion", "loading the teacher": "teacher", "corpus": "corpus",
         "building the student": "student", "evaluation": "evaluation", "training": "training", "saving": "saving"}


def shoot(page, path: Path) -> None:
    top = page.locator("#run-btn").bounding_box()
    status = page.locator("#run-status").bounding_box()
    scroll = page.evaluate("window.scrollY")
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": 0, "y": scroll + top["y"] - 8, "width": 1400,
                          "height": status["y"] + status["height"] - top["y"] + 24})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = open_app(pw, args.url)
        page.get_by_role("tab", name="Distill").click()
        page.locator("#run-btn").wait_for(timeout=60_000)
        page.locator("#run-btn").click()
        start, seen = time.time(), set()
        while "Before / after" not in page.locator("#run-summary").inner_text():
            status = page.locator("#run-status").inner_text()
            now = re.search(r"now: ([a-z ]+)", status)
            phase = NAMES.get(now.group(1).strip()) if now else None
            writing = phase == "corpus" and "writing" in status and "writing" not in seen
            if phase and (phase not in seen or writing):  # the corpus again once the teacher is writing
                seen.update([phase] + (["writing"] if writing else []))
                shoot(page, out / f"phase-{phase}.png")
                print(f"{time.time() - start:6.1f} s  {phase}: {status.splitlines()[1] if len(status.splitlines()) > 1 else status}",
                      flush=True)
            if status.startswith("Error") or time.time() - start > args.timeout:
                raise SystemExit(f"session did not finish: {status[:300]}")
            time.sleep(0.3)
        time.sleep(1)
        shoot(page, out / "phase-done.png")
        print(f"{time.time() - start:6.1f} s  done; phases seen: {sorted(seen - {'writing'})}", flush=True)
        browser.close()


if __name__ == "__main__":
    main()
