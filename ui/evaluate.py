"""The Evaluate tab: teacher, student before and student after measured now on the held-out text (api_name
`evaluate`), then one prompt continued by all three, greedy and sampled (api_name `generate`)."""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import (PRIVATE, VIEW_CONCURRENCY, UserSession, as_int, cap, compared, fmt_number, fmt_params, prose,
                       shown_path, view_error)
from ui.setup import Pair

GENERATE_PROMPT = "The baker opened the oven and"


def build_evaluate(pair: Pair, user: gr.State) -> None:
    gr.Markdown(prose("evaluate", "intro"))
    with gr.Accordion("Learn: perplexity, agreement, KL, speed; greedy and sampled text", open=False):
        gr.Markdown(prose("evaluate", "learn"))
    evaluate_btn = gr.Button("Evaluate teacher and students", variant="primary", elem_id="evaluate-btn")
    evaluate_note = gr.Markdown(elem_id="evaluate-note")
    evaluate_md = gr.Markdown(elem_id="evaluate-table")
    with gr.Accordion("Measurements (JSON)", open=False):
        evaluate_json = gr.JSON(label="evaluation", elem_id="evaluate-json")
    gr.Markdown("### Generations side by side")
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(GENERATE_PROMPT, label="Prompt", scale=3, elem_id="generate-prompt")
        new_tokens = gr.Number(40, label="New tokens", precision=0, minimum=1, maximum=cap("new_tokens") or 512,
                               scale=1, elem_id="generate-tokens")
        seed = gr.Number(0, label="Seed (sampling)", precision=0, scale=1, elem_id="generate-seed")
    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
    generate_note = gr.Markdown(elem_id="generate-note")
    generate_view = gr.HTML(elem_id="generate-view")
    with gr.Accordion("Continuations (JSON)", open=False):
        generate_json = gr.JSON(label="generations", elem_id="generate-json")

    evaluate_btn.click(evaluate_students, [pair.teacher, pair.student, user],
                       [evaluate_note, evaluate_md, evaluate_json], api_name="evaluate",
                       concurrency_limit=VIEW_CONCURRENCY, concurrency_id="evaluate")
    inputs = [prompt, new_tokens, seed, pair.teacher, pair.student, user]
    outputs = [generate_note, generate_view, generate_json]
    generate_btn.click(generate_side_by_side, inputs, outputs, api_name="generate", concurrency_limit=VIEW_CONCURRENCY,
                       concurrency_id="generate")
    prompt.submit(generate_side_by_side, inputs, outputs, concurrency_id="generate", **PRIVATE)


