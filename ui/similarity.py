"""The Similarity tab: linear CKA of every teacher layer against every student layer (before, after), the
mapped pairs with the cosine after the FitNets projection, and the pairs' CKA over the last session's steps
(api_name `similarity`)."""

from __future__ import annotations

import gradio as gr

import visuals
from distill_core import api
from ui.common import (PRIVATE, VIEW_CONCURRENCY, Answers, UserSession, compared, pairs_text, prose, question_of, touch,
                       view_error)
from ui.setup import Pair


def similarity_text() -> str:
    """The Similarity tab's default probe text: the first paragraph of assets/texts/sample_user_corpus.txt
    (not the held-out evaluation text)."""
    text = (api.ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.split()) > 20]
    return paragraphs[0] if paragraphs else text.strip()[:400]


def build_similarity(pair: Pair, user: gr.State) -> None:
    gr.Markdown(prose("similarity", "intro"))
    with gr.Accordion("Learn: hidden-state similarity and CKA (and its caveats)", open=False):
        gr.Markdown(prose("similarity", "learn"))
    text = gr.Textbox(similarity_text(), label="Probe text", lines=3, max_lines=8,
                      info="At least 50 tokens give a steadier CKA. The first token is left out.",
                      elem_id="similarity-text")
    similarity_btn = gr.Button("Compare hidden states", variant="primary", elem_id="similarity-btn")
    note = gr.Markdown(elem_id="similarity-note")
    cka_plot = gr.Plot(label="CKA", show_label=False, elem_id="cka-plot")
    pairs_plot = gr.Plot(label="Mapped pairs", show_label=False, elem_id="pairs-plot")
    steps_plot = gr.Plot(label="CKA over the steps", show_label=False, elem_id="cka-steps-plot")
    gr.Markdown(prose("studio", "figure-tip"))

    inputs, outputs = [text, pair.teacher, pair.student, user], [note, cka_plot, pairs_plot, steps_plot]
    similarity_btn.click(answer_similarity, inputs, outputs, api_name="similarity",
                         concurrency_limit=VIEW_CONCURRENCY, concurrency_id="similarity")
    text.submit(answer_similarity, inputs, outputs, concurrency_id="similarity", **PRIVATE)


ANSWERS = Answers()
"""The view's answers, shared by users asking the same thing about the same run."""


def answer_similarity(text: str, teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """`show_similarity` as the page and the API call it (api_name `similarity`): the same question about the
    same run gets the answer given before (ui.common.Answers)."""
    user = user if user is not None else UserSession()
    touch(user)
    key = (text, teacher_spec, student_spec, *question_of(user))
    return ANSWERS.get_or_make(key, lambda: show_similarity(text, teacher_spec, student_spec, user), note_index=0)


def show_similarity(text: str, teacher_spec: str, student_spec: str, user: UserSession | None = None):
    """Hidden-state similarity (api_name `similarity`): linear CKA of every teacher layer against every
    student layer (before, after), the mapped pairs' CKA and cosine after the FitNets projection, and the
    mapped pairs' CKA over the last session's steps. Returns note markdown and those three figures."""
    user = user if user is not None else UserSession()
    try:
        models, models_note = compared(user, teacher_spec, student_spec)
        pairs = models.layer_pairs()
        projection, projection_note = models.projection(pairs) if models.after is not None else (None, "")
        result = api.similarity_probe(models.teacher, models.students, text, pairs, projection)
    except Exception as exc:
        return view_error(exc), None, None, None

    heatmaps = visuals.cka_heatmaps(result["cka"], pairs, title=f"Linear CKA, every teacher layer × every student "
                                                                f"layer ({result['n_tokens']} tokens)")
    cosine = {api.AFTER: result["pair_cosine"][api.AFTER]} if api.AFTER in result["pair_cosine"] else None
    bars = visuals.pair_similarity_bars(pairs, result["pair_cka"], cosine, title="The mapped layer pairs")
    steps, values, step_pairs = visuals.snapshots_to_series((models.run or {}).get("probes") or [])
    over_steps = visuals.pair_cka_over_steps(steps, values, step_pairs or pairs,
                                             title="CKA of the mapped pairs during the session (first held-out block)")
    lines = [models_note,
             f"Layer pairs (student:teacher, {'the run' if models.summary else 'the pair'}'s layer map): "
             f"{pairs_text(pairs)}. The first token is left out ({result['n_tokens']} tokens measured)."]
    if projection_note:
        lines.append(projection_note)
    if models.run is not None and not steps:
        lines.append("The session's snapshots carry no CKA (the teacher cache kept the teacher unloaded).")
    return "  \n".join(lines), heatmaps, bars, over_steps
