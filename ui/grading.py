"""The Teacher grades tab: the student (before and after) and the teacher continue one prompt, sampled from the
same seed, and the teacher scores every token each of them wrote: chips coloured by the teacher's probability
of the token (or the reverse KL there), its own top choices on hover, the mean per continuation, and the tokens
the teacher liked least with what it would have written (api_name `grade`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import PRIVATE, UserSession, as_int, cap, compared, prose, view_error
from ui.setup import Pair

GRADE_PROMPT = "The fisherman pulled in his net and found"
"""A held-out prompt (assets/texts/heldout_prompts.txt): never a training prompt."""
COLOR_CHOICES = [("the teacher's probability of each token", "teacher_prob"),
                 ("reverse KL(writer ‖ teacher) at each token", "reverse_kl")]
WORST_TOKENS = 5
"""Rows of the table of the tokens the teacher found least likely."""


def build_grading(pair: Pair, user: gr.State) -> None:
    gr.Markdown(prose("grading", "intro"))
    with gr.Accordion("Learn: exposure bias, and why the student's own words matter", open=False):
        gr.Markdown(prose("grading", "learn"))
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(GRADE_PROMPT, label="Prompt", scale=3, elem_id="grade-prompt")
        new_tokens = gr.Number(32, label="New tokens", precision=0, minimum=1, maximum=cap("new_tokens") or 512,
                               scale=1, elem_id="grade-tokens")
        seed = gr.Number(0, label="Seed (sampling)", precision=0, scale=1, elem_id="grade-seed")
    color_by = gr.Radio(COLOR_CHOICES, value="teacher_prob", label="Colour by", elem_id="grade-color")
    grade_btn = gr.Button("Grade the continuations", variant="primary", elem_id="grade-btn")
    note = gr.Markdown(elem_id="grade-note")
    plot = gr.Plot(label="The teacher grades each continuation", show_label=False, elem_id="grade-plot")
    table = gr.Markdown(elem_id="grade-table")
    graded = gr.State(None)  # the last result: recoloured without sampling again
    gr.Markdown(prose("studio", "figure-tip"))

    inputs = [prompt, new_tokens, seed, color_by, pair.teacher, pair.student, user]
    outputs = [note, plot, table, graded]
    grade_btn.click(grade_continuations, inputs, outputs, api_name="grade")
    prompt.submit(grade_continuations, inputs, outputs, **PRIVATE)
    color_by.change(recolor, [graded, color_by], plot, show_progress="hidden", **PRIVATE)


def grade_continuations(prompt: str, new_tokens: Any, seed: Any, color_by: str, teacher_spec: str,
                        student_spec: str, user: UserSession | None = None):
    """The student before, the student after (once a session of the pair has run) and the teacher continue
    `prompt` from the same `seed`; the teacher grades every token (api_name `grade`). Returns note markdown, the
    graded continuations (figure), the table markdown and the result (JSON-able)."""
    user = user if user is not None else UserSession()
    try:
        new_tokens, seed = as_int(new_tokens, "new tokens"), as_int(seed, "seed")
        models, models_note = compared(user, teacher_spec, student_spec)
        config = models.config
        result = api.grade_continuations(models.teacher.model, models.students, models.teacher.tokenizer, prompt,
                                         new_tokens, seed, config.rollout_temperature, config.rollout_top_p)
    except Exception as exc:  # DistillError: its message; anything else (e.g. out of memory): one line
        return view_error(exc), None, "", None
    note = (f"{models_note}  \nSampled at temperature {result['temperature']:g}, top-p {result['top_p']:g} (the "
            f"session's rollout settings), seed {seed}, the same for every model. Hover a token for the teacher's "
            "own top choices there.")
    return note, figure(result, color_by), worst_tokens_markdown(result), result


def figure(result: dict[str, Any], color_by: str) -> Any:
    return visuals.graded_continuations(result["rows"], color_by or "teacher_prob",
                                        f"How likely the teacher finds each token: “{result['prompt']}” …")


def recolor(result: dict[str, Any] | None, color_by: str) -> Any:
    """The last graded continuations coloured by the other measure (no model runs)."""
    return figure(result, color_by) if result else gr.skip()


def cell(token: str) -> str:
    """A token as code in a Markdown table cell (a `|` would end the cell)."""
    return "`" + visuals.display_token(token).replace("`", "'").replace("|", "\\|") + "`"


def worst_tokens_markdown(result: dict[str, Any]) -> str:
    """Each continuation's means, then, per student, the tokens the teacher found least likely with what it would
    have written there."""
    lines = ["| continuation | teacher's NLL (nats/token) ↓ | reverse KL (nats/token) ↓ | tokens |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['mean_nll']:.2f} | {row['mean_reverse_kl']:.2f} | {len(row['tokens'])} |"
              for name, row in result["rows"].items()]
    for name, row in result["rows"].items():
        if name == "teacher" or not row["tokens"]:
            continue
        order = sorted(range(len(row["tokens"])), key=lambda i: row["teacher_prob"][i])[:WORST_TOKENS]
        lines += ["", f"**{name}: the tokens the teacher found least likely**", "",
                  "| # | token | teacher's probability | the teacher's top choices there |", "|---:|---|---:|---|"]
        for i in sorted(order):
            choices = ", ".join(f"{cell(t)} {p:.0%}" for t, p in row["teacher_top"][i][:3])
            lines.append(f"| {i + 1} | {cell(row['tokens'][i])} | {row['teacher_prob'][i]:.2g} | {choices} |")
    return "\n".join(lines)
