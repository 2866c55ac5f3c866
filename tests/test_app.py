"""The app's handlers, called directly (no browser) on a tiny config-built teacher. Handlers that take one
dict (Gradio's dict inputs: run_session, size_sweep, augment_preview, attention) get it built from values by
name through the tab's inputs (`values_of`)."""

from __future__ import annotations

import ast
import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import app
from distill_core import api
from distill_core.config import DistillConfig
from distill_core.data import read_prompts
from distill_core.errors import DistillError
from distill_core.specs import initial_student_spec
from tests.conftest import REPO, SAMPLE_TEXT
from ui import attention, common, data, distill, evaluate, grading, knobs, setup, similarity, sizes
from ui.common import Inputs, UserSession
from ui.dark import probe_dark_knowledge
from ui.runview import SWEEP_TABLE_HEADERS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")  # gr.Warning outside a UI

STATUS, LOSS, PROBE, SUMMARY, RUN_BTN, STOP_BTN = range(6)


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@functools.lru_cache(maxsize=1)
def tabs() -> app.Tabs:
    """The app's tabs, built once outside any server: the inputs of its dict-input handlers by name."""
    with gr.Blocks():
        return app.build_tabs()


def values_of(inputs: Inputs, named: dict[str, Any]) -> dict[Any, Any]:
    """A dict-input handler's argument {component: value}, from values by name (DistillConfig fields, or the
    UI's own: preset, corpus_choice, upload, pasted, specs, user, ...)."""
    return {inputs.components[name]: value for name, value in named.items()}


def ui_values(teacher_dir: Path, **changes):
    """The Distill tab's inputs by name (run_session's) for a seconds-long session: the quickstart preset's
    knobs with a short, small session on pasted text."""
    quickstart = api.preset_config()
    values = dict(teacher=str(teacher_dir), student="layers:1", preset="quickstart",
                  **{name: getattr(quickstart, name) for name in knobs.KNOB_FIELDS},
                  corpus_choice=knobs.CORPUS_PASTE, upload=None, pasted=SAMPLE_TEXT)
    values.update(steps=3, batch_size=4, seq_len=32, learning_rate=3e-3, temperature=2.0)
    values.update(changes)
    return values


def run_distillation(named: dict[str, Any], user: UserSession | None = None):
    """The run_session handler on the Distill tab's inputs by name (and this user's state)."""
    recipe = tabs().distill.recipe
    return distill.run_distillation(recipe, values_of(recipe, {**named, "user": user or UserSession()}))


def run_size_sweep(named: dict[str, Any], user: UserSession | None = None):
    sweep = tabs().sizes
    return sizes.run_size_sweep(sweep, values_of(sweep, {**named, "user": user or UserSession()}))


def preview_augmentation(named: dict[str, Any]):
    preview = tabs().distill.preview
    return data.preview_augmentation(preview, values_of(preview, named))


def show_attention(text, layers_heads, average_heads, pair, user=None):
    """The attention handler: (teacher layer, teacher head, student layer, student head), the pair's specs."""
    names = ("teacher_layer", "teacher_head", "student_layer", "student_head")
    named = dict(zip(names, layers_heads), text=text, average_heads=average_heads, teacher=pair[0], student=pair[1],
                 user=user or UserSession())
    return attention.show_attention(tabs().attention, values_of(tabs().attention, named))


def drain(generator) -> list[tuple]:
    return [tuple(outputs) for outputs in generator]


@pytest.fixture(scope="module")
def finished_session(tiny_teacher_dir, tmp_path_factory):
    """One tiny session run through the handler; its user state and every yielded output."""
    with pytest.MonkeyPatch.context() as mp:
        runs = tmp_path_factory.mktemp("runs")
        mp.setenv("DISTILL_STUDIO_RUNS", str(runs))
        user = UserSession()
        outputs = drain(run_distillation(ui_values(tiny_teacher_dir), user))
    return user, outputs, runs


# ---- Setup -----------------------------------------------------------------------------------

def test_compatibility_shows_report(tiny_teacher_dir):
    markdown, report = setup.check_compatibility(str(tiny_teacher_dir), "layers:2")
    assert report["teacher"]["layers"] == 4 and report["student"]["layers"] == 2
    assert "| layers | 4 | 2 |" in markdown
    assert "same vocabulary ✓" in markdown
    assert "keeps teacher layers" in markdown  # the derivation note


def test_a_student_with_its_own_tokenizer_gets_the_bridge_and_the_alignment_view(tiny_teacher_dir, monkeypatch):
    from distill_core import students
    from distill_core.data import split_documents

    monkeypatch.setattr(students, "corpus_documents", lambda spec, config=None: (split_documents(SAMPLE_TEXT), "text"))
    spec = "fresh:layers=2,hidden=32,heads=2,vocab=bpe:400"
    markdown, report = setup.check_compatibility(str(tiny_teacher_dir), spec)
    assert "different vocabularies" in markdown and "**Tokenizer bridge:** `span`" in markdown
    assert "align one to one" in markdown and "**FitNets:** on: only at the ends of aligned spans" in markdown
    note, figure = setup.show_alignment(setup.ALIGNMENT_TEXT, str(tiny_teacher_dir), spec)
    assert note.startswith("Bridge **span**") and "bytes align one to one" in figure.layout.title.text
    assert list(figure.layout.yaxis.ticktext) == ["teacher", "student"]
    note, figure = setup.show_alignment(setup.ALIGNMENT_TEXT, str(tiny_teacher_dir), "layers:2")
    assert note.startswith("Same vocabulary") and figure.layout.title.text.startswith("100% of the text's 42 bytes")
    note, figure = setup.show_alignment("", str(tiny_teacher_dir), "layers:2")
    assert note.startswith("**Error:**") and figure is None


@pytest.mark.parametrize("teacher_spec, student_spec, expected", [
    ("smollm2-999", "layers:20", "smollm2-999"),
    (None, "layers:1", "empty"),
    ("TINY", "layers:99", "more layers than the teacher has"),
    ("TINY", "fresh:layers=2,hidden=30,heads=4", "divisible"),
])
def test_compatibility_bad_spec_gives_message(tiny_teacher_dir, teacher_spec, student_spec, expected):
    teacher_spec = str(tiny_teacher_dir) if teacher_spec == "TINY" else teacher_spec
    markdown, report = setup.check_compatibility(teacher_spec, student_spec)
    assert report is None
    assert markdown.startswith("**Error:**") and expected in markdown


def test_compatibility_report_says_when_it_is_for_the_pair_before(tiny_teacher_dir):
    """Editing a spec after a check: the report stays, under a line naming the pair it is for; back to
    that pair, the plain report; no report (none yet, or an error for the pair before): nothing."""
    teacher = str(tiny_teacher_dir)
    markdown, report = setup.check_compatibility(teacher, "layers:2")
    stale = setup.report_for_pair(teacher, "layers:3", report)
    assert stale.startswith("⚠ **This report is for the pair checked before**")
    assert f"`{teacher}` → `layers:2`, not for `{teacher}` → `layers:3`" in stale and stale.endswith(markdown)
    assert "press **Check compatibility**" in stale
    assert "checked before" in setup.report_for_pair("smollm2-135m", "layers:2", report)  # the teacher changed
    assert setup.report_for_pair(teacher, " layers:2 ", report) == markdown  # the same pair again
    assert setup.report_for_pair(teacher, "layers:3", None) == ""


