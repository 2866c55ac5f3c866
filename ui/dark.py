"""The Dark knowledge tab: teacher and students' next-token distributions at one position of a text, at a
temperature; the wrong-answer ranking and the KL per position (api_name `dark_knowledge`)."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import (PRIVATE, VIEW_CONCURRENCY, Answers, UserSession, as_float, as_int, compared, fmt_number, prose,
                       question_of, touch, view_error)
from ui.setup import Pair

PROBE_TEXT = "For breakfast I ate an apple and a banana."
PROBE_POSITION = 4
"""The probed token, " an": the word after it, " apple", is in the text (★), and the Learn panel's example
(assets/learn/examples.yaml) is what the teacher predicts there."""
WRONG_TOP = 5
"""The stats table counts how many of the teacher's top WRONG_TOP wrong answers a student also has in its top WRONG_TOP."""


def build_dark(pair: Pair, user: gr.State) -> None:
    defaults = api.preset_config()
    gr.Markdown(prose("dark", "intro"))
    with gr.Accordion("Learn: dark knowledge (I ate an apple / orange / banana)", open=False):
        gr.Markdown(prose("dark", "learn"))
    with gr.Row():
        text = gr.Textbox(PROBE_TEXT, label="Text", scale=3, elem_id="probe-text")
        position = gr.Number(PROBE_POSITION, label="Position (-1 = last token)", precision=None, scale=1,
                             elem_id="probe-position")
    with gr.Row():
        temperature = gr.Slider(0.5, 10, value=1.0, step=0.1, label="Temperature T",
                                info=f"1 = the model's own distribution; the session trains at "
                                     f"T={defaults.temperature:g}. Recomputed as you move it.",
                                elem_id="probe-temperature")
        top_k = gr.Slider(1, 30, value=10, step=1, label="Top-k per model", elem_id="probe-top-k")
    probe_btn = gr.Button("Show distributions", variant="primary", elem_id="probe-btn")
    tokens_view = gr.HTML(elem_id="probe-tokens")
    note = gr.Markdown(elem_id="probe-note")
    bars_plot = gr.Plot(label="Next-token distributions", show_label=False, elem_id="bars-plot")
    stats_md = gr.Markdown(elem_id="probe-stats")
    wrong_plot = gr.Plot(label="Wrong-answer ranking", show_label=False, elem_id="wrong-plot")
    kl_plot = gr.Plot(label="KL to the teacher per position", show_label=False, elem_id="kl-plot")
    gr.Markdown(prose("studio", "figure-tip"))

    inputs = [text, position, temperature, top_k, pair.teacher, pair.student, user]
    outputs = [tokens_view, note, bars_plot, stats_md, kl_plot, wrong_plot]
    probe_btn.click(answer_dark_knowledge, inputs, outputs, api_name="dark_knowledge",
                    concurrency_limit=VIEW_CONCURRENCY, concurrency_id="dark_knowledge")
    temperature.change(answer_dark_knowledge, inputs, outputs, trigger_mode="always_last", show_progress="hidden",
                       concurrency_id="dark_knowledge", **PRIVATE)  # recomputes as the slider moves
    for trigger in (top_k.release, text.submit, position.submit):
        trigger(answer_dark_knowledge, inputs, outputs, trigger_mode="always_last", concurrency_id="dark_knowledge",
                **PRIVATE)


ANSWERS = Answers()
"""The view's answers, shared by users asking the same thing about the same run."""


def answer_dark_knowledge(text: str, position: Any, temperature: Any, top_k: Any, teacher_spec: str,
                          student_spec: str, user: UserSession | None = None):
    """`probe_dark_knowledge` as the page and the API call it (api_name `dark_knowledge`): the same question
    about the same run gets the answer given before, figures and all (ui.common.Answers)."""
    user = user if user is not None else UserSession()
    touch(user)
    key = (text, position, temperature, top_k, teacher_spec, student_spec, *question_of(user))
    return ANSWERS.get_or_make(key, lambda: probe_dark_knowledge(text, position, temperature, top_k, teacher_spec,
                                                                 student_spec, user), note_index=1)


def probe_dark_knowledge(text: str, position: Any, temperature: Any, top_k: Any, teacher_spec: str,
                         student_spec: str, user: UserSession | None = None):
    """Teacher vs students at one position of `text` (api_name `dark_knowledge`). Returns tokens HTML,
    note markdown, next-token bars, stats table markdown, KL strip, wrong-answer ranking."""
    user = user if user is not None else UserSession()
    try:
        position, top_k = as_int(position, "position"), as_int(top_k, "top-k")
        temperature = as_float(temperature, "temperature")
        models, models_note = compared(user, teacher_spec, student_spec)
        result = api.dark_knowledge(models.teacher, models.students, text, position, temperature, top_k)
    except Exception as exc:  # DistillError: its message; anything else (e.g. out of memory): one line
        return "", view_error(exc), None, "", None, None

    context = visuals.display_token(result["context"][-40:], max_len=40)
    title = f"Next token after “{context}” at T={temperature:g}"
    bars = visuals.next_token_bars(result["candidates"], result["probs"], result["actual"], title)
    strip = visuals.kl_strip(result["tokens"], result["kl"], f"KL(teacher ‖ student) per position at T={temperature:g}")
    wrong = visuals.wrong_answer_ranking(result["candidates"], result["probs"], result["actual"], top=10,
                                         title="The teacher's ranking of the wrong answers, next to the students'")
    note = (f"{models_note}  \nPosition {result['position']} of {len(result['tokens'])} tokens; ★ marks the actual "
            "next token. Wrong answers are ranked among the candidates shown (every model's top-k).")
    return tokens_html(result["tokens"], result["position"]), note, bars, stats_markdown(result), strip, wrong


def tokens_html(tokens: list[str], position: int) -> str:
    """The probe text as numbered token chips; the probed position is highlighted."""
    chips = []
    for i, token in enumerate(tokens):
        picked = i == position
        style = ("display:inline-flex;flex-direction:column;align-items:center;margin:2px;padding:2px 6px;"
                 "border-radius:6px;border:1px solid " + ("#e4572e;background:#fde3dc" if picked else "#ccc;background:#f7f7f7"))
        chips.append(f'<span style="{style}"><code style="font-size:14px;background:none">'
                     f"{html.escape(visuals.display_token(token))}</code>"
                     f'<span style="font-size:11px;color:#666">{i}</span></span>')
    return ('<div style="line-height:1.2"><div style="font-size:13px;color:#555;margin-bottom:4px">'
            "Tokens (position below each; the highlighted one is probed):</div>" + "".join(chips) + "</div>")


def stats_markdown(result: dict[str, Any]) -> str:
    actual = result["actual"]
    shown = f"`{visuals.display_token(actual)}`" if actual is not None else "— (end of text)"
    ranks = visuals.wrong_answer_ranks(result["candidates"], result["probs"], actual, top=WRONG_TOP)
    top = len(ranks["labels"])
    lines = [f"| model | entropy (nats) | rank of the actual next token {shown} | teacher's top-{top} wrong answers "
             f"in its own top {top} | mean KL to teacher over the text (nats) |",
             "|---|---:|---:|---:|---:|"]
    for name, entropy in result["entropy"].items():
        rank = result["actual_rank"][name] if result["actual_rank"] else "—"
        shared = sum(r <= top for r in ranks["ranks"][name])
        mean_kl = fmt_number(result["mean_kl"][name]) if name in result["mean_kl"] else "—"
        lines.append(f"| {name} | {entropy:.3f} | {rank} | {shared}/{top} | {mean_kl} |")
    return "\n".join(lines)
