"""The Setup tab: the teacher/student pair every other tab uses, and what the pair shares (api_name
`compatibility`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import PRIVATE, error_markdown, fmt_params, one_line, pairs_text, prose, view_error

TEACHER_PRESETS = ["smollm2-135m", "HuggingFaceTB/SmolLM2-360M-Instruct"]
STUDENT_PRESETS = ["layers:20", "layers:15", "layers:10", "layers:6", "fresh:layers=4,hidden=256,heads=4",
                   "fresh:layers=4,hidden=256,heads=4,vocab=bpe:8000", "HuggingFaceTB/SmolLM2-135M-Instruct"]
ALIGNMENT_TEXT = "For breakfast I ate an apple and a banana."
"""The alignment view's default text (the Dark knowledge probe's)."""


@dataclass
class Pair:
    """The Setup tab's teacher and student pickers (inputs of every other tab), and the compatibility check."""

    teacher: Any
    student: Any
    check: Any
    """The Check compatibility event (other tabs chain on it)."""
    warnings: Any
    """The warning line under the boxes: a spec the engine would refuse (checked when a box is left)."""


def default_pair() -> tuple[str, str]:
    """The starting teacher and student: the hub pair (SmolLM2-360M -> SmolLM2-135M) where the hub is there
    (api.use_hub_defaults: on Spaces, or without the bundled teacher but online), else the quickstart's
    offline pair."""
    if api.use_hub_defaults():
        return api.HUB_DEFAULT_PAIR
    quickstart = api.preset_config()
    return quickstart.teacher, quickstart.student


def build_setup() -> Pair:
    teacher_default, student_default = default_pair()
    help_text = api.field_help()
    with gr.Row():
        with gr.Column():
            # a plain text box: a dropdown with custom values completes "smollm2-135" to a preset on Enter
            teacher = gr.Textbox(teacher_default, label="Teacher", max_lines=1, info=help_text["teacher"],
                                 elem_id="teacher-spec")
            teacher_preset = gr.Dropdown(TEACHER_PRESETS, value=None, label="Teacher presets", info=PRESET_INFO,
                                         elem_id="teacher-preset")
        with gr.Column():
            student = gr.Textbox(student_default, label="Student", max_lines=1, info=help_text["student"],
                                 elem_id="student-spec")
            presets = [student_default, *(spec for spec in STUDENT_PRESETS if spec != student_default)]
            student_preset = gr.Dropdown(presets, value=None, label="Student presets", info=PRESET_INFO,
                                         elem_id="student-preset")
    spec_md = gr.Markdown(elem_id="spec-warning")
    with gr.Accordion("Learn: what is knowledge distillation?", open=False):
        gr.Markdown(prose("setup", "learn"))
    gr.Markdown(prose("setup", "spec-help"))
    check_btn = gr.Button("Check compatibility", variant="primary")
    report_md = gr.Markdown(elem_id="compat-report")
    with gr.Accordion("Raw report (JSON)", open=False):
        report_json = gr.JSON(label="compatibility report")
    check = check_btn.click(check_compatibility, [teacher, student], [report_md, report_json], api_name="compatibility")
    build_alignment(teacher, student, check)
    quiet = dict(show_progress="hidden", **PRIVATE)
    for box, preset in ((teacher, teacher_preset), (student, student_preset)):
        preset.input(pick_preset, preset, [box, preset], **quiet).then(spec_warnings, [teacher, student], spec_md, **quiet)
        box.change(report_for_pair, [teacher, student, report_json], report_md, **quiet)
        gr.on([box.blur, box.submit], spec_warnings, [teacher, student], spec_md, **quiet)
    return Pair(teacher, student, check, spec_md)


PRESET_INFO = "Fills the box above; edit it there, or type any spec."


def build_alignment(teacher: Any, student: Any, check: Any) -> None:
    """How the two vocabularies line up on a text (api_name `alignment`); redrawn after each compatibility check."""
    with gr.Accordion("How the vocabularies line up", open=True):
        gr.Markdown(prose("setup", "alignment"))
        with gr.Row(equal_height=True):
            text = gr.Textbox(ALIGNMENT_TEXT, label="Text", max_lines=3, scale=4, elem_id="alignment-text")
            button = gr.Button("Show the alignment", scale=1, elem_id="alignment-btn")
        note = gr.Markdown(elem_id="alignment-note")
        plot = gr.Plot(show_label=False, elem_id="alignment-plot")
    button.click(show_alignment, [text, teacher, student], [note, plot], api_name="alignment")
    text.submit(show_alignment, [text, teacher, student], [note, plot], **PRIVATE)
    check.then(show_alignment, [text, teacher, student], [note, plot], **PRIVATE)


def show_alignment(text: str, teacher_spec: str, student_spec: str) -> tuple[str, Any]:
    """The teacher's tokens of `text` above the student's, the aligned spans between them (api_name
    `alignment`). Returns note markdown and the figure."""
    try:
        result = api.pair_alignment(teacher_spec, student_spec, text)
    except Exception as exc:  # DistillError: its message; anything else: one line
        return view_error(exc), None
    n_teacher, n_student = len(result["teacher"]["pieces"]), len(result["student"]["pieces"])
    title = (f"{result['one_to_one_share']:.0%} of the text's {result['bytes']} bytes align one to one "
             f"({n_teacher} teacher tokens, {n_student} student tokens)")
    if result["bridge"] == "none":
        note = "Same vocabulary: every token has a one-to-one partner, and soft targets compare the distributions id by id."
    else:
        note = (f"Bridge **{result['bridge']}**: {result['reason']}. Orange tokens have no one-to-one partner: the "
                "span-aligned loss merges their probabilities over the span the band covers.")
    return note, visuals.alignment_figure(result, title)


