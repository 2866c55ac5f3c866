"""The app in a real browser: Debian chromium driven by Playwright, on a tiny teacher typed into the
Setup tab and pasted training text, so a whole session runs in seconds.

Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import visuals
from tests.conftest import SAMPLE_TEXT, served_app
from tests.test_app import fake_sweep, tabs  # noqa: F401  (fake_sweep: a fixture)
from ui import distill, knobs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
API_NAMES = {"/compatibility", "/preset", "/layer_map", "/run_session", "/stop", "/size_sweep", "/size_plot",
             "/dark_knowledge", "/attention", "/similarity", "/evaluate", "/generate", "/grade", "/export",
             "/augment_preview", "/run_history", "/compare", "/compare_plot", "/lesson", "/save_recipe"}
RUN_SESSION_INPUTS = [  # run_session's API inputs, in the order the README documents (the order they are created)
    "teacher", "student", "preset", "steps", "batch_size", "seq_len", "learning_rate", "warmup_steps", "seed",
    "corpus_choice", "upload", "pasted", "hub_dataset", "hub_config", "hub_split", "hub_max_rows", "corpus_column",
    "augment", "augment_strength", "augment_copies", "temperature", "kd_weight", "divergence", "jsd_beta",
    "skew_alpha", "tokenizer_bridge", "on_policy_fraction", "on_policy_divergence", "rollout_tokens", "top_k",
    "teacher_cache", "attention_weight", "attention_loss", "freeze_embeddings", "freeze_layers", "hidden_weight",
    "hidden_loss", "layer_map"]
ATTENTION_INPUTS = ["teacher", "student", "text", "teacher_layer", "teacher_head", "student_layer", "student_head",
                    "average_heads"]
TABS = {  # tab name -> an element each must render
    "Setup": "#teacher-spec", "Distill": "#run-btn", "Student size": "#sweep-btn", "Compare recipes": "#compare-btn",
    "Dark knowledge": "#probe-btn", "Attention": "#attention-btn", "Similarity": "#similarity-btn",
    "Evaluate": "#evaluate-btn", "Teacher grades": "#grade-btn",
}

if not Path(CHROMIUM).is_file() and os.environ.get("CI"):
    pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs it", pytrace=False)
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def server_url(tiny_teacher_dir, tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("runs")) as url:
        yield url


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


def visible_traces(page, elem_id: str) -> list[str]:
    """plot_traces without the hatched causal-mask overlays of the attention figures."""
    return [name for name in plot_traces(page, elem_id) if name != visuals.MASKED_NOTE]


def plot_title(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} .js-plotly-plot").evaluate("el => (el.layout.title || {}).text || ''")


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def set_dropdown(page, elem_id: str, value: str) -> None:
    """Type a custom value: blurring keeps it (Enter would pick the first preset that matches,
    e.g. layers:15 for layers:1)."""
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.blur()
    assert box.input_value() == value


def set_spec(page, elem_id: str, value: str) -> None:
    """Type a spec into a Setup box and press Enter: it stays as typed (a plain text box: a dropdown with
    custom values would complete smollm2-135 to the first preset that matches)."""
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(300)
    assert box.input_value() == value


def test_api_names_are_stable(server_url):
    from gradio_client import Client

    client = Client(server_url, verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert API_NAMES <= set(endpoints)
    assert client.predict(api_name="/stop") == distill.NOTHING_TO_STOP  # nothing runs in a fresh API session

    def inputs_by_name(endpoint: str, inputs) -> list[str]:
        """A dict-input endpoint's API inputs, each named by the input its (unique) label belongs to."""
        by_label = {component.label: name for name, component in inputs.components.items()}
        assert len(by_label) == len(inputs.components)
        return [by_label[p["label"]] for p in endpoints[endpoint]["parameters"]]

    # run_session takes the pair, the preset, every knob and the data inputs (the State is not part of the API)
    assert inputs_by_name("/run_session", tabs().distill.recipe) == RUN_SESSION_INPUTS
    assert inputs_by_name("/size_sweep", tabs().sizes) == ["teacher", *RUN_SESSION_INPUTS[2:], "specs"]
    data = RUN_SESSION_INPUTS[RUN_SESSION_INPUTS.index("corpus_choice"):RUN_SESSION_INPUTS.index("temperature")]
    assert inputs_by_name("/augment_preview", tabs().distill.preview) == ["teacher", "preset", "seed", *data]
    assert set(RUN_SESSION_INPUTS) == {"teacher", "student", "preset", *knobs.KNOB_FIELDS, "corpus_choice", "upload",
                                       "pasted", *knobs.DATA_FIELDS}
    values = client.predict("hinton", api_name="/preset")
    assert dict(zip(knobs.KNOB_FIELDS, values)) == dict(zip(knobs.KNOB_FIELDS, distill.apply_preset("hinton")))
    assert values[-1].startswith("**hinton:**")
    note, archive, config = client.predict(api_name="/export")  # a fresh API session has no run
    assert note.startswith("**Error:** no session has finished") and archive is None and config is None
    assert inputs_by_name("/attention", tabs().attention) == ATTENTION_INPUTS


