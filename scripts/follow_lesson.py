"""Follow a lesson in the app as a new user would, start to finish, and time each step.

    GRADIO_SERVER_PORT=7861 .venv/bin/python app.py &
    .venv/bin/python scripts/follow_lesson.py --url http://127.0.0.1:7861/ --lesson 02-temperature \
        --out docs/screenshots/lessons

Drives Debian's Chromium through Playwright: picks the lesson in Compare recipes, then does what its text says,
in its order: lesson 1 checks the pair in Setup before Compare; lesson 2 looks at the teacher in Dark knowledge
at T = 1 and T = 4 first; lesson 3 runs its Distill preset after Compare and opens Attention and Similarity;
lesson 4 runs the on-policy preset after Compare and opens Teacher grades. Each step's screenshot goes to
--out as <lesson>-<n>-<step>.png; the last line printed is one JSON object with every step's seconds and the
whole lesson's.
"""

import argparse
import json
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from shoot_app import open_app, pick_lesson, press_compare, run_session

LESSON_PRESETS = {"03-attention-and-layers": "attention-transfer", "04-on-policy": "on-policy"}
"""The Distill preset a lesson's side step runs after its comparison."""


class Steps:
    """Times and screenshots each step of a lesson."""

    def __init__(self, page, out: Path, lesson: str):
        self.page, self.out, self.lesson = page, out, lesson
        self.times: dict[str, float] = {}
        self.start = time.time()

    def done(self, name: str, began: float) -> None:
        self.times[name] = round(time.time() - began, 1)
        time.sleep(1)
        picture = self.out / f"{self.lesson[:2]}-{len(self.times)}-{name}.png"
        self.page.screenshot(path=str(picture), full_page=True)
        print(f"{name}: {self.times[name]:.0f} s ({picture})", flush=True)


def check_setup(page) -> None:
    page.get_by_role("tab", name="Setup").click()
    page.get_by_role("button", name="Check compatibility").click()
    page.locator("#compat-report").get_by_text("same vocabulary").wait_for(timeout=300_000)


def teacher_at(page, temperature: float) -> None:
    """Dark knowledge at `temperature`: set the slider's number, press Show distributions, wait for the bars."""
    page.get_by_role("tab", name="Dark knowledge").click()
    box = page.locator("#probe-temperature input[type=number]")
    box.fill(str(temperature))
    box.press("Enter")
    time.sleep(1)
    page.locator("#probe-btn").click()
    # the bars' title names the temperature they were computed at: "Next token after ... at T=4"
    page.locator("#bars-plot").get_by_text(f"at T={temperature:g}").first.wait_for(timeout=300_000)
    page.locator("#probe-stats").get_by_text("entropy").first.wait_for(timeout=60_000)


def distill_preset(page, preset: str, timeout_s: float) -> None:
    page.get_by_role("tab", name="Distill").click()
    page.locator("#layer-map-pairs").get_by_text("layer pair").wait_for(timeout=180_000)
    page.locator("#preset input").click()
    page.get_by_role("option", name=preset, exact=True).click()
    time.sleep(2)
    run_session(page, timeout_s)
    page.locator("#techniques").get_by_text("Techniques").first.click()  # fold the knobs: the results show


def open_view(page, tab: str, button: str, result: str, text: str, timeout_s: float = 300) -> None:
    page.get_by_role("tab", name=tab).click()
    page.locator(button).click()
    page.locator(result).get_by_text(text).first.wait_for(timeout=timeout_s * 1000)


def follow(page, steps: Steps, lesson: str, timeout_s: float) -> None:
    began = time.time()
    pick_lesson(page, lesson)
    steps.done("pick", began)
    if lesson.startswith("01"):
        began = time.time()
        check_setup(page)
        steps.done("setup", began)
    if lesson.startswith("02"):
        for temperature in (1.0, 4.0):
            began = time.time()
            teacher_at(page, temperature)
            steps.done(f"dark-knowledge-T{temperature:g}", began)
    began = time.time()
    page.get_by_role("tab", name="Compare recipes").click()
    press_compare(page, timeout_s)
    steps.done("compare", began)
    preset = LESSON_PRESETS.get(lesson)
    if preset is None:
        return
    began = time.time()
    distill_preset(page, preset, timeout_s)
    steps.done(f"distill-{preset}", began)
    views = ([("Attention", "#attention-btn", "#attention-note", "Student (after)"),
              ("Similarity", "#similarity-btn", "#similarity-note", "first token is left out")]
             if preset == "attention-transfer" else
             [("Teacher grades", "#grade-btn", "#grade-table", "least likely")])
    for tab, button, result, text in views:
        began = time.time()
        open_view(page, tab, button, result, text)
        steps.done(tab.lower().replace(" ", "-"), began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--lesson", required=True, help="a lesson's file name without .md, e.g. 02-temperature")
    parser.add_argument("--out", default="docs/screenshots/lessons")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a comparison or a run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = open_app(pw, args.url)
        steps = Steps(page, out, args.lesson)
        follow(page, steps, args.lesson, args.timeout)
        browser.close()
    print(json.dumps({"lesson": args.lesson, "steps_s": steps.times, "total_s": round(time.time() - steps.start, 1)}))


if __name__ == "__main__":
    main()