def pick_preset(value: str | None) -> tuple[Any, Any]:
    """A preset picked: into the spec box, and the preset picker emptied (the box may be edited next)."""
    return (value if value else gr.skip()), gr.update(value=None)


def spec_warnings(teacher_spec: str, student_spec: str) -> str:
    """A warning line for each spec the engine would refuse (api.spec_problem: resolved without loading
    weights), e.g. a misspelled teacher with its "did you mean"; '' when both look loadable."""
    problems = [(role, api.spec_problem(spec, role.lower())) for role, spec in
                (("Teacher", teacher_spec), ("Student", student_spec))]
    return "  \n".join(f"⚠ **{role}:** {problem}" for role, problem in problems if problem)


def report_for_pair(teacher_spec: str, student_spec: str, report: dict[str, Any] | None) -> str:
    """The compatibility report as the picked pair now stands: the report itself when it is for this pair;
    below a warning naming the pair it is for when the pair has changed since; nothing when there is no
    report (an error message was for the pair before)."""
    if not report:
        return ""
    checked = (str(report["teacher"]["spec"]).strip(), str(report["student"]["spec"]).strip())
    if checked == ((teacher_spec or "").strip(), (student_spec or "").strip()):
        return report_markdown(report)
    return (f"⚠ **This report is for the pair checked before**, `{checked[0]}` → `{checked[1]}`, not for "
            f"`{teacher_spec or '—'}` → `{student_spec or '—'}`: press **Check compatibility** to check this one."
            f"\n\n{report_markdown(report)}")


def check_compatibility(teacher_spec: str, student_spec: str) -> tuple[str, dict[str, Any] | None]:
    """Load the pair and report what it shares (api_name `compatibility`)."""
    try:
        report = api.check_pair(teacher_spec, student_spec)
    except api.DistillError as exc:
        gr.Warning(str(exc))
        return error_markdown(str(exc)), None
    except Exception as exc:  # e.g. out of memory: say it in one line, keep the app up
        gr.Warning(one_line(exc))
        return error_markdown(one_line(exc)), None
    return report_markdown(report), report


def report_markdown(report: dict[str, Any]) -> str:
    """The compatibility report as a teacher | student table plus the verdict lines."""
    t, s, tok, comp = report["teacher"], report["student"], report["tokenizer"], report["compression"]
    rows = [
        ("spec", f"`{t['spec']}`", f"`{s['spec']}`"),
        ("source", t["source"], s["source"]),
        ("architecture", t["architecture"], s["architecture"]),
        ("layers", t["layers"], s["layers"]),
        ("hidden size", t["hidden_size"], s["hidden_size"]),
        ("attention heads (KV heads)", f"{t['heads']} ({t['kv_heads']})", f"{s['heads']} ({s['kv_heads']})"),
        ("vocabulary", t["vocab_size"], s["vocab_size"]),
        ("parameters", fmt_params(t["params"]), fmt_params(s["params"])),
    ]
    lines = ["| | teacher | student |", "|---|---|---|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    same = tok["same_vocabulary"]
    bridge = report.get("tokenizer_bridge") or {}
    techniques = ", ".join(name.replace("_", " ") for name, ok in report["techniques"].items() if ok)
    lines += [
        "",
        f"- **Tokenizer:** {'same vocabulary ✓' if same else 'different vocabularies'} "
        f"(fingerprints `{tok['teacher_fingerprint']}` / `{tok['student_fingerprint']}`)",
        f"- **Compression:** {comp['param_ratio']}× fewer parameters, {comp['layer_ratio']}× fewer layers",
        f"- **Techniques that apply:** {techniques or 'none'}",
    ]
    if bridge and bridge.get("bridge") != "none":
        share = bridge.get("one_to_one_share")
        lines += [f"- **Tokenizer bridge:** `{bridge['bridge']}`: {bridge['reason']}; {bridge['shared_tokens']:,} tokens "
                  f"in both vocabularies" + (f"; {share:.0%} of the held-out text's bytes align one to one"
                                             if share is not None else ""),
                  f"- **Attention transfer:** {bridge['attention_transfer']}",
                  f"- **FitNets:** {bridge['fitnets']}"]
    if report.get("layer_map"):
        lines.append(f"- **Layer map** (`auto`, for attention transfer and FitNets; student:teacher): "
                     f"{pairs_text(report['layer_map'])}")
    lines += [f"- **Student:** {note}" for note in s.get("notes") or []]
    if report.get("memory"):
        lines.append(memory_line(report["memory"]))
    return "\n".join(lines)


def memory_line(memory: dict[str, Any]) -> str:
    """The memory estimate of a session (the report's `memory`) as one verdict line."""
    gb = memory["estimate_gb"]
    batch, length = memory["batch"]
    parts = ", ".join(f"{name.replace('_', ' ')} {gb[name]:.2f}" for name in
                      ("teacher_weights", "student_weights", "gradients", "optimizer", "activations", "logits"))
    verdict = "fits ✓" if memory["fits"] else f"⚠ {memory['warning']}"
    return (f"- **Memory** (a session of {batch} × {length} tokens on {memory['device']}): about {gb['total']:.2f} GB "
            f"of {memory['device_gb']:.1f} GB {memory['device_memory']}, {verdict} ({parts} GB)")