def test_every_tab_renders(page):
    for name, selector in TABS.items():
        page.get_by_role("tab", name=name).click()
        page.locator(selector).first.wait_for(state="visible", timeout=30_000)
    page.get_by_role("tab", name="Setup").click()


def test_setup_distill_and_dark_knowledge_in_browser(page, tiny_teacher_dir):
    # Setup: type the tiny teacher and a 1-layer student, check the pair
    set_spec(page, "teacher-spec", "smollm2-135")  # Enter keeps a misspelled spec, which is flagged at once
    page.locator("#spec-warning").get_by_text("did you mean 'smollm2-135m'?").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Distill").click()  # the Distill tab warns about the pair before Run
    page.locator("#pair-note").get_by_text("did you mean 'smollm2-135m'?").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Setup").click()
    set_spec(page, "teacher-spec", str(tiny_teacher_dir))
    set_spec(page, "student-spec", "layers:1")
    page.get_by_role("button", name="Check compatibility").click()
    report = page.locator("#compat-report")
    report.get_by_text("same vocabulary").wait_for(timeout=60_000)
    assert "layers:1" in report.inner_text() and page.locator("#spec-warning").inner_text().strip() == ""
    page.screenshot(path=str(SHOTS / "1-setup.png"), full_page=True)
    # another student: the report says it is for the pair checked before; the preset picker fills the box
    page.locator("#student-preset input").click()
    page.get_by_role("option", name="layers:6", exact=True).click()
    report.get_by_text("This report is for the pair checked before").wait_for(timeout=30_000)
    assert page.locator("#student-spec input").input_value() == "layers:6"
    set_spec(page, "student-spec", "layers:1")  # back to the checked pair: the plain report
    wait_until(lambda: "checked before" not in report.inner_text(), 30, "the report for the checked pair")

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
    page.get_by_text("Data and augmentation").first.click()
    page.get_by_label(knobs.CORPUS_PASTE).check()
    page.locator("#corpus-paste textarea").fill(SAMPLE_TEXT)
    page.locator("#augment-methods").get_by_label("word_swap", exact=False).check()
    page.locator("#augment-preview-btn").click()
    page.locator("#augment-preview").get_by_text("words changed").first.wait_for(timeout=60_000)
    page.locator("#augment-methods").get_by_label("word_swap", exact=False).uncheck()
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


