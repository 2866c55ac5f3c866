"""Screenshot every tab of a running app after a real session (the README's pictures).

    GRADIO_SERVER_PORT=7861 .venv/bin/python app.py &
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --out docs/screenshots [--steps N]
        [--sizes-json runs/<run>/students.json | --skip-sizes]
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --only augmentation   # about a minute
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --only alignment [--cross-run RUN_ID]
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --only grading   # an on-policy session
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --only grading --open-run RUN_ID
        # the same after an earlier on-policy session (e.g. `distill --config assets/configs/on-policy.yaml` into
        # the app's runs folder), opened from Earlier runs
    .venv/bin/python scripts/shoot_app.py --url http://127.0.0.1:7861/ --only compare [--lesson 01-soft-targets]
        [--steps N]   # a lesson's comparison in Compare recipes (compare.png), each recipe --steps N

Drives Debian's Chromium through Playwright: checks compatibility of the default pair (setup.png),
previews every augmenter on the teacher-generated corpus (augmentation.png; --only augmentation takes
just this one, with no session),
shows the Distill tab's preset picker and Techniques knobs (distill-knobs.png), runs a session (the
quickstart recipe, or --steps N; distill.png), probes dark knowledge (dark-knowledge.png), shows the
attention maps (attention.png), hidden-state similarity (similarity.png), the evaluation table and
generations side by side (evaluate.png), the teacher grading the students' own continuations
(grading.png), then
compares the Student size tab's default students with the same recipe (student-size.png; about
3 minutes per student on 2 CPU cores), or plots an earlier sweep's students.json (--sizes-json).
"""

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def open_app(pw, url: str, ready_text: str | None = "Distill Studio"):
    """Debian's Chromium on `url` at 1400 x 1000, once the page shows `ready_text`: (browser, page)."""
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    if ready_text:
        page.get_by_text(ready_text).first.wait_for(timeout=60_000)
    return browser, page


def shoot_augmentation(page, out: Path, timeout_s: float = 300) -> None:
    """Open the Distill tab's Data and augmentation section, tick every augmenter, preview them and
    screenshot the section with its table (augmentation.png); then untick them and fold the section,
    so a session that follows runs without augmentation."""
    page.get_by_role("tab", name="Distill").click()
    page.locator("#data-augmentation").get_by_text("Data and augmentation").first.click()
    boxes = page.locator("#augment-methods input[type=checkbox]")
    boxes.first.wait_for(timeout=30_000)
    for i in range(boxes.count()):
        boxes.nth(i).check()
    page.locator("#augment-preview-btn").click()
    page.locator("#augment-note").get_by_text("Preview:").wait_for(timeout=timeout_s * 1000)
    time.sleep(1)
    scroll = page.evaluate("window.scrollY")  # bounding boxes are relative to the viewport, clips to the page
    top = page.locator("#data-augmentation").bounding_box()
    table = page.locator("#augment-preview").bounding_box()
    page.screenshot(path=str(out / "augmentation.png"), full_page=True,
                    clip={"x": 0, "y": scroll + top["y"] - 8, "width": 1400,
                          "height": table["y"] + table["height"] - top["y"] + 24})
    for i in range(boxes.count()):
        boxes.nth(i).uncheck()
    page.locator("#data-augmentation").get_by_text("Data and augmentation").first.click()
    time.sleep(1)


CROSS_STUDENT = "fresh:layers=4,hidden=256,heads=4,vocab=bpe:8000"
"""A student with a BPE vocabulary of its own (the README's cross-tokenizer sessions)."""


def shoot_alignment(page, out: Path, cross_run: str | None, timeout_s: float = 300) -> None:
    """Setup with the cross-tokenizer student: the compatibility report and how the vocabularies line up on the
    default text (alignment.png); with `cross_run` (an earlier run of that pair in the app's runs folder), that run
    opened and the Dark knowledge view across tokenizers (dark-knowledge-cross.png)."""
    box = page.locator("#student-spec input")
    box.fill(CROSS_STUDENT)
    box.blur()
    page.get_by_role("button", name="Check compatibility").click()
    page.locator("#compat-report").get_by_text("Tokenizer bridge").wait_for(timeout=timeout_s * 1000)
    page.locator("#alignment-note").get_by_text("Bridge").wait_for(timeout=timeout_s * 1000)
    time.sleep(2)
    scroll = page.evaluate("window.scrollY")
    top = page.locator("#compat-report").bounding_box()
    plot = page.locator("#alignment-plot").bounding_box()
    page.screenshot(path=str(out / "alignment.png"), full_page=True,
                    clip={"x": 0, "y": scroll + top["y"] - 8, "width": 1400,
                          "height": plot["y"] + plot["height"] - top["y"] + 24})
    if not cross_run:
        return
    open_earlier_run(page, cross_run)
    page.get_by_role("tab", name="Dark knowledge").click()
    page.locator("#probe-btn").click()
    page.locator("#probe-stats").get_by_text("student (after)").wait_for(timeout=timeout_s * 1000)
    time.sleep(2)
    page.screenshot(path=str(out / "dark-knowledge-cross.png"), full_page=True)