def test_misspelled_spec_is_flagged_under_the_pickers(tiny_teacher_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warning = setup.spec_warnings("smollm2-13m", "layers:20")
    assert warning.startswith("⚠ **Teacher:** unknown model spec 'smollm2-13m' (did you mean 'smollm2-135m'?)")
    assert "Student" not in warning
    both = setup.spec_warnings("layers:2", "layers:two")
    assert "**Teacher:** 'layers:2' derives a student" in both and "**Student:** 'layers:two': expected layers:N" in both
    assert setup.spec_warnings(str(tiny_teacher_dir), "layers:2") == ""


def test_spec_boxes_keep_what_is_typed_and_presets_fill_them():
    """Plain text boxes (a dropdown with custom values completes `smollm2-135` to the first preset on Enter);
    the presets are offered in pickers of their own, which fill the box and empty themselves."""
    pair = tabs().pair
    assert isinstance(pair.teacher, gr.Textbox) and isinstance(pair.student, gr.Textbox)
    assert (pair.teacher.elem_id, pair.student.elem_id) == ("teacher-spec", "student-spec")
    assert setup.pick_preset("layers:15") == ("layers:15", gr.update(value=None))
    assert setup.pick_preset(None)[0] == gr.skip()
    assert "layers:20" in setup.STUDENT_PRESETS and "smollm2-135m" in setup.TEACHER_PRESETS


# ---- Distill ---------------------------------------------------------------------------------

def test_config_from_ui_applies_values_over_quickstart(tiny_teacher_dir):
    values = ui_values(tiny_teacher_dir, steps=7.0, corpus_choice=knobs.CORPUS_GENERATED)
    config = knobs.recipe_config(values)
    assert config.steps == 7 and isinstance(config.steps, int)
    assert config.corpus == "teacher-generated" and config.corpus_text == ""
    assert config.eval_every == api.preset_config().eval_every  # untouched fields keep the YAML's value


def test_knobs_are_generated_from_the_config():
    """Every knob is a DistillConfig field; its help is the field's docstring, its default the quickstart's, a
    dropdown's choices the engine's (api.CHOICES; the layer map's named specs open to pairs like 0:0,5:12)."""
    recipe, help_text, quickstart = tabs().distill.recipe, api.field_help(), api.preset_config()
    assert set(knobs.KNOB_FIELDS) <= set(DistillConfig.__dataclass_fields__)
    assert {"divergence", "jsd_beta", "skew_alpha", "top_k", "teacher_cache", "attention_weight", "attention_loss",
            "hidden_weight", "hidden_loss", "layer_map", "freeze_embeddings", "warmup_steps",
            "seed"} <= set(knobs.KNOB_FIELDS)
    for knob in knobs.KNOBS:
        component = recipe.components[knob.field]
        assert component.info == help_text[knob.field] and component.label == knob.label, knob.field
        assert component.elem_id == knob.field.replace("_", "-") and component.value == getattr(quickstart, knob.field)
        if knob.widget == "dropdown":
            choices = [value for _, value in component.choices]
            if knob.field in api.CHOICES:
                assert choices == list(api.CHOICES[knob.field]) and not component.allow_custom_value
            else:
                assert choices == list(api.SUGGESTIONS[knob.field]) and component.allow_custom_value
    dropdowns = {knob.field for knob in knobs.KNOBS if knob.widget == "dropdown"}
    assert dropdowns == (set(api.CHOICES) - {"precision", "device"}) | set(api.SUGGESTIONS)


def test_run_session_and_size_sweep_take_every_knob():
    """run_session's inputs: the pair, the preset, every knob, the Data and augmentation section, the user's
    state; size_sweep's: the same with the student list instead of the student."""
    data = {"corpus_choice", "upload", "pasted", *knobs.DATA_FIELDS}
    assert set(knobs.DATA_FIELDS) <= set(DistillConfig.__dataclass_fields__)
    recipe = tabs().distill.recipe
    assert set(recipe.components) == {"user", "teacher", "student", "preset", *knobs.KNOB_FIELDS, *data}
    assert set(tabs().sizes.components) == set(recipe.components) - {"student"} | {"specs"}
    assert tabs().sizes.components["teacher"] is recipe.components["teacher"]
    assert set(tabs().distill.preview.components) == {"teacher", "preset", "seed", *data}


def handler_parameters() -> dict[str, int]:
    """Every function (and lambda) in app.py and ui/*.py -> how many parameters it takes (*args and **kwargs
    count as one each)."""
    counts = {}
    for path in [REPO / "app.py", *sorted((REPO / "ui").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = node.args
                name = f"{path.name}:{getattr(node, 'name', 'lambda')}:{node.lineno}"
                counts[name] = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None)
                                + (a.kwarg is not None))
    return counts


def test_no_function_of_the_app_takes_more_than_eight_parameters():
    counts = handler_parameters()
    assert len(counts) > 50  # every module was read
    assert {name: n for name, n in counts.items() if n > 8} == {}
    for path in [REPO / "app.py", *(REPO / "ui").glob("*.py")]:  # nor gathers them with locals()
        assert "locals()" not in path.read_text(encoding="utf-8"), path.name


def test_every_knob_flows_into_the_config(tiny_teacher_dir):
    chosen = dict(steps=9, batch_size=2, seq_len=48, learning_rate=1e-3, warmup_steps=2, seed=7, temperature=3.5,
                  kd_weight=0.6, divergence="jsd", jsd_beta=0.3, skew_alpha=0.2, tokenizer_bridge="shared_ids",
                  top_k=16, teacher_cache=True,
                  attention_weight=0.0, attention_loss="mse", hidden_weight=0.0, hidden_loss="cosine",
                  layer_map="0:0,1:3", freeze_embeddings=False, freeze_layers=1, on_policy_fraction=0.25,
                  on_policy_divergence="forward_kl", rollout_tokens=12)
    assert set(chosen) == set(knobs.KNOB_FIELDS)
    config = knobs.recipe_config(ui_values(tiny_teacher_dir, **chosen))
    assert {name: getattr(config, name) for name in knobs.KNOB_FIELDS} == chosen
    assert config.student == "layers:1" and config.corpus_text == SAMPLE_TEXT


def test_config_from_ui_starts_from_the_preset(tiny_teacher_dir):
    """Fields without a knob (here eval_every) come from the picked preset's file."""
    assert knobs.recipe_config(ui_values(tiny_teacher_dir)).eval_every == api.preset_config().eval_every == 17
    hinton = DistillConfig.from_yaml(api.CONFIGS / "hinton.yaml")
    assert knobs.recipe_config(ui_values(tiny_teacher_dir, preset="hinton")).eval_every == hinton.eval_every == 20


def test_preset_names_list_every_config_quickstart_first():
    names = api.preset_names()
    assert names[:6] == ["quickstart", "hinton", "dark-knowledge-topk", "attention-transfer", "fitnets", "all-combined"]
    assert sorted(names) == sorted(path.stem for path in api.CONFIGS.glob("*.yaml"))
    assert api.preset_description("quickstart").startswith("The default CPU session")
    assert api.preset_description("hinton").startswith("Soft targets (Hinton et al. 2015)")


@pytest.mark.parametrize("name", api.preset_names())
def test_preset_fills_every_knob_from_its_file(name):
    values = distill.apply_preset(name)
    assert len(values) == len(knobs.KNOB_FIELDS) + 1
    config = DistillConfig.from_yaml(api.CONFIGS / f"{name}.yaml")
    assert dict(zip(knobs.KNOB_FIELDS, values)) == {knob: getattr(config, knob) for knob in knobs.KNOB_FIELDS}
    first_comment = next(line for line in (api.CONFIGS / f"{name}.yaml").read_text().splitlines()
                         if line.startswith("#"))
    assert first_comment.lstrip("# ").rstrip(":.") in values[-1] and f"**{name}:**" in values[-1]


def test_preset_values_differ_where_the_files_differ():
    presets = {name: dict(zip(knobs.KNOB_FIELDS, distill.apply_preset(name))) for name in api.preset_names()}
    assert presets["hinton"]["temperature"] == 2.0 and presets["quickstart"]["temperature"] == 1.0
    assert presets["dark-knowledge-topk"]["top_k"] == 64
    attention_transfer = presets["attention-transfer"]
    assert attention_transfer["attention_weight"] == 1.0 and attention_transfer["hidden_weight"] == 0
    assert presets["fitnets"]["hidden_weight"] == 1.0 and presets["fitnets"]["hidden_loss"] == "cosine"
    assert presets["quickstart"]["warmup_steps"] == 3 and presets["hinton"]["warmup_steps"] == 5


def test_unknown_preset_shows_message():
    values = distill.apply_preset("nope")
    assert values[-1].startswith("**Error:**") and "unknown preset 'nope'" in values[-1]


# ---- Distill: layer map ----------------------------------------------------------------------

def test_layer_map_shows_resolved_pairs(tiny_teacher_dir):
    teacher = str(tiny_teacher_dir)
    _, report = setup.check_compatibility(teacher, "layers:2")
    kept = " ".join(f"`{s}:{t}`" for s, t in report["layer_map"])
    assert kept in distill.layer_map_markdown(teacher, "layers:2", "auto")
    assert "**2 layer pairs**" in distill.layer_map_markdown(teacher, "layers:2", "kept")
    assert "`0:1` `1:3`" in distill.layer_map_markdown(teacher, "layers:2", "uniform")
    assert "**1 layer pair**" in distill.layer_map_markdown(teacher, "layers:2", "last")
    assert "`1:2`" in distill.layer_map_markdown(teacher, "layers:2", "1:2")


@pytest.mark.parametrize("spec, expected", [
    ("0:9", "the teacher has layers 0..3"),
    ("5:0", "the student has layers 0..1"),
    ("zero:one", "expected auto, kept, uniform, last or pairs like 0:0,5:12"),
    ("0:0,0:1", "a student layer is listed twice"),
])
def test_layer_map_bad_spec_shows_the_engines_message(tiny_teacher_dir, spec, expected):
    markdown = distill.layer_map_markdown(str(tiny_teacher_dir), "layers:2", spec)
    assert markdown.startswith("**Error:**") and expected in markdown


def test_layer_map_waits_for_a_checked_pair(tiny_teacher_dir):
    teacher = str(tiny_teacher_dir)
    assert "once the pair is checked" in distill.layer_map_if_known(teacher, "layers:3", "auto")
    setup.check_compatibility(teacher, "layers:3")
    assert "**3 layer pairs**" in distill.layer_map_if_known(teacher, "layers:3", "auto")
    bad_student = distill.layer_map_markdown(teacher, "layers:99", "auto")
    assert bad_student.startswith("**Error:**") and "more layers than the teacher has" in bad_student


def test_run_session_streams_progress_and_ends_with_summary(finished_session):
    user, outputs, runs = finished_session
    statuses = [o[STATUS] for o in outputs]
    assert statuses[0].startswith("**Step 0/3**")
    final = outputs[-1]
    assert final[STATUS].startswith("**Done:** 3/3 steps")
    summary = final[SUMMARY]
    assert "### Before / after (3/3 steps" in summary
    for row in ("held-out perplexity", "top-1 agreement", "KL(teacher ‖ student)", "parameters"):
        assert row in summary
    loss_fig = final[LOSS]
    assert isinstance(loss_fig, go.Figure)
    total = next(t for t in loss_fig.data if t.name == "total")
    assert list(total.x) == [1, 2, 3]
    assert final[PROBE]["visible"] is True and isinstance(final[PROBE]["value"], go.Figure)
    assert final[RUN_BTN]["interactive"] is True and final[STOP_BTN]["interactive"] is False
    # the run folder is named in the message and holds the saved student
    out_dir = Path(user.last_run["out_dir"])
    assert out_dir.parent == runs and (out_dir / "student" / "config.json").is_file()
    assert out_dir.name in final[STATUS]
    # every phase is named while it runs, and the finished run says where the time went
    running = " ".join(statuses[:-1])
    for phase in ("now: loading the teacher", "now: corpus", "now: evaluation", "now: training"):
        assert phase in running, phase
    assert re.search(r"Phases: .*evaluation \d+ s · training \d+ s", final[STATUS]), final[STATUS]


def test_run_session_stop_saves_the_student(tiny_teacher_dir, monkeypatch):
    monkeypatch.setattr(distill, "STATUS_INTERVAL_S", 0.0)  # yield every step
    user = UserSession()
    generator = run_distillation(ui_values(tiny_teacher_dir, steps=200), user)
    outputs = []
    for output in generator:
        outputs.append(output)
        if output[STATUS].startswith("**Step 1/200**"):
            # the engine is paused at its step-1 event: it sees the flag before step 2
            assert distill.request_stop(user).startswith("**Stop requested:**")
    final = outputs[-1]
    assert final[STATUS].startswith("**Stopped** at step 1/200")
    assert "### Before / after (1/200 steps" in final[SUMMARY]
    assert (Path(user.last_run["out_dir"]) / "student" / "config.json").is_file()


@pytest.mark.parametrize("changes, expected", [
    ({"steps": "abc"}, "steps must be an int, got 'abc'"),
    ({"learning_rate": None}, "learning_rate is empty: enter a number"),
    ({"kd_weight": 1.5}, "kd_weight must be between 0 and 1"),
    ({"divergence": "bogus"}, "divergence must be one of forward_kl"),
    ({"jsd_beta": 1.0}, "jsd_beta must be strictly between 0 and 1"),
    ({"skew_alpha": -0.1}, "skew_alpha must be in [0, 1)"),
    ({"top_k": "abc"}, "top_k must be an int, got 'abc'"),
    ({"top_k": 2.5}, "top_k must be an int, got 2.5"),
    ({"teacher_cache": True, "top_k": 0}, "teacher_cache needs top_k > 0"),
    ({"attention_weight": -1}, "attention_weight must be a non-negative finite number"),
    ({"attention_loss": "l2"}, "attention_loss must be one of kl, mse"),
    ({"hidden_loss": "l1"}, "hidden_loss must be one of mse, cosine"),
    ({"warmup_steps": -2}, "warmup_steps must be a non-negative integer"),
    ({"seed": None}, "seed is empty: enter a number"),
    ({"freeze_layers": "x"}, "freeze_layers must be an int"),
    ({"preset": "nope"}, "unknown preset 'nope'"),
    ({"layer_map": "0:0,bad"}, "layer_map '0:0,bad': expected auto, kept, uniform, last or pairs"),
    ({"pasted": "   "}, "pasted text is empty"),
    ({"corpus_choice": knobs.CORPUS_UPLOAD}, "no file uploaded"),
    ({"student": "layers:99"}, "more layers than the teacher has"),
])
def test_run_session_bad_input_shows_message(tiny_teacher_dir, runs_in_tmp, changes, expected):
    outputs = drain(run_distillation(ui_values(tiny_teacher_dir, **changes), UserSession()))
    final = outputs[-1]
    assert final[STATUS].startswith("**Error:**") and expected in final[STATUS]
    assert final[RUN_BTN]["interactive"] is True
    assert not runs_in_tmp.exists() or not any(runs_in_tmp.iterdir())  # a failed start leaves no run folder


def test_run_session_checked_pair_rejects_a_bad_layer_map_at_once(tiny_teacher_dir, runs_in_tmp):
    setup.check_compatibility(str(tiny_teacher_dir), "layers:1")
    outputs = drain(run_distillation(ui_values(tiny_teacher_dir, layer_map="0:9"), UserSession()))
    assert len(outputs) == 1  # no session was started
    assert outputs[0][STATUS].startswith("**Error:**") and "the teacher has layers 0..3" in outputs[0][STATUS]
    assert not runs_in_tmp.exists() or not any(runs_in_tmp.iterdir())


@pytest.mark.parametrize("content, expected", [(b"", "is empty"), (b"\x00\x01binary\x00", "looks binary")])
def test_run_session_bad_upload_shows_message(tiny_teacher_dir, tmp_path, content, expected):
    upload = tmp_path / "corpus.txt"
    upload.write_bytes(content)
    values = ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_UPLOAD, upload=str(upload))
    final = drain(run_distillation(values, UserSession()))[-1]
    assert final[STATUS].startswith("**Error:**") and expected in final[STATUS]


