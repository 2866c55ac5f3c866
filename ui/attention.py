"""The Attention tab: one teacher layer/head and one student layer/head side by side (the student before and
after), their difference, and the entropy of every layer and head (api_name `attention`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

import visuals
from distill_core import api
from ui.common import (PRIVATE, VIEW_CONCURRENCY, Answers, Inputs, UserSession, as_int, compared, prose, question_of,
                       touch, view_error)
from ui.setup import Pair

ATTENTION_TEXT = "For breakfast I ate an apple, then I went to school."
MAX_ATTENTION_TOKENS = 96
"""Longer texts make unreadable maps (and heavy figures): the Attention tab asks for a shorter one."""


def build_attention(pair: Pair, user: gr.State) -> Inputs:
    """The tab; returns the inputs of `attention` by name (a dict input: the API lists them in the order they
    were created, the pair first)."""
    gr.Markdown(prose("attention", "intro"))
    with gr.Accordion("Learn: reading attention maps (I ate an apple)", open=False):
        gr.Markdown(prose("attention", "learn"))
    text = gr.Textbox(ATTENTION_TEXT, label="Text", elem_id="attention-text")
    with gr.Row(equal_height=True):
        teacher_layer = gr.Number(-1, label="Teacher layer", precision=0, minimum=-1,
                                  info="-1: the layer map's last pair", elem_id="teacher-layer")
        teacher_head = gr.Number(0, label="Teacher head", precision=0, minimum=0, elem_id="teacher-head")
        student_layer = gr.Number(-1, label="Student layer", precision=0, minimum=-1,
                                  info="-1: the layer map's last pair", elem_id="student-layer")
        student_head = gr.Number(0, label="Student head", precision=0, minimum=0, elem_id="student-head")
        average_heads = gr.Checkbox(False, label="Average over heads", info="One map per layer: the mean of its heads",
                                    elem_id="average-heads")
    attention_btn = gr.Button("Show attention", variant="primary", elem_id="attention-btn")
    note = gr.Markdown(elem_id="attention-note")
    maps_plot = gr.Plot(label="Attention maps", show_label=False, elem_id="attention-plot")
    with gr.Row():
        difference_plot = gr.Plot(label="Difference", show_label=False, elem_id="difference-plot")
        entropy_plot = gr.Plot(label="Every layer and head", show_label=False, elem_id="entropy-plot")
    gr.Markdown(prose("studio", "figure-tip"))

    inputs = Inputs(dict(teacher=pair.teacher, student=pair.student, text=text, teacher_layer=teacher_layer,
                         teacher_head=teacher_head, student_layer=student_layer, student_head=student_head,
                         average_heads=average_heads, user=user))
    handler, outputs = inputs.bind(answer_attention), [note, maps_plot, difference_plot, entropy_plot]
    attention_btn.click(handler, inputs.set, outputs, api_name="attention", concurrency_limit=VIEW_CONCURRENCY,
                        concurrency_id="attention")
    for trigger in (text.submit, teacher_layer.submit, teacher_head.submit, student_layer.submit, student_head.submit,
                    average_heads.input):
        trigger(handler, inputs.set, outputs, trigger_mode="always_last", concurrency_id="attention", **PRIVATE)
    return inputs


ANSWERS = Answers()
"""The view's answers, shared by users asking the same thing about the same run."""


def answer_attention(inputs: Inputs, values: dict[Any, Any]):
    """`show_attention` as the page and the API call it (api_name `attention`): the same question about the same
    run gets the answer given before (ui.common.Answers)."""
    named = inputs.named(values)
    user = named.get("user") or UserSession()
    touch(user)
    key = (*(repr(named.get(name)) for name in sorted(named) if name != "user"), *question_of(user))
    return ANSWERS.get_or_make(key, lambda: show_attention(inputs, values), note_index=0)