def run_session(page, timeout_s: float) -> None:
    """Press Run in the Distill tab and wait for the before/after summary."""
    page.locator("#run-btn").click()
    start = time.time()
    while "Before / after" not in page.locator("#run-summary").inner_text():
        status = page.locator("#run-status").inner_text()
        if status.startswith("Error") or time.time() - start > timeout_s:
            raise SystemExit(f"session did not finish: {status[:300]}")
        time.sleep(3)
    print(f"session finished in {time.time() - start:.0f} s", flush=True)


def shoot_grading(page, out: Path, timeout_s: float = 600) -> None:
    """The Teacher grades tab: grade the default prompt's continuations, screenshot (grading.png)."""
    page.get_by_role("tab", name="Teacher grades").click()
    page.locator("#grade-btn").click()
    page.locator("#grade-table").get_by_text("least likely").first.wait_for(timeout=timeout_s * 1000)
    time.sleep(2)
    page.screenshot(path=str(out / "grading.png"), full_page=True)


def open_earlier_run(page, run_id: str) -> None:
    """Open a finished run of the runs folder from the Distill tab's Earlier runs: the views show its student."""
    page.get_by_role("tab", name="Distill").click()
    page.locator("#earlier-runs").get_by_text("Earlier runs").first.click()
    picker = page.locator("#earlier-run input")
    picker.click()
    page.get_by_role("option", name=run_id).first.click()
    page.locator("#open-run-btn").click()
    page.locator("#earlier-note").get_by_text("Opened").wait_for(timeout=300_000)


def shoot_on_policy(page, out: Path, steps: int | None, timeout_s: float) -> None:
    """The on-policy preset's session (distill-on-policy.png: its curves and the student's last rollout graded
    by the teacher), then the Teacher grades tab after it (grading.png)."""
    page.get_by_role("tab", name="Distill").click()
    page.locator("#layer-map-pairs").get_by_text("layer pair").wait_for(timeout=180_000)
    picker = page.locator("#preset input")
    picker.click()
    page.get_by_role("option", name="on-policy").click()
    page.locator("#preset-note").get_by_text("On-policy distillation").wait_for(timeout=30_000)
    if steps:
        page.locator("#steps input").fill(str(steps))
    time.sleep(1)
    run_session(page, timeout_s)
    page.locator("#techniques").get_by_text("Techniques").first.click()  # fold the knobs: the results show
    time.sleep(2)
    page.screenshot(path=str(out / "distill-on-policy.png"), full_page=True)
    shoot_grading(page, out)


def pick_lesson(page, lesson: str) -> None:
    """Compare recipes: pick `lesson` in the Lesson picker and wait for its text and setting."""
    page.get_by_role("tab", name="Compare recipes").click()
    page.locator("#lesson-picker input").click()
    page.get_by_role("option", name=lesson).click()
    page.locator("#lesson-text").get_by_text("What to look for").first.wait_for(timeout=30_000)
    time.sleep(2)  # the picker may answer twice (its input and its blur): let the lesson's setting land first


def press_compare(page, timeout_s: float) -> float:
    """Press Compare and wait until every recipe is done (or stopped); the seconds it took."""
    page.locator("#compare-btn").click()
    start = time.time()
    while not page.locator("#compare-status").inner_text().startswith(("Done", "Stopped")):
        status = page.locator("#compare-status").inner_text()
        if status.startswith(("Error", "Ended")) or time.time() - start > timeout_s:
            raise SystemExit(f"comparison did not finish: {status[:300]}")
        time.sleep(3)
    return time.time() - start