# ---- Distill: data and augmentation ------------------------------------------------------------

@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """No hub (load_hub_dataset and back-translation fail at once) and an empty cache (no generated corpus,
    no cached augmentations)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))


def preview_values(teacher_dir: Path, **changes):
    values = dict(teacher=str(teacher_dir), preset="quickstart", seed=0, corpus_choice=knobs.CORPUS_PASTE, upload=None,
                  pasted=SAMPLE_TEXT, corpus_column=None, hub_dataset="", hub_config="", hub_split="train",
                  hub_max_rows=2000, augment=["word_swap"], augment_strength=0.3, augment_copies=1)
    values.update(changes)
    return values


def test_config_from_ui_passes_the_corpus_source_and_augmentation(tiny_teacher_dir, tmp_path):
    upload = tmp_path / "reviews.csv"
    upload.write_text("title,review\nA,Good food.\n", encoding="utf-8")
    config = knobs.recipe_config(ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_UPLOAD, upload=str(upload),
                                            corpus_column="review", augment=["synonym", "word_swap"],
                                            augment_strength=0.25, augment_copies=2.0))
    assert config.corpus == str(upload) and config.corpus_column == "review" and config.corpus_text == ""
    assert config.augment_methods == ["synonym", "word_swap"] and config.augment_strength == 0.25
    assert config.augment_copies == 2 and isinstance(config.augment_copies, int)
    config = knobs.recipe_config(ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_HUB, hub_dataset=" wikitext ",
                                            hub_config="wikitext-2-raw-v1", hub_split="", hub_max_rows=50.0,
                                            corpus_column="text", augment=[]))
    assert (config.hub_dataset, config.hub_config, config.hub_split, config.hub_max_rows, config.corpus_column) == (
        "wikitext", "wikitext-2-raw-v1", "train", 50, "text")
    assert config.corpus == "teacher-generated" and config.augment == ""
    with pytest.raises(DistillError, match="no Hugging Face dataset id"):
        knobs.recipe_config(ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_HUB, hub_dataset=" "))
    with pytest.raises(DistillError, match="unknown augmentation method"):
        knobs.recipe_config(ui_values(tiny_teacher_dir, augment=["nope"]))


def test_augment_preview_shows_every_method_on_the_tiny_teacher(tiny_teacher_dir, offline_cache):
    methods = ["word_swap", "word_delete", "char_keyboard", "teacher_substitute", "back_translation"]
    note, table = preview_augmentation(preview_values(tiny_teacher_dir, augment=methods))
    assert note.startswith("**Preview:** 5 methods at strength 0.3") and "the pasted text" in note
    assert "**Failed:** back_translation" in note
    for method in methods:
        assert f'data-method="{method}"' in table
    rows = table.split("<tr>")[2:]  # after the header row
    assert len(rows) == 4 * data.PREVIEW_TEXTS + 1  # back-translation offline: one row with its message
    assert "<mark" in table and "words changed" in table
    assert "failed:</b>" in table and "unreachable" in table


def test_augment_preview_teacher_generated_previews_the_prompts(tiny_teacher_dir, offline_cache):
    note, table = preview_augmentation(preview_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_GENERATED,
                                                            augment=["word_delete"]))
    assert "the prompts the teacher will continue" in note  # nothing generated in the empty cache
    first_prompt = read_prompts(api.preset_config().prompts_file)[0]
    assert first_prompt.split()[0] in table


def test_augment_preview_counts_and_marks_words_not_spacing(tiny_teacher_dir, offline_cache):
    """The tokenizer round trip of nlpaug moves spaces around quotes and punctuation: no word changed."""
    left, right, changes = data.word_diff_html('the creaking doors. The old "Martha', 'the creaking doors The. old " Martha')
    assert (changes.words, changes.changed, changes.punctuation) == (6, 0, 2)
    assert "<mark" not in right and right.count("background:#cbd5e1") == 1  # the moved period, in grey
    assert data.change_note(changes) == "no word changed; 2 punctuation marks added, dropped or moved (grey, not counted)"
    left, right, changes = data.word_diff_html("Plant cell walls", "Works cell ramparts")
    assert data.change_note(changes) == "2 of 3 words changed"
    assert right == ('<mark style="background:#fde68a;color:#111">Works</mark> cell '
                     '<mark style="background:#fde68a;color:#111">ramparts</mark>')
    text = 'She said "Martha is here." Then the old keeper climbed the stairs and greeted the lady at the door.'
    note, table = preview_augmentation(preview_values(tiny_teacher_dir, pasted=text, augment=["word_split", "synonym"],
                                                      augment_strength=0.1))
    assert "spacing that an augmenter's re-joining of the words changed" in note and data.SYNONYM_NOTE in note
    counts = [int(n) for n in re.findall(r"(\d+) of 19 words changed", table)]
    assert len(counts) == 2 and all(1 <= n <= 4 for n in counts), table  # about 10% of the words, no spacing


@pytest.mark.parametrize("changes, expected", [
    ({"augment": []}, "Tick at least one augmenter"),
    ({"pasted": "  "}, "pasted text is empty"),
    ({"augment_strength": 0}, "augment_strength must be in (0, 1]"),
    ({"corpus_choice": knobs.CORPUS_HUB, "hub_dataset": "wikitext"}, "the hub is unreachable"),
])
def test_augment_preview_bad_input_shows_message(tiny_teacher_dir, offline_cache, changes, expected):
    note, table = preview_augmentation(preview_values(tiny_teacher_dir, **changes))
    assert expected in note and table == ""


def test_upload_csv_fills_the_column_picker_and_counts_tokens(tiny_teacher_dir, tmp_path):
    upload = tmp_path / "reviews.csv"
    rows = [f"Title {i},\"The soup was warm and the bread was fresh, said guest number {i}.\"" for i in range(60)]
    upload.write_text("title,review\n" + "\n".join(rows) + "\n", encoding="utf-8")
    picker, note = data.inspect_corpus_file(str(upload), None, str(tiny_teacher_dir), 32)
    assert picker["choices"] in (["title", "review"], [("title", "title"), ("review", "review")])
    assert note.startswith("**Error:**") and "several text columns" in note  # the user picks one
    picker, note = data.inspect_corpus_file(str(upload), "review", str(tiny_teacher_dir), 32)
    assert picker["value"] == "review"
    assert "CSV, column `review` of 2 text columns, 60 rows → 60 documents" in note
    assert "tokens with the teacher's tokenizer" in note and "blocks of 32" in note
    config = knobs.recipe_config(ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_UPLOAD, upload=str(upload),
                                            corpus_column="review"))
    assert config.corpus_column == "review"


@pytest.mark.parametrize("name, content, expected", [
    ("corpus.csv", b"\x00\x01binary\x00", "looks binary"),
    ("corpus.txt", b"", "is empty"),
    ("corpus.xlsx", b"PK\x03\x04", "unknown file type '.xlsx'"),
    ("corpus.parquet", b"not parquet", "is not a Parquet file"),
])
def test_upload_bad_file_shows_message(tiny_teacher_dir, tmp_path, name, content, expected):
    upload = tmp_path / name
    upload.write_bytes(content)
    _, note = data.inspect_corpus_file(str(upload), None, str(tiny_teacher_dir), 32)
    assert note.startswith("**Error:**") and expected in note


def test_run_session_hub_dataset_offline_shows_the_engines_message(tiny_teacher_dir, offline_cache, runs_in_tmp):
    values = ui_values(tiny_teacher_dir, corpus_choice=knobs.CORPUS_HUB, hub_dataset="wikitext",
                       hub_config="wikitext-2-raw-v1")
    final = drain(run_distillation(values, UserSession()))[-1]
    assert final[STATUS].startswith("**Error:**") and "the hub is unreachable" in final[STATUS]
    assert final[RUN_BTN]["interactive"] is True


def test_run_session_reports_what_each_augmenter_produced(tiny_teacher_dir, offline_cache, runs_in_tmp):
    values = ui_values(tiny_teacher_dir, augment=["word_swap", "char_ocr"], augment_strength=0.3)
    final = drain(run_distillation(values, UserSession()))[-1]
    summary = json.loads(next(runs_in_tmp.glob("*/summary.json")).read_text())
    counts = summary["augmented"]["methods"]
    assert set(counts) == {"word_swap", "char_ocr"} and all(n > 0 for n in counts.values())
    line = f"Augmentation: word_swap {counts['word_swap']:,} · char_ocr {counts['char_ocr']:,} new texts"
    assert line in final[STATUS] and line in final[SUMMARY]


# ---- Student size ----------------------------------------------------------------------------

SWEEP_STATUS, SWEEP_PLOT, SWEEP_TABLE, SWEEP_BTN, SWEEP_STOP_BTN = range(5)


def sweep_row(spec: str, i: int) -> dict:
    return {"spec": spec, "params": (i + 1) * 1_000_000, "ppl_before": 900.0 / (i + 1), "ppl": 300.0 / (i + 1),
            "top1_agreement": 0.1 * (i + 1), "kl_to_teacher": 2.0 / (i + 1), "tokens_per_s": 50.0 / (i + 1),
            "teacher_params": 5_000_000, "teacher_ppl": 80.0, "teacher_tokens_per_s": 10.0, "wall_s": 3.0,
            "error": None}


@pytest.fixture()
def fake_sweep(monkeypatch):
    """The engine's sweep (api.student_sweep, as the Student size tab calls it) replaced by a generator that
    follows its contract: each student's session events, then a `row` event; students.json rewritten after
    each row; stops between students."""
    calls: dict = {}

    def student_sweep(config, specs, out_dir, stop=None, session=None):
        calls.update(config=config, specs=list(specs), out_dir=Path(out_dir), stop=stop, session=session)
        rows = []
        yield {"kind": "teacher", "message": "teacher: 5.0 M parameters, held-out ppl 80.00, 10.0 tokens/s"}
        for i, spec in enumerate(specs):
            yield {"kind": "status", "message": f"Building student {spec} …", "student": spec}
            for step in (1, 2):
                yield {"kind": "step", "step": step, "steps": 2, "loss": 3.0 - step, "tokens_per_s": 100.0,
                       "eta_s": 1.0, "student": spec}
            yield {"kind": "done", "message": "done", "summary": {}, "student": spec}
            rows.append(sweep_row(spec, i))
            (Path(out_dir) / "students.json").write_text(json.dumps(rows))
            yield {"kind": "row", "row": rows[-1], "student": spec}
            if stop is not None and stop.is_set():
                return

    monkeypatch.setattr(sizes.api, "student_sweep", student_sweep)
    return calls


def sweep_values(teacher_dir: Path, specs="layers:1, layers:2", **changes):
    values = ui_values(teacher_dir, **changes)
    values.pop("student")
    return {"specs": specs, **values}


def test_size_sweep_streams_rows_into_the_figure_and_table(tiny_teacher_dir, fake_sweep, runs_in_tmp):
    user = UserSession()
    outputs = drain(run_size_sweep(sweep_values(tiny_teacher_dir, top_k=8), user))
    assert outputs[0][SWEEP_STATUS].startswith("**Student 1/2 `layers:1`**")
    assert outputs[0][SWEEP_BTN]["interactive"] is False and outputs[0][SWEEP_STOP_BTN]["interactive"] is True
    # the engine got the Distill tab's recipe, the parsed specs, a fresh run folder and this user's stop flag
    assert fake_sweep["specs"] == ["layers:1", "layers:2"] and fake_sweep["config"].top_k == 8
    assert fake_sweep["config"].teacher == str(tiny_teacher_dir) and fake_sweep["stop"] is user.stop
    assert fake_sweep["session"] is sizes.SESSION  # each student's session goes to the GPU as a Run does
    assert fake_sweep["out_dir"].parent == runs_in_tmp
    # the figure fills in row by row
    figures = [o[SWEEP_PLOT] for o in outputs if isinstance(o[SWEEP_PLOT], go.Figure)]
    after_counts = [len(next((t.x for t in f.data if t.name == "student after distillation"), [])) for f in figures]
    assert after_counts == [0, 1, 2, 2]
    assert any("Student 2/2 `layers:2`" in o[SWEEP_STATUS] and "step 2/2" in o[SWEEP_STATUS] for o in outputs)
    final = outputs[-1]
    assert final[SWEEP_STATUS].startswith("**Done:** 2/2 students.") and "students.json" in final[SWEEP_STATUS]
    assert "Teacher: 5.0 M parameters" in final[SWEEP_STATUS]
    assert "`layers:2`: 2.0 M, held-out perplexity 450.0 → **150.0**" in final[SWEEP_STATUS]
    table = final[SWEEP_TABLE]
    assert [row[0] for row in table] == ["teacher", "layers:1", "layers:2"]
    assert len(table[0]) == len(SWEEP_TABLE_HEADERS) and table[2][3] == "150.00"
    assert final[SWEEP_BTN]["interactive"] is True and final[SWEEP_STOP_BTN]["interactive"] is False


def test_size_sweep_stop_ends_after_the_current_student(tiny_teacher_dir, fake_sweep):
    user = UserSession()
    outputs = []
    for output in run_size_sweep(sweep_values(tiny_teacher_dir, specs="layers:1\nlayers:2\nlayers:3"), user):
        outputs.append(output)
        if "`layers:1`: " in output[SWEEP_STATUS] and not user.stop.is_set():
            distill.request_stop(user)
    final = outputs[-1]
    assert final[SWEEP_STATUS].startswith("**Stopped** after 1/3 students.")
    assert [row[0] for row in final[SWEEP_TABLE]] == ["teacher", "layers:1"]


@pytest.mark.parametrize("changes, expected", [
    ({"specs": " , "}, "the student list is empty"),
    ({"kd_weight": 2}, "kd_weight must be between 0 and 1"),
    ({"preset": "nope"}, "unknown preset"),
])
def test_size_sweep_bad_input_shows_message(tiny_teacher_dir, fake_sweep, runs_in_tmp, changes, expected):
    final = drain(run_size_sweep(sweep_values(tiny_teacher_dir, **changes), UserSession()))[-1]
    assert final[SWEEP_STATUS].startswith("**Error:**") and expected in final[SWEEP_STATUS]
    assert final[SWEEP_BTN]["interactive"] is True and not fake_sweep
    assert not runs_in_tmp.exists() or not any(runs_in_tmp.iterdir())


def test_size_sweep_engine_error_keeps_the_app_up(tiny_teacher_dir, monkeypatch, fake_sweep, runs_in_tmp):
    def failing(config, specs, out_dir, stop=None, session=None):
        yield {"kind": "status", "message": "Loading teacher …"}
        raise DistillError("teacher exploded")

    monkeypatch.setattr(sizes.api, "student_sweep", failing)
    final = drain(run_size_sweep(sweep_values(tiny_teacher_dir), UserSession()))[-1]
    assert final[SWEEP_STATUS].startswith("**Error:** teacher exploded")
    assert not any(runs_in_tmp.iterdir())  # nothing finished: the run folder is removed


def test_size_sweep_with_the_engine_on_the_tiny_teacher(tiny_teacher_dir, runs_in_tmp):
    """The real distill_core.sweep.student_sweep behind the handler: two seconds-long students."""
    values = sweep_values(tiny_teacher_dir, specs="layers:1, layers:2", steps=2)
    outputs = drain(run_size_sweep(values, UserSession()))
    final = outputs[-1]
    assert final[SWEEP_STATUS].startswith("**Done:** 2/2 students."), final[SWEEP_STATUS]
    assert any("`layers:2`**" in o[SWEEP_STATUS] and "step " in o[SWEEP_STATUS] for o in outputs)
    assert [row[0] for row in final[SWEEP_TABLE]] == ["teacher", "layers:1", "layers:2"]
    after = next(t for t in final[SWEEP_PLOT].data if t.name == "student after distillation")
    assert len(after.x) == 2 and after.x[0] < after.x[1]  # one layer fewer, fewer parameters
    (run_dir,) = runs_in_tmp.iterdir()
    rows = json.loads((run_dir / "students.json").read_text())
    assert [row["spec"] for row in rows] == ["layers:1", "layers:2"] and all(row["error"] is None for row in rows)


def test_load_students_json_plots_it(tmp_path):
    path = tmp_path / "students.json"
    path.write_text(json.dumps([sweep_row("layers:1", 0), {**sweep_row("layers:9", 1), "ppl": None,
                                                           "error": "more layers than the teacher has"}]))
    note, fig, table = sizes.load_size_rows(str(path))
    assert note.startswith("Loaded 2 students") and "**failed:** more layers than the teacher has" in note
    assert [t.name for t in fig.data if t.name == "teacher"] == ["teacher"]
    assert [row[0] for row in table] == ["teacher", "layers:1", "layers:9"]


@pytest.mark.parametrize("content, expected", [
    ("{not json", "is not a readable JSON file"),
    ('{"spec": "layers:1"}', "must hold a list of rows"),
    (None, "no file"),
])
def test_load_students_json_bad_file(tmp_path, content, expected):
    path = None
    if content is not None:
        path = tmp_path / "students.json"
        path.write_text(content)
    note, fig, table = sizes.load_size_rows(str(path) if path else None)
    assert note.startswith("**Error:**") and expected in note


# ---- Dark knowledge --------------------------------------------------------------------------

def test_dark_knowledge_before_any_session(tiny_teacher_dir):
    tokens, note, bars, stats, strip, wrong = probe_dark_knowledge(
        "I ate an apple", -1, 2.0, 5, str(tiny_teacher_dir), "layers:1", UserSession())
    assert "No distillation session has run" in note and "appears here once a session" in note
    assert [t.name for t in bars.data] == ["teacher", "student (before)"]
    assert all(t.type == "bar" for t in bars.data)
    assert strip.data[0].type == "heatmap" and list(strip.data[0].y) == ["student (before)"]
    assert "| teacher |" in stats and "| student (before) |" in stats
    assert "<code" in tokens and "apple" in tokens
    # the wrong answers: one line each, the teacher's column first; the stats count the shared ones
    assert wrong.data and all(list(t.x) == [0, 1] for t in wrong.data)
    assert list(wrong.layout.xaxis.ticktext) == ["teacher", "student (before)"]
    assert "wrong answers in its own top" in stats and "| teacher | " in stats and "5/5" in stats


def test_dark_knowledge_after_a_session(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    tokens, note, bars, stats, strip, wrong = probe_dark_knowledge(
        "I ate an apple", 1, 4.0, 5, str(tiny_teacher_dir), "layers:1", user)
    assert [t.name for t in bars.data] == ["teacher", "student (before)", "student (after)"]
    assert list(strip.data[0].y) == ["student (before)", "student (after)"]
    assert "Student (after) is the last session's student" in note
    assert "Position 1 of" in note and "rank of the actual next token" in stats
    assert list(wrong.layout.xaxis.ticktext) == ["teacher", "student (before)", "student (after)"]
    # student (before) is the student the session started from: its kept layer as an explicit spec
    assert "student it started from (`layers:1`)" in note
    # another pair than the session's: no trained student, and the note says why
    _, note, bars, _, _, _ = probe_dark_knowledge("I ate an", -1, 2.0, 5, str(tiny_teacher_dir), "layers:2", user)
    assert len(bars.data) == 2 and "not the pair picked in Setup" in note


@pytest.mark.parametrize("text, position, expected", [
    ("", -1, "probe text is empty"),
    ("I ate an", 99, "outside the text"),
    ("I ate an", "abc", "position must be an integer"),
])
def test_dark_knowledge_bad_input_shows_message(tiny_teacher_dir, text, position, expected):
    tokens, note, bars, stats, strip, wrong = probe_dark_knowledge(
        text, position, 2.0, 5, str(tiny_teacher_dir), "layers:1", UserSession())
    assert note.startswith("**Error:**") and expected in note
    assert bars is None and strip is None and wrong is None


# ---- the student the inspection tabs call "before" -------------------------------------------

@pytest.mark.parametrize("summary, spec, expected", [
    ({"student_layers_kept": [0, 1, 2, 27, 28, 29], "student_spec": "layers:6:angular"}, "layers:6:angular",
     "layers:0,1,2,27,28,29"),
    ({"student_layers_kept": [0, 1, 2, 27, 28, 29], "student_spec": "layers:6"}, "layers:6", "layers:6"),
    ({"student_layers_kept": [0, 5], "student_spec": "layers:0,5"}, "layers:0,5", "layers:0,5"),
    ({"student_layers_kept": None, "student_spec": "fresh:layers=2,hidden=64,heads=4"}, "x",
     "fresh:layers=2,hidden=64,heads=4"),
    (None, "runs/old/student", "runs/old/student"),
])
def test_initial_student_spec(summary, spec, expected):
    assert initial_student_spec(summary, spec) == expected


def test_before_student_is_the_one_the_session_started_from(finished_session, tiny_teacher_dir):
    import torch

    user, _, _ = finished_session
    models = api.Comparison(str(tiny_teacher_dir), "layers:1", user.last_run)
    summary = json.loads((Path(user.last_run["out_dir"]) / "summary.json").read_text())
    assert models.before.layers_kept == summary["student_layers_kept"]
    assert models.layer_pairs() == [tuple(p) for p in summary["layer_map"]]
    assert set(models.students) == {api.BEFORE, api.AFTER}
    # untrained: its kept layer is still the teacher's; the trained one has moved
    teacher_layer = models.teacher.model.model.layers[summary["student_layers_kept"][0]]
    before_layer, after_layer = models.before.model.model.layers[0], models.after.model.layers[0]
    name, weight = next(iter(teacher_layer.state_dict().items()))
    assert torch.equal(before_layer.state_dict()[name], weight)
    assert not torch.equal(after_layer.state_dict()[name], weight)


# ---- Attention -------------------------------------------------------------------------------

ATT_NOTE, ATT_MAPS, ATT_DIFF, ATT_ENTROPY = range(4)


def heatmap_traces(fig) -> list:
    return [t for t in fig.data if t.type == "heatmap"]


def test_attention_before_any_session_defaults_to_the_layer_map(tiny_teacher_dir):
    pair = (str(tiny_teacher_dir), "layers:1")
    out = show_attention(attention.ATTENTION_TEXT, (-1, 0, -1, 0), False, pair)
    assert len(out) == 4 and "No distillation session has run" in out[ATT_NOTE]
    # layers:1 keeps the teacher's last layer: the layer map's only pair is 0:3
    assert "**Teacher layer 3, student layer 0** (the mapped pair `0:3`" in out[ATT_NOTE]
    assert "teacher head 0, student head 0" in out[ATT_NOTE]
    # empty boxes (an API call without them) mean the same
    assert show_attention(attention.ATTENTION_TEXT, (None,) * 4, False, pair)[ATT_NOTE] == out[ATT_NOTE]
    maps = out[ATT_MAPS]
    assert [t.name for t in heatmap_traces(maps)] == ["teacher", "student (before)"]
    assert [a.text for a in maps.layout.annotations][:2] == ["teacher · layer 3 · head 0",
                                                             "student (before) · layer 0 · head 0"]
    n = len(maps.layout.xaxis.ticktext)
    assert "␣apple" in maps.layout.xaxis.ticktext and np.array(heatmap_traces(maps)[0].z, dtype=float).shape == (n, n)
    assert out[ATT_DIFF].layout.annotations[0].text == "student (before) − teacher"
    entropy = heatmap_traces(out[ATT_ENTROPY])
    assert [np.array(t.z, dtype=float).shape for t in entropy] == [(4, 4), (1, 4)]


def test_attention_after_a_session_picks_layers_heads_and_averages(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    pair = (str(tiny_teacher_dir), "layers:1")
    out = show_attention(attention.ATTENTION_TEXT, (1, 2, 0, 3), False, pair, user)
    assert "**Teacher layer 1, student layer 0** (not a mapped pair), teacher head 2, student head 3" in out[ATT_NOTE]
    assert [t.name for t in heatmap_traces(out[ATT_MAPS])] == ["teacher", "student (before)", "student (after)"]
    assert out[ATT_DIFF].layout.annotations[0].text == "student (after) − teacher"
    assert "Student (after) is the last session's student" in out[ATT_NOTE]
    passes = api.FORWARDS.passes
    # another head: the maps are reused (the shared forward passes: no model runs), and averaging outlines
    # whole layers
    out = show_attention(attention.ATTENTION_TEXT, (3, 0, 0, 0), True, pair, user)
    assert api.FORWARDS.passes == passes
    assert out[ATT_MAPS].layout.annotations[0].text == "teacher · layer 3 · heads averaged"
    maps = attention.attention_result(api.Comparison(*pair, user.last_run), attention.ATTENTION_TEXT)["maps"]["teacher"]
    z = np.array(heatmap_traces(out[ATT_MAPS])[0].z, dtype=float)
    assert np.allclose(np.tril(z), np.tril(maps[3].mean(0)), equal_nan=True)
    assert all(shape.x0 == -0.5 for shape in out[ATT_ENTROPY].layout.shapes)


@pytest.mark.parametrize("text, teacher_layer, student_head, expected", [
    ("", None, None, "probe text is empty"),
    (attention.ATTENTION_TEXT, 9, None, "the teacher layer 9 does not exist: it has layers 0..3"),
    (attention.ATTENTION_TEXT, None, 7, "the student head 7 does not exist: it has heads 0..3"),
    (attention.ATTENTION_TEXT, 1.5, None, "teacher layer must be an integer"),
    ("word " * 200, None, None, "the attention view shows at most 96"),
])
def test_attention_bad_input_shows_message(tiny_teacher_dir, text, teacher_layer, student_head, expected):
    out = show_attention(text, (teacher_layer, None, None, student_head), False, (str(tiny_teacher_dir), "layers:1"))
    assert out[ATT_NOTE].startswith("**Error:**") and expected in out[ATT_NOTE]
    assert all(figure == gr.skip() for figure in out[ATT_MAPS:])  # the figures already shown stay


def test_attention_error_keeps_the_figures_shown(tiny_teacher_dir):
    """A layer out of range after a good view: the message, and the figures of the good view stay on the page
    (gr.skip, which Gradio reads as "leave this output as it is")."""
    pair, user = (str(tiny_teacher_dir), "layers:1"), UserSession()
    shown = show_attention(attention.ATTENTION_TEXT, (None,) * 4, False, pair, user)
    assert isinstance(shown[ATT_MAPS], go.Figure)
    out = show_attention(attention.ATTENTION_TEXT, (9, None, None, None), False, pair, user)
    assert out[ATT_NOTE].startswith("**Error:**") and "the teacher layer 9 does not exist" in out[ATT_NOTE]
    assert out[ATT_MAPS:] == (gr.skip(),) * 3


# ---- Similarity ------------------------------------------------------------------------------

SIMILARITY_TEXT = similarity.similarity_text()

def test_similarity_before_any_session(tiny_teacher_dir):
    note, cka, pairs, steps = similarity.show_similarity(SIMILARITY_TEXT, str(tiny_teacher_dir), "layers:1",
                                                         UserSession())
    assert "No distillation session has run" in note and "first token is left out" in note
    (heatmap,) = heatmap_traces(cka)
    assert np.array(heatmap.z, dtype=float).shape == (4, 1)  # teacher layers x student layers
    # the copied last layer sees a different input: similar, not identical
    assert [t.name for t in pairs.data] == ["student (before)"] and list(pairs.data[0].x) == ["0:3"]
    assert "No snapshots yet" in steps.layout.annotations[0].text


def test_similarity_after_a_session_shows_the_snapshots(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    note, cka, pairs, steps = similarity.show_similarity(SIMILARITY_TEXT, str(tiny_teacher_dir), "layers:1", user)
    assert [t.name for t in heatmap_traces(cka)] == ["student (before)", "student (after)"]
    assert "trained no FitNets projection" in note
    assert len(pairs.data) == 2  # CKA before and after; no cosine panel
    probe_steps = [e["step"] for e in user.last_run["probes"]]
    (line,) = steps.data  # one mapped pair
    assert list(line.x) == probe_steps == [0, 3] and line.name == "0:3"
    assert all(0 <= y <= 1 + 1e-9 for y in line.y)


def test_similarity_with_fitnets_shows_the_cosine_after_projection(tiny_teacher_dir, runs_in_tmp):
    user = UserSession()
    drain(run_distillation(ui_values(tiny_teacher_dir, steps=2, hidden_weight=1.0, hidden_loss="cosine"), user))
    assert (Path(user.last_run["out_dir"]) / "fitnets_projection.safetensors").is_file()
    note, cka, pairs, steps = similarity.show_similarity(SIMILARITY_TEXT, str(tiny_teacher_dir), "layers:1", user)
    assert "Cosine after the run's FitNets projection" in note
    cosine = [t for t in pairs.data if t.xaxis == "x2"]
    assert [t.name for t in cosine] == ["student (after)"] and -1 <= cosine[0].y[0] <= 1


def test_similarity_bad_text_shows_message(tiny_teacher_dir):
    note, cka, pairs, steps = similarity.show_similarity("Hi", str(tiny_teacher_dir), "layers:1", UserSession())
    assert note.startswith("**Error:**") and "at least 4 tokens" in note and cka is None


# ---- Evaluate and generate -------------------------------------------------------------------

def test_evaluate_before_any_session(tiny_teacher_dir):
    note, table, rows = drain(evaluate.evaluate_students(str(tiny_teacher_dir), "layers:1", UserSession()))[-1]
    assert "No distillation session has run" in note
    assert set(rows) == {"teacher", "student (before)"}
    assert "| | teacher | student (before) |" in table
    for label in ("held-out perplexity", "bits per byte", "top-1 agreement", "KL(teacher ‖ model)", "parameters",
                  "size on disk", "tokens/s"):
        assert label in table
    assert all(row["bits_per_byte"] > 0 for row in rows.values())
    assert table.startswith("**The student (before) keeps") and "fewer parameters" in table


def test_evaluate_after_a_session(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    outputs = drain(evaluate.evaluate_students(str(tiny_teacher_dir), "layers:1", user))
    note, table, rows = outputs[-1]
    assert list(rows) == ["teacher", "student (before)", "student (after)"]
    assert rows["student (after)"]["params"] == rows["student (before)"]["params"] < rows["teacher"]["params"]
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
    kept = rows["teacher"]["ppl"] / rows["student (after)"]["ppl"]
    assert table.startswith(f"**The student (after) keeps {kept:.0%} of the teacher's quality")
    assert "tokens/s measured just now on this machine (" in table and "CPU thread" in table
    # the rows stream in, the teacher first, each with a progress line; the trade sentence comes last
    assert outputs[0][0].startswith("Loading the models")
    progress = [o for o in outputs[1:-1]]
    assert [o[0].split("**")[1] for o in progress] == ["Measuring teacher … 1 of 3", "Measuring student (before) … 2 of 3",
                                                      "Measuring student (after) … 3 of 3"]
    assert [list(o[2] or {}) for o in progress] == [[], ["teacher"], ["teacher", "student (before)"]]
    assert progress[1][1].count("…") == 2 * 10 and "keeps" not in progress[1][1]  # two columns of ten still to come
    assert progress[2][2]["teacher"] == rows["teacher"]


def test_generate_side_by_side(finished_session, tiny_teacher_dir):
    user, _, _ = finished_session
    streamed = drain(evaluate.generate_side_by_side("The river", 6, 3, str(tiny_teacher_dir), "layers:1", user))
    note, cards, outputs = streamed[-1]
    # a card more as each model finishes, with a progress line
    assert [o[0].split("**")[1] for o in streamed[1:-1]] == [
        "Generating with teacher … 1 of 3", "Generating with student (before) … 2 of 3",
        "Generating with student (after) … 3 of 3"]
    assert [list(o[2] or {}) for o in streamed[1:-1]] == [[], ["teacher"], ["teacher", "student (before)"]]
    assert "student (before)" in streamed[-2][1] and "student (after)" not in streamed[-2][1]
    assert "measured just now on this machine (" in note and "Student (after) is the last session's student" in note
    assert list(outputs) == ["teacher", "student (before)", "student (after)"]
    for name, runs in outputs.items():
        assert set(runs) == {"greedy", "sampled"} and 0 < runs["greedy"]["new_tokens"] <= 6
        assert runs["sampled"]["tokens_per_s"] > 0
        assert name in cards
    assert "sampled (seed 3)" in cards and "tokens/s" in cards
    # the same seed gives the same sample
    again = drain(evaluate.generate_side_by_side("The river", 6, 3, str(tiny_teacher_dir), "layers:1", user))[-1][2]
    assert again["teacher"]["sampled"]["text"] == outputs["teacher"]["sampled"]["text"]


def test_the_teacher_grades_the_students_continuations(finished_session, tiny_teacher_dir):
    """The grading view after a session: before, after and the teacher continue the prompt from one seed; each
    token a chip coloured by the teacher's probability, the means and the least likely tokens in the table."""
    user, _, _ = finished_session
    note, figure, table, result = grading.grade_continuations("The river", 6, 2, "teacher_prob", str(tiny_teacher_dir),
                                                              "layers:1", user)
    assert "Student (after) is the last session's student" in note and "seed 2" in note
    assert list(result["rows"]) == ["student (before)", "student (after)", "teacher"]
    chips = sum(len(row["tokens"]) for row in result["rows"].values())
    texts = [trace for trace in figure.data if trace.mode == "text"]
    assert [t.name for t in texts] == list(result["rows"]) and len(figure.layout.shapes) == chips
    colors = {shape.fillcolor for shape in figure.layout.shapes}
    assert len(colors) > 1  # the teacher finds some tokens likelier than others
    for name, row in result["rows"].items():
        assert f"| {name} | {row['mean_nll']:.2f} |" in table
    assert "student (after): the tokens the teacher found least likely" in table
    recolored = grading.recolor(result, "reverse_kl")
    assert {s.fillcolor for s in recolored.layout.shapes} != colors
    error = grading.grade_continuations("The river", 0, 2, "teacher_prob", str(tiny_teacher_dir), "layers:1", user)
    assert "new tokens must be between 1 and 512" in error[0] and error[1] is None


