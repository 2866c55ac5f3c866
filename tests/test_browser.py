"""The app in a real browser: Debian chromium driven by Playwright, on a tiny teacher typed into the
Setup tab and pasted training text, so a whole session runs in seconds.

Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import app
from tests.conftest import SAMPLE_TEXT
from tests.test_app import fake_sweep  # noqa: F401  (a fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
API_NAMES = {"/compatibility", "/preset", "/layer_map", "/run_session", "/stop", "/size_sweep", "/size_plot",
             "/dark_knowledge"}

if not Path(CHROMIUM).is_file() and os.environ.get("CI"):
    pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs it", pytrace=False)
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_teacher_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_STUDIO_RUNS", str(tmp_path_factory.mktemp("runs")))
        demo = app.build_app().queue()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def page(server_url):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server_url)
        page.get_by_text("Distill Studio").first.wait_for(timeout=30_000)
        yield page
        browser.close()


def plot_traces(page, elem_id: str) -> list[str]:
    """Names of the traces plotly.js drew inside the gr.Plot with this elem_id."""
    locator = page.locator(f"#{elem_id} .js-plotly-plot")
    locator.wait_for(timeout=30_000)
    return locator.evaluate("el => el.data.map(t => t.name)")


def set_dropdown(page, elem_id: str, value: str) -> None:
    """Type a custom value: blurring keeps it (Enter would pick the first preset that matches,
    e.g. layers:15 for layers:1)."""
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.blur()
    assert box.input_value() == value


def test_api_names_are_stable(server_url):
    from gradio_client import Client

    client = Client(server_url, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert API_NAMES <= set(endpoints)
    assert client.predict(api_name="/stop").startswith("**Stop requested:**")
    # run_session takes the pair, the preset and every knob by name (the State is not part of the API)
    names = [p["parameter_name"] for p in endpoints["/run_session"]["parameters"]]
    assert names == ["teacher", "student", "preset", *app.KNOBS, "corpus_choice", "upload", "pasted"]
    values = client.predict("hinton", api_name="/preset")
    assert dict(zip(app.KNOBS, values)) == dict(zip(app.KNOBS, app.apply_preset("hinton")))
    assert values[-1].startswith("**hinton:**")


def test_setup_distill_and_dark_knowledge_in_browser(page, tiny_teacher_dir):
    # Setup: type the tiny teacher and a 1-layer student, check the pair
    set_dropdown(page, "teacher-spec", str(tiny_teacher_dir))
    set_dropdown(page, "student-spec", "layers:1")
    page.get_by_role("button", name="Check compatibility").click()
    report = page.locator("#compat-report")
    report.get_by_text("same vocabulary").wait_for(timeout=60_000)
    assert "layers:1" in report.inner_text()
    page.screenshot(path=str(SHOTS / "1-setup.png"), full_page=True)

    # Distill: the checked pair's layer map; a preset fills the knobs; a 3-step session on pasted text
    page.get_by_role("tab", name="Distill").click()
    assert "layers:1" in page.locator("#pair-note").inner_text()  # the pair picked in Setup
    page.locator("#layer-map-pairs").get_by_text("1 layer pair").wait_for(timeout=30_000)
    set_dropdown(page, "layer-map", "0:7")
    page.locator("#layer-map-pairs").get_by_text("the teacher has layers 0..3").wait_for(timeout=30_000)
    set_dropdown(page, "layer-map", "last")
    page.locator("#layer-map-pairs").get_by_text("1 layer pair").wait_for(timeout=30_000)
    page.locator("#preset input").click()
    page.get_by_role("option", name="dark-knowledge-topk", exact=True).click()
    page.locator("#preset-note").get_by_text("top-64").wait_for(timeout=30_000)
    assert page.locator("#top-k input").input_value() == "64"
    page.screenshot(path=str(SHOTS / "2-distill-knobs.png"), full_page=True)
    for elem_id, value in (("steps", "3"), ("batch-size", "4"), ("seq-len", "32")):
        page.locator(f"#{elem_id} input").fill(value)
    page.get_by_label(app.CORPUS_PASTE).check()
    page.locator("#corpus-paste textarea").fill(SAMPLE_TEXT)
    page.locator("#run-btn").click()
    summary = page.locator("#run-summary")
    summary.get_by_text("Before / after").wait_for(timeout=120_000)
    assert "held-out perplexity" in summary.inner_text()
    assert page.locator("#run-status").inner_text().startswith("Done: 3/3 steps")
    loss_traces = plot_traces(page, "loss-plot")
    assert "total" in loss_traces and any("ppl" in name for name in loss_traces)
    assert plot_traces(page, "probe-plot")[0] == "teacher"
    page.screenshot(path=str(SHOTS / "2-distill.png"), full_page=True)

    # Dark knowledge: teacher, untrained student and the student just trained
    page.get_by_role("tab", name="Dark knowledge").click()
    page.locator("#probe-btn").click()
    page.locator("#probe-stats").get_by_text("student (after)").wait_for(timeout=60_000)
    assert plot_traces(page, "bars-plot") == ["teacher", "student (before)", "student (after)"]
    assert len(plot_traces(page, "kl-plot")) == 1
    assert page.locator("#probe-tokens code").count() >= 3
    page.screenshot(path=str(SHOTS / "3-dark-knowledge.png"), full_page=True)


def test_student_size_in_browser(page, fake_sweep):
    """The Student size tab on the sweep's contract (a fake engine): the plot and the table fill in."""
    page.get_by_role("tab", name="Student size").click()
    page.locator("#sweep-specs textarea").fill("layers:1, layers:2, layers:3")
    page.locator("#sweep-btn").click()
    status = page.locator("#sweep-status")
    status.get_by_text("Done: 3/3 students").wait_for(timeout=60_000)
    assert fake_sweep["specs"] == ["layers:1", "layers:2", "layers:3"]
    assert plot_traces(page, "size-plot") == ["before → after", "student before distillation",
                                               "student after distillation", "teacher"]
    assert "layers:3" in page.locator("#size-table").inner_text()
    page.screenshot(path=str(SHOTS / "4-student-size.png"), full_page=True)