def shoot_compare(page, out: Path, lesson: str, steps: int | None, timeout_s: float) -> None:
    """The Compare recipes tab: pick `lesson` (its recipes and setting load), set its steps to `steps` if given,
    press Compare, wait for every recipe, screenshot (compare.png)."""
    pick_lesson(page, lesson)
    setting = page.locator("#compare-setting textarea")
    if steps:
        lines = [line for line in setting.input_value().splitlines() if not line.startswith("steps=")]
        wanted = "\n".join([*lines, f"steps={steps}"])
        for _ in range(5):
            setting.fill(wanted)
            setting.blur()
            time.sleep(1)
            if setting.input_value() == wanted:
                break
        else:
            raise SystemExit(f"the setting box did not keep steps={steps}")
    print(f"comparison finished in {press_compare(page, timeout_s):.0f} s", flush=True)
    time.sleep(2)
    page.screenshot(path=str(out / "compare.png"), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--steps", type=int, default=None, help="override the session's steps")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the session")
    parser.add_argument("--sizes-json", default=None, help="plot this students.json instead of running a sweep")
    parser.add_argument("--skip-sizes", action="store_true", help="no Student size screenshot")
    parser.add_argument("--sizes-timeout", type=float, default=3600, help="seconds to wait for the sweep")
    parser.add_argument("--open-run", default=None, help="with --only grading: open this earlier run instead of "
                        "running a session")
    parser.add_argument("--teacher", default=None, help="type this teacher spec in Setup first (e.g. a tiny test model)")
    parser.add_argument("--only", choices=["augmentation", "setup", "alignment", "grading", "compare"], default=None,
                        help="take only this screenshot (no session: augmentation about a minute, setup seconds, "
                             "alignment: the Setup tab with a student of its own tokenizer; grading: an on-policy "
                             "session, then the Teacher grades tab; compare: a lesson's comparison, --steps each)")
    parser.add_argument("--lesson", default="01-soft-targets", help="with --only compare: the lesson to run")
    parser.add_argument("--cross-run", default=None, help="with --only alignment: an earlier run of that pair to open "
                        "for the Dark knowledge view across tokenizers (a run id in the app's runs folder)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = open_app(pw, args.url)
        if args.teacher:
            box = page.locator("#teacher-spec input")
            box.fill(args.teacher)
            box.blur()
        if args.only == "augmentation":
            shoot_augmentation(page, out)
            browser.close()
            return
        if args.only == "alignment":
            shoot_alignment(page, out, args.cross_run)
            browser.close()
            return
        if args.only == "grading" and args.open_run:
            open_earlier_run(page, args.open_run)
            shoot_grading(page, out)
            browser.close()
            return
        if args.only == "grading":
            shoot_on_policy(page, out, args.steps, args.timeout)
            browser.close()
            return
        if args.only == "compare":
            shoot_compare(page, out, args.lesson, args.steps, args.timeout)
            browser.close()
            return
        page.get_by_role("button", name="Check compatibility").click()
        page.locator("#compat-report").get_by_text("same vocabulary").wait_for(timeout=180_000)
        page.screenshot(path=str(out / "setup.png"), full_page=True)
        if args.only == "setup":
            browser.close()
            return

        shoot_augmentation(page, out)
        page.get_by_role("tab", name="Distill").click()
        page.locator("#layer-map-pairs").get_by_text("layer pair").wait_for(timeout=180_000)
        if args.steps:
            page.locator("#steps input").fill(str(args.steps))
        time.sleep(1)
        bottom = page.locator("#run-btn").bounding_box()
        page.screenshot(path=str(out / "distill-knobs.png"), full_page=True,
                        clip={"x": 0, "y": 0, "width": 1400, "height": bottom["y"] + bottom["height"] + 16})
        run_session(page, args.timeout)
        page.locator("#techniques").get_by_text("Techniques").first.click()  # fold the knobs: the results show
        time.sleep(2)
        page.screenshot(path=str(out / "distill.png"), full_page=True)

        for tab, button, result, text, timeout_s, picture in [
            ("Dark knowledge", "#probe-btn", "#probe-stats", "student (after)", 180, "dark-knowledge.png"),
            ("Attention", "#attention-btn", "#attention-note", "Student (after)", 300, "attention.png"),
            ("Similarity", "#similarity-btn", "#similarity-note", "first token is left out", 300, "similarity.png"),
        ]:
            page.get_by_role("tab", name=tab).click()
            page.locator(button).click()
            page.locator(result).get_by_text(text).wait_for(timeout=timeout_s * 1000)
            time.sleep(2)
            page.screenshot(path=str(out / picture), full_page=True)

        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#evaluate-btn").click()
        page.locator("#evaluate-table").get_by_text("keeps").wait_for(timeout=600_000)
        page.locator("#generate-btn").click()
        page.locator("#generate-view").get_by_text("student (after)").wait_for(timeout=600_000)
        time.sleep(1)
        page.screenshot(path=str(out / "evaluate.png"), full_page=True)
        shoot_grading(page, out)

        if not args.skip_sizes:
            page.get_by_role("tab", name="Student size").click()
            if args.sizes_json:
                page.get_by_text("Plot an earlier sweep").click()
                page.locator("#sweep-file input[type=file]").set_input_files(args.sizes_json)
                page.locator("#sweep-status").get_by_text("Loaded").wait_for(timeout=60_000)
            else:
                page.locator("#sweep-btn").click()
                start = time.time()
                while not page.locator("#sweep-status").inner_text().startswith(("Done", "Stopped")):
                    status = page.locator("#sweep-status").inner_text()
                    if status.startswith("Error") or time.time() - start > args.sizes_timeout:
                        raise SystemExit(f"sweep did not finish: {status[:300]}")
                    time.sleep(5)
                print(f"sweep finished in {time.time() - start:.0f} s", flush=True)
            time.sleep(2)
            page.screenshot(path=str(out / "student-size.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