@pytest.mark.parametrize("prompt, new_tokens, expected", [
    ("  ", 5, "prompt is empty"),
    ("The river", 0, "new tokens must be between 1 and 512"),
    ("The river", "many", "new tokens must be an integer"),
])
def test_generate_bad_input_shows_message(tiny_teacher_dir, prompt, new_tokens, expected):
    note, cards, outputs = drain(evaluate.generate_side_by_side(prompt, new_tokens, 0, str(tiny_teacher_dir),
                                                                "layers:1", UserSession()))[-1]
    assert note.startswith("**Error:**") and expected in note and outputs is None


# ---- Export ----------------------------------------------------------------------------------

def test_export_before_any_session_says_so():
    with pytest.warns(UserWarning) as toasts:
        note, archive, config = distill.export_run("bf16", UserSession())
    assert note.startswith("**Error:** no session has finished") and archive is None and config is None
    # the toast is plain text (it shows no Markdown): "run one in Distill first", not "**Distill**"
    assert any("run one in Distill first" in str(t.message) for t in toasts)
    assert not any("**" in str(t.message) for t in toasts)


def test_export_zip_is_self_contained_and_loads(finished_session, tmp_path, monkeypatch):
    """The zip unpacks to a folder that loads, in half precision by default, with the model card (its metadata
    valid), summary.json and config.yaml, every file rw-r--r--."""
    import stat
    import zipfile

    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    user, _, _ = finished_session
    note, archive, config = distill.export_run("bf16", user)
    run_name = Path(user.last_run["out_dir"]).name
    assert Path(archive).name == f"{run_name}-student.zip" and Path(config).name == f"{run_name}-config.yaml"
    assert Path(archive).is_relative_to(tmp_path / "gradio")  # served from Gradio's cache without a copy
    assert "from_pretrained" in note and "--config" in note and "in bf16" in note and "MiB" in note
    with zipfile.ZipFile(archive) as z:
        assert all(stat.S_IMODE(info.external_attr >> 16) == 0o644 for info in z.infolist())
        z.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / f"{run_name}-student"
    assert {"README.md", "summary.json", "config.yaml", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 1 and model.dtype == torch.bfloat16
    assert "_model_name_or_path" not in json.loads((folder / "config.json").read_text())
    card = ModelCard.load(folder / "README.md")
    assert "knowledge-distillation" in card.data.tags and card.data.library_name == "transformers"
    assert card.data.eval_results[0].metric_type == "perplexity" and "## Recipe" in card.text
    loaded = DistillConfig.from_yaml(config)
    assert loaded.student == "layers:1" and loaded.steps == 3
    # fp32 on request: about twice the download (the weights are most of it)
    half_size = Path(archive).stat().st_size
    _, full, _ = distill.export_run("fp32", user)
    assert Path(full).stat().st_size > 1.5 * half_size
    # a second export replaces the first on disk
    assert Path(full).is_file() and not Path(archive).exists()


def test_an_idle_browser_s_state_expires_and_a_busy_one_s_never(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_IDLE_MINUTES", "10")
    idle, busy, active = UserSession(), UserSession(), UserSession()
    export = tmp_path / "export"
    export.mkdir()
    for user in (idle, busy, active):
        user.last_run = {"out_dir": str(tmp_path), "teacher": "t", "student": "s"}
        user.runs = [{"id": "x", "token": "y"}]
    idle.export_dir = export
    idle.last_seen = busy.last_seen = time.time() - 11 * 60
    busy.running = True
    assert common.expire_idle(force=True) == 1
    assert idle.last_run is None and idle.runs == [] and idle.export_dir is None and not export.exists()
    assert busy.last_run is not None and active.last_run is not None


def test_the_run_history_section_says_how_to_open_the_tracker(monkeypatch):
    monkeypatch.setenv("DISTILL_TRACKING", "1")
    monkeypatch.setenv("DISTILL_TRACKIO_PROJECT", "class-of-today")
    note = distill.history_markdown()
    assert "`class-of-today`" in note and "trackio show --project class-of-today" in note
    monkeypatch.setenv("DISTILL_PUBLIC", "1")  # a Space: the dashboard's own port is not reachable from outside
    assert "trackio show" not in distill.history_markdown()
    assert distill.open_history().startswith("**Error:**")
    monkeypatch.setenv("DISTILL_TRACKING", "0")
    assert "off" in distill.history_markdown() and distill.open_history().startswith("**Error:**")