def optional_int(value: Any, name: str) -> int | None:
    """An optional UI integer: empty or -1 means None (the default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = as_int(value, name)
    return None if number == -1 else number


def pick_index(value: int | None, default: int, count: int, what: str) -> int:
    index = default if value is None else value
    if not 0 <= index < count:
        raise api.DistillError(f"{what} {index} does not exist: it has {what.split()[-1]}s 0..{count - 1}")
    return index


def attention_result(models: api.Comparison, text: str) -> dict[str, Any]:
    """The attention probe of every layer and head of the models on `text`. Its maps come from the engine's
    shared forward passes (api.FORWARDS): changing a layer or a head, or another user asking about the same
    text and models, does not rerun the models."""
    api.check_text(text, "probe text")
    n = len(models.teacher.tokenizer(text, add_special_tokens=False)["input_ids"])  # as the probe encodes it
    if n > MAX_ATTENTION_TOKENS:
        raise api.DistillError(f"the text has {n} tokens; the attention view shows at most "
                               f"{MAX_ATTENTION_TOKENS}: shorten it")
    return api.attention_probe(models.teacher, models.students, text)


def show_attention(inputs: Inputs, values: dict[Any, Any]):
    """Attention maps of one teacher layer/head and one student layer/head side by side (api_name `attention`;
    `values`: {component: value} of `inputs`); a layer of -1 (or empty): the layer map's last pair, a head of
    -1: head 0. Returns note markdown (naming the layers and heads shown), the side-by-side heatmaps, the
    difference map and the per-head entropy overview; on an error its message, and the figures left as they were."""
    named = inputs.named(values)
    user, average = named.get("user") or UserSession(), bool(named.get("average_heads"))
    try:
        chosen = {name: optional_int(named.get(name), name.replace("_", " "))
                  for name in ("teacher_layer", "teacher_head", "student_layer", "student_head")}
        models, models_note = compared(user, named.get("teacher"), named.get("student"))
        pairs = models.layer_pairs()
        result = attention_result(models, named.get("text"))
        t_maps, s_maps = result["maps"]["teacher"], result["maps"][api.BEFORE]  # (layers, heads, t, t)
        t_layer = pick_index(chosen["teacher_layer"], pairs[-1][1], t_maps.shape[0], "the teacher layer")
        t_head = pick_index(chosen["teacher_head"], 0, t_maps.shape[1], "the teacher head")
        s_default = next((s for s, t in reversed(pairs) if t == t_layer), pairs[-1][0])
        s_layer = pick_index(chosen["student_layer"], s_default, s_maps.shape[0], "the student layer")
        s_head = pick_index(chosen["student_head"], 0, s_maps.shape[1], "the student head")
    except Exception as exc:  # the figures already shown stay: the message says why nothing new came
        return view_error(exc), gr.skip(), gr.skip(), gr.skip()

    def pick(maps: Any, layer: int, head: int) -> Any:
        return maps[layer].mean(0) if average else maps[layer, head]

    head_text = lambda head: "heads averaged" if average else f"head {head}"  # noqa: E731
    shown = {"teacher": pick(t_maps, t_layer, t_head)}
    titles = [f"teacher · layer {t_layer} · {head_text(t_head)}"]
    for name in models.students:
        shown[name] = pick(result["maps"][name], s_layer, s_head)
        titles.append(f"{name} · layer {s_layer} · {head_text(s_head)}")
    tokens = result["tokens"]
    heatmaps = visuals.attention_heatmaps(tokens, shown, titles)
    student = api.AFTER if api.AFTER in shown else api.BEFORE
    difference = visuals.attention_difference(tokens, shown[student], shown["teacher"], (student, "teacher"),
                                              title="Where the student attends more (red) or less (blue)")
    entropy = visuals.head_entropy_grid(
        result["entropy"], {name: (t_layer if name == "teacher" else s_layer,
                                   None if average else (t_head if name == "teacher" else s_head))
                            for name in result["entropy"]},
        title="Every layer and head: how focused is its attention?")

    visible = ~visuals.causal_mask(len(tokens))
    gaps = ", ".join(f"{name} {abs(shown[name] - shown['teacher'])[visible].mean():.3f}" for name in models.students)
    mapped = [f"{s}:{t}" for s, t in pairs if (s, t) == (s_layer, t_layer)]
    heads = "heads averaged" if average else f"teacher head {t_head}, student head {s_head}"
    lines = [models_note,
             f"**Teacher layer {t_layer}, student layer {s_layer}**"
             + (f" (the mapped pair `{mapped[0]}`, student:teacher)" if mapped else " (not a mapped pair)")
             + f", {heads}; {len(tokens)} tokens. Mean absolute difference from the teacher's map over the "
               f"visible cells: {gaps}."]
    return "  \n".join(lines), heatmaps, difference, entropy