def evaluate_students(teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """Teacher, student before and student after on the held-out text (api_name `evaluate`): perplexity,
    top-1 agreement, KL to the teacher, parameters, size, tokens/s, and the trade in one sentence. Yields
    note markdown, the table as markdown and the measured rows (JSON) as each model's row is measured (the
    note says which model is being measured); the last yield adds the trade sentence."""
    user = user if user is not None else UserSession()
    try:
        yield "Loading the models and the held-out text …", "", None
        models, models_note = compared(user, teacher_spec, student_spec)
        blocks = api.heldout_blocks(models.config, models.teacher.tokenizer)
        names, rows = ["teacher", *models.students], {}
        where = api.speed_conditions(models.teacher.model)
        yield progress_note("Measuring", names, rows), evaluation_markdown(rows, names, models.config, blocks, where), None
        for name, row in api.evaluate_shared(models.teacher.model, models.students, models.teacher.tokenizer, blocks):
            rows[name] = row
            if len(rows) < len(names):
                yield (progress_note("Measuring", names, rows),
                       evaluation_markdown(rows, names, models.config, blocks, where), dict(rows))
    except Exception as exc:
        yield view_error(exc), "", None
        return
    sentence = api.trade_sentence(rows, api.AFTER if api.AFTER in rows else api.BEFORE)
    yield models_note, f"**{sentence}**\n\n" + evaluation_markdown(rows, names, models.config, blocks, where), rows


def progress_note(doing: str, names: list[str], done: dict[str, Any]) -> str:
    """The line a streaming view shows while it works: `Measuring student (after) … 3 of 3` (the next model
    not done yet), each model done so far named."""
    current = len(done)
    line = f"**{doing} {names[current]} … {current + 1} of {len(names)}**"
    return line + (f"  \nDone: {', '.join(done)}." if done else "")


def evaluation_markdown(rows: dict[str, dict[str, Any]], names: list[str], config: api.DistillConfig,
                        blocks: Any, where: str) -> str:
    """The table of every model in `names` (a column each; `…` for one not measured yet) and where its
    figures come from."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    metrics = [
        ("held-out perplexity ↓", lambda r: fmt_number(r["ppl"], 2)),
        ("top-1 agreement with the teacher ↑", lambda r: pct(r["top1_agreement"])),
        ("KL(teacher ‖ model), nats/token ↓", lambda r: fmt_number(r["kl_to_teacher"])),
        ("parameters", lambda r: fmt_params(r["params"])),
        ("size on disk (fp32 weights)", lambda r: f"{r['size_bytes'] / 1e6:,.1f} MB"),
        ("generation speed (greedy, batch 1) ↑", lambda r: f"{fmt_number(r.get('tokens_per_s'), 1)} tokens/s"),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(rows[name]) if name in rows else "…" for name in names) + " |"
              for label, cell in metrics]
    when = when_measured(rows.values())
    lines += ["", f"Measured {when} on {blocks.n_tokens:,} tokens of `{shown_path(config.eval_text)}` (blocks of "
                  f"{config.seq_len} tokens; never trained on); tokens/s measured {when} on {where}, from 32 greedy "
                  "tokens, best of 2."]
    return "\n".join(lines)


REUSED_AFTER_S = 10.0
"""A result measured longer ago than this was kept from an earlier request (api.evaluate_shared)."""


def when_measured(results: Any) -> str:
    """`just now`, or for results kept from an earlier request (the same models, the same inputs) when they were
    measured: `at 12:41:07 (kept for everyone looking at these models)`."""
    stamps = [r["measured_at"] for r in results if isinstance(r, dict) and r.get("measured_at")]
    if not stamps or time.time() - min(stamps) < REUSED_AFTER_S:
        return "just now"
    return f"at {time.strftime('%H:%M:%S', time.localtime(min(stamps)))} (kept for everyone looking at these models)"


def generate_side_by_side(prompt: str, new_tokens: Any, seed: Any, teacher_spec: str, student_spec: str,
                          user: UserSession | None = None):
    """One prompt, continued by the teacher, the student before and the student after, greedy and sampled
    with the same seed (api_name `generate`). Yields note markdown, the continuations as HTML cards, and
    the raw results (JSON: model -> greedy/sampled -> text, new_tokens, tokens_per_s), a card more as each
    model finishes."""
    user = user if user is not None else UserSession()
    try:
        new_tokens, seed = as_int(new_tokens, "new tokens"), as_int(seed, "seed")
        api.check_text(prompt or "", "prompt")
        yield "Loading the models …", "", None
        models, models_note = compared(user, teacher_spec, student_spec)
        every = {"teacher": models.teacher.model, **models.students}
        names, outputs = list(every), {}
        yield progress_note("Generating with", names, outputs), "", None
        for name, runs in api.generate_shared(every, models.teacher.tokenizer, prompt, new_tokens, seed):
            outputs[name] = runs
            if len(outputs) < len(names):
                yield progress_note("Generating with", names, outputs), generation_html(prompt, outputs, seed), dict(outputs)
    except Exception as exc:
        yield view_error(exc), "", None
        return
    when = when_measured(run for runs in outputs.values() for run in runs.values())
    rows = max(run.get("rows", 2) for runs in outputs.values() for run in runs.values())
    shared = f", with other users' prompts asked at the same time ({rows} rows)" if rows > 2 else ""
    note = (f"{models_note}  \nSampling: temperature 0.8, top-k 50, top-p 0.95, the same seed for every model. "
            f"Speeds: measured {when} on {api.speed_conditions(models.teacher.model)}, each continuation's tokens "
            f"over the time until it ended; greedy and sampled are decoded together in one batch{shared}.")
    yield note, generation_html(prompt, outputs, seed), outputs


def generation_html(prompt: str, outputs: dict[str, dict[str, dict[str, Any]]], seed: int) -> str:
    """One card per model: the greedy and the sampled continuation, each with its speed."""
    cards = []
    for name, runs in outputs.items():
        color = visuals.model_color(name)
        title_color = "#666" if color == visuals.STUDENT_BEFORE else color  # the light grey is hard to read as text
        parts = [f'<div style="font-weight:600;color:{title_color};font-size:15px;margin-bottom:6px">'
                 f'{html.escape(name)}</div>']
        for mode, label in (("greedy", "greedy"), ("sampled", f"sampled (seed {seed})")):
            out = runs[mode]
            parts.append(
                f'<div style="font-size:12px;color:#666;margin-top:8px">{label} · {out["new_tokens"]} tokens · '
                f'{fmt_number(out["tokens_per_s"], 1)} tokens/s</div>'
                f'<div style="white-space:pre-wrap;font-size:14px;line-height:1.45">'
                f'<span style="color:#888">{html.escape(prompt)}</span>{html.escape(out["text"])}</div>')
        cards.append(f'<div style="flex:1 1 0;min-width:240px;border:1px solid #ddd;border-top:4px solid {color};'
                     f'border-radius:8px;padding:10px 12px;background:#fff">{"".join(parts)}</div>')
    return f'<div style="display:flex;gap:12px;flex-wrap:wrap">{"".join(cards)}</div>'