def test_inspection_tabs_in_browser(page):
    """After the session above (same page, same user): the dark-knowledge temperature, Attention,
    Similarity, Evaluate and generations, and the export, each with its figures and Learn text."""
    # Dark knowledge: the temperature recomputes at once; the wrong-answer ranking is drawn
    page.get_by_role("tab", name="Dark knowledge").click()
    assert plot_traces(page, "wrong-plot")
    box = page.locator("#probe-temperature input[type=number]")
    box.fill("3")
    box.press("Enter")
    wait_until(lambda: "T=3" in plot_title(page, "bars-plot"), what="the bars at T=3")

    # Attention: the layer map's last pair fills the empty boxes; three maps, difference, overview
    page.get_by_role("tab", name="Attention").click()
    page.get_by_text("Learn: reading attention maps").first.click()
    page.get_by_text("what the eater ate").first.wait_for(timeout=10_000)
    page.locator("#attention-btn").click()
    page.locator("#attention-note").get_by_text("Student (after)").wait_for(timeout=60_000)
    assert visible_traces(page, "attention-plot") == ["teacher", "student (before)", "student (after)"]
    assert "Teacher layer 3, student layer 0" in page.locator("#attention-note").inner_text()  # the pair 0:3
    assert visible_traces(page, "difference-plot") == ["difference"]
    assert len(plot_traces(page, "entropy-plot")) == 3
    # every figure can be saved: plotly's camera button shows on hover
    page.locator("#attention-plot .js-plotly-plot").hover()
    page.locator("#attention-plot .modebar-btn[data-title^='Download plot']").wait_for(
        state="visible", timeout=10_000)
    page.screenshot(path=str(SHOTS / "5-attention.png"), full_page=True)

    # Similarity: CKA before and after, the mapped pairs, the snapshots of the session
    page.get_by_role("tab", name="Similarity").click()
    page.locator("#similarity-btn").click()
    page.locator("#similarity-note").get_by_text("first token is left out").wait_for(timeout=60_000)
    assert [n for n in plot_traces(page, "cka-plot") if not n.startswith("mapped")] == ["student (before)",
                                                                                          "student (after)"]
    assert plot_traces(page, "cka-steps-plot") == ["0:3"]
    page.get_by_text("Learn: hidden-state similarity").first.click()
    page.get_by_text("Davari et al. 2023").first.wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "6-similarity.png"), full_page=True)

    # Evaluate: the table and the trade sentence; generations side by side
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#evaluate-btn").click()
    page.locator("#evaluate-table").get_by_text("keeps").wait_for(timeout=120_000)
    table = page.locator("#evaluate-table").inner_text()
    assert "student (after)" in table and "held-out perplexity" in table
    page.locator("#generate-tokens input").fill("8")
    page.locator("#generate-btn").click()
    page.locator("#generate-view").get_by_text("student (after)").wait_for(timeout=120_000)
    assert page.locator("#generate-view").inner_text().count("tokens/s") == 6  # 3 models x greedy, sampled
    page.screenshot(path=str(SHOTS / "7-evaluate.png"), full_page=True)

    # Export: the student's zip and the config, as downloads
    page.get_by_role("tab", name="Distill").click()
    page.locator("#export-btn").click()
    page.locator("#export-note").get_by_text("Exported").wait_for(timeout=120_000)
    assert page.locator("#export-zip a[download]").first.get_attribute("href").endswith("-student.zip")
    assert page.locator("#export-config a[download]").first.get_attribute("href").endswith("-config.yaml")
    page.locator("#export-section").first.screenshot(path=str(SHOTS / "8-export.png"))
    assert page.locator("#export").count() == 0 and page.locator("#export-section").count() == 1  # one id each


def test_a_reload_reopens_the_run(page):
    """The browser keeps its runs across a reload: the page reopens the last one, whose curves, summary and
    views show again, and Earlier runs lists it."""
    page.reload()
    page.get_by_text("Distill Studio").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Distill").click()
    page.locator("#run-status").get_by_text("Opened the earlier run").wait_for(timeout=60_000)
    assert "Before / after" in page.locator("#run-summary").inner_text()
    assert "held-out text ppl" in plot_traces(page, "loss-plot")
    page.get_by_text("Earlier runs").first.click()
    page.locator("#earlier-note").get_by_text("Opened").wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "9-reloaded.png"), full_page=True)
    page.get_by_role("tab", name="Dark knowledge").click()
    page.locator("#probe-btn").click()
    page.locator("#probe-stats").get_by_text("student (after)").wait_for(timeout=60_000)
