"""The Distill tab's Data and augmentation section: where the training text comes from (the teacher, an
upload, pasted text, a Hugging Face dataset), what an uploaded file holds, and a preview of each augmenter
on the first few training texts before any session (api_name `augment_preview`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from distill_core import api
from ui.common import PRIVATE, Inputs, as_int, cap, error_markdown, one_line
from ui.knobs import CORPUS_CHOICES, CORPUS_GENERATED, CORPUS_HUB, CORPUS_PASTE, CORPUS_UPLOAD, recipe_config

PREVIEW_TEXTS = 3
"""Texts the augmentation preview shows per method."""
PREVIEW_WORDS = 60
"""Each previewed text is cut to its first this-many words (the preview stays readable and quick)."""
SYNONYM_NOTE = ("**synonym** picks without reading the sentence: each word gets a WordNet synonym from its most "
                "common senses in its most likely part of speech (words whose part of speech is a toss-up are left "
                "alone), so a word used in a rarer sense can still get the wrong one (*plant* in *plant cells* → "
                "*works*, as in a factory).")
"""What the synonym augmenter cannot do, said in the preview note when it is ticked."""
PREVIEW_STYLE = ("border-collapse:collapse;width:100%;font-size:0.9em;", "border:1px solid #d1d5db;padding:6px 8px;"
                 "vertical-align:top;text-align:left")


def build_data_section(defaults: api.DistillConfig, recipe: Inputs) -> tuple[Inputs, Inputs]:
    """The section's layout and its own handlers (visibility, upload inspection, preview). `recipe` holds the
    inputs made before it (teacher, preset, seq_len, seed); returns the section's inputs by name, and the
    preview's."""
    help_text = api.field_help()
    with gr.Accordion("Data and augmentation", open=False, elem_id="data-augmentation"):
        with gr.Row():
            with gr.Column():
                corpus_choice = gr.Radio(CORPUS_CHOICES, value=CORPUS_GENERATED, label="Training corpus",
                                         info="Teacher-generated: the teacher continues the preset's prompts "
                                              "(the quickstart's: assets/prompts-broad.txt, 341 in many registers; "
                                              "sequence-level KD; written once, then cached: the first time "
                                              "takes a minute or more on CPU).", elem_id="corpus-choice")
                upload = gr.File(label="Corpus file (.txt, .jsonl, .json, .csv, .parquet; UTF-8)",
                                 file_types=sorted(api.CORPUS_FORMATS), type="filepath", visible=False,
                                 elem_id="corpus-upload")
                pasted = gr.Textbox(label="Training text", lines=8, max_lines=16, visible=False,
                                    placeholder="Paste text here; blank lines separate documents.",
                                    elem_id="corpus-paste")
                with gr.Group(visible=False, elem_id="corpus-hub") as hub_group:
                    with gr.Row():
                        hub_dataset = gr.Textbox(label="Dataset id", placeholder="wikitext", elem_id="hub-dataset")
                        hub_config = gr.Textbox(label="Config (subset)", placeholder="wikitext-2-raw-v1",
                                                elem_id="hub-config")
                    with gr.Row():
                        hub_split = gr.Textbox(defaults.hub_split, label="Split", elem_id="hub-split")
                        hub_max_rows = gr.Number(defaults.hub_max_rows, label="Rows read", precision=0, minimum=1,
                                                 maximum=cap("hub_max_rows"), info=help_text["hub_max_rows"],
                                                 elem_id="hub-max-rows")
                corpus_column = gr.Dropdown([], value=None, label="Text column", allow_custom_value=True,
                                            visible=False, info=help_text["corpus_column"], elem_id="corpus-column")
                corpus_md = gr.Markdown(elem_id="corpus-info")
            with gr.Column():
                augment = gr.CheckboxGroup(
                    [(augmenter_label(name), name) for name in api.AUGMENTERS], value=defaults.augment_methods,
                    label="Augmenters", info="Each adds changed copies of the training text (never of the held-out "
                                             "text); the teacher labels them like any text.", elem_id="augment-methods")
                with gr.Row():
                    augment_strength = gr.Slider(0.01, 1, value=defaults.augment_strength, step=0.01, label="Strength",
                                                 info=help_text["augment_strength"], elem_id="augment-strength")
                    augment_copies = gr.Number(defaults.augment_copies, label="Copies per method", precision=0,
                                               minimum=1, maximum=cap("augment_copies"),
                                               info=help_text["augment_copies"], elem_id="augment-copies")
                preview_btn = gr.Button("Preview augmentation", elem_id="augment-preview-btn")
        preview_note = gr.Markdown(elem_id="augment-note")
        preview_table = gr.HTML(elem_id="augment-preview")

    corpus_choice.change(corpus_visibility, corpus_choice, [upload, pasted, hub_group, corpus_column],
                         show_progress="hidden", **PRIVATE)
    inspect = [upload, corpus_column, recipe.components["teacher"], recipe.components["seq_len"]]
    upload.upload(inspect_corpus_file, inspect, [corpus_column, corpus_md], **PRIVATE)
    upload.clear(lambda: (gr.update(choices=[], value=None), ""), None, [corpus_column, corpus_md],
                 show_progress="hidden", **PRIVATE)
    corpus_column.input(inspect_corpus_file, inspect, [corpus_column, corpus_md], **PRIVATE)
    section = Inputs(dict(corpus_choice=corpus_choice, upload=upload, pasted=pasted, hub_dataset=hub_dataset,
                          hub_config=hub_config, hub_split=hub_split, hub_max_rows=hub_max_rows,
                          corpus_column=corpus_column, augment=augment, augment_strength=augment_strength,
                          augment_copies=augment_copies))
    preview = recipe.pick(["teacher", "preset", "seed"]).plus(section.components)
    preview_btn.click(preview.bind(preview_augmentation), preview.set,
                      [preview_note, preview_table], api_name="augment_preview")
    return section, preview


def corpus_visibility(choice: str) -> tuple[Any, Any, Any, Any]:
    """Visibility of the upload, the pasted text, the hub dataset fields and the text column picker."""
    return (gr.update(visible=choice == CORPUS_UPLOAD), gr.update(visible=choice == CORPUS_PASTE),
            gr.update(visible=choice == CORPUS_HUB), gr.update(visible=choice in (CORPUS_UPLOAD, CORPUS_HUB)))


def augmenter_label(name: str) -> str:
    """`name: what it does` for the augmenter picker (the description without its parenthesised credits)."""
    spec = api.AUGMENTERS[name]
    short, depth = spec.description, 0
    if short.endswith(")"):  # drop the trailing "(nlpaug ...)" credit
        for i in range(len(short) - 1, 0, -1):
            depth += {")": 1, "(": -1}.get(short[i], 0)
            if depth == 0:
                short = short[:i].rstrip()
                break
    return f"{name}: {short}" + ("" if spec.offline else " (needs the hub)")


# ---------------------------------------------------------------------------------------
# an uploaded corpus file
# ---------------------------------------------------------------------------------------
def corpus_file_markdown(path: str, info: dict[str, Any], stats: dict[str, Any] | None, seq_len: int) -> str:
    name = Path(path).name
    if info["format"] == "text":
        read = f"**{name}**: text, {info['documents']:,} documents (paragraphs)"
    else:
        read = (f"**{name}**: {info['format'].upper()}, column `{info['column']}` of {len(info['columns'])} text "
                f"column{'s' if len(info['columns']) != 1 else ''}, {info['rows']:,} rows"
                + (f" ({info['empty_rows']:,} empty)" if info["empty_rows"] else "")
                + f" → {info['documents']:,} documents")
    read += f", {info['characters']:,} characters."
    if stats is None:
        return read
    counts = (f"{stats['tokens']:,} tokens with the teacher's tokenizer = {stats['blocks']:,} blocks of {seq_len} "
              f"({stats['train_blocks']:,} for training, {stats['val_blocks']:,} held out).")
    if not stats["enough"]:
        counts += " **Too short for a session:** it needs at least two blocks."
    return f"{read}  \n{counts}"


def inspect_corpus_file(path: str | None, column: str | None, teacher_spec: str, seq_len: Any) -> tuple[Any, str]:
    """An uploaded corpus file: its text columns for the column picker, and what a session would read from it
    (documents; tokens and blocks with the teacher's tokenizer), or the reason it cannot be read."""
    if not path:  # e.g. a column typed for a hub dataset: nothing to inspect, keep it
        return gr.skip(), ""
    try:
        columns = api.text_columns(path)
    except api.DistillError as exc:
        return gr.update(choices=[], value=None), error_markdown(str(exc))
    column = column if column in columns else None
    picker = gr.update(choices=columns, value=column)
    try:
        texts, info = api.read_corpus_file(path, column)
    except api.DistillError as exc:
        return picker, error_markdown(str(exc))
    if info["format"] != "text":
        picker = gr.update(choices=columns, value=info["column"])
    try:
        length = as_int(seq_len, "sequence length")
        stats = api.corpus_stats(api.tokenizer_of(teacher_spec or ""), texts, length)
    except Exception as exc:  # no tokenizer (e.g. a bad teacher spec): the counts without tokens
        return picker, f"{corpus_file_markdown(path, info, None, 0)}  \n*No token counts: {one_line(exc)}*"
    return picker, corpus_file_markdown(path, info, stats, length)


# ---------------------------------------------------------------------------------------
# the augmentation preview
# ---------------------------------------------------------------------------------------
def preview_augmentation(inputs: Inputs, values: dict[Any, Any]) -> tuple[str, str]:
    """Each ticked augmenter applied to the first few training texts of the chosen corpus source (api_name
    `augment_preview`), before any session. Inputs: teacher, preset, seed and the section's. Returns a note
    (markdown) and the table (HTML: method, original, augmented with the changed words marked, note); a
    method that fails shows its message in its row."""
    named = inputs.named(values)
    named["augment"] = list(named.get("augment") or [])
    if not named["augment"]:
        return "Tick at least one augmenter, then press **Preview augmentation**.", ""
    try:
        config = recipe_config(named)
        texts, where = api.first_texts(config, PREVIEW_TEXTS)
        sample = [clip_words(t) for t in texts if t.strip()][:PREVIEW_TEXTS]
        loaded = api.load_teacher(config.teacher) if "teacher_substitute" in config.augment_methods else None
        rows = api.augmentation_preview(sample, config.augment_methods, config.augment_strength, config.seed,
                                        teacher=loaded, n=PREVIEW_TEXTS, translation_models=config.translation_models)
    except api.DistillError as exc:
        return error_markdown(str(exc)), ""
    except Exception as exc:  # e.g. out of memory loading the teacher: one line, and the app stays up
        return error_markdown(one_line(exc)), ""
    methods = config.augment_methods
    failed = sorted({row["method"] for row in rows if row["error"]})
    note = (f"**Preview:** {len(methods)} method{'s' if len(methods) != 1 else ''} at strength "
            f"{config.augment_strength:g} (seed {config.seed}) on the first {len(sample)} texts of {where}, each cut "
            f"to its first {PREVIEW_WORDS} words. A session augments its training text the same way, "
            f"{config.augment_copies} cop{'y' if config.augment_copies == 1 else 'ies'} per method; held-out text is "
            "never augmented. Changes are counted and marked on words: spacing that an augmenter's re-joining of the "
            "words changed (`\"Martha` → `\" Martha`) is no change.")
    if "synonym" in methods:
        note += f"  \n{SYNONYM_NOTE}"
    if failed:
        note += f"  \n**Failed:** {', '.join(failed)} (see its row); a session with it would stop with that message."
    return note, preview_html(rows)


def clip_words(text: str, words: int = PREVIEW_WORDS) -> str:
    parts = text.split()
    return text.strip() if len(parts) <= words else " ".join(parts[:words])


WORD_MARKS = ('<span style="background:#fecaca;color:#111;text-decoration:line-through">',
              '<mark style="background:#fde68a;color:#111">')
"""How a changed word is marked: struck out in the original, highlighted in the augmented text."""
PUNCTUATION_MARKS = ('<span style="background:#cbd5e1;color:#111;padding:0 2px;text-decoration:line-through">',
                     '<span style="background:#cbd5e1;color:#111;padding:0 2px">')
"""A punctuation mark added, dropped or moved: grey, as it is not counted as a word."""


def marked_html(text: str, spans: list[tuple[int, int, str]], side: int) -> str:
    """`text` as HTML with its changed stretches (api.changed_words spans) marked; `side` 0 for the
    original, 1 for the augmented text."""
    pieces, last = [], 0
    for start, end, kind in spans:
        opening = (WORD_MARKS if kind == "word" else PUNCTUATION_MARKS)[side]
        closing = "</mark>" if opening.startswith("<mark") else "</span>"
        pieces += [html.escape(text[last:start]), opening, html.escape(text[start:end]), closing]
        last = end
    return "".join(pieces) + html.escape(text[last:])


def word_diff_html(original: str, augmented: str) -> tuple[str, str, api.WordChanges]:
    """Both texts as HTML with what changed marked, counted on words (api.changed_words): spacing that the
    augmenter's re-joining changed is neither marked nor counted; punctuation it moved is marked grey."""
    changes = api.changed_words(original, augmented)
    return (marked_html(original, changes.original_spans, 0), marked_html(augmented, changes.augmented_spans, 1),
            changes)


def change_note(changes: api.WordChanges) -> str:
    """A preview row's note: how many of the original's words changed, and punctuation apart."""
    if not changes.changed and not changes.punctuation:
        return "unchanged (too short, or no word this method can change)"
    note = f"{changes.changed} of {changes.words} words changed" if changes.changed else "no word changed"
    if changes.punctuation:
        marks = f"{changes.punctuation} punctuation mark{'s' if changes.punctuation != 1 else ''}"
        note += f"; {marks} added, dropped or moved (grey, not counted)"
    return note


def preview_html(rows: list[dict[str, Any]]) -> str:
    """The augmentation preview as an HTML table: method | original | augmented | note."""
    table, cell = PREVIEW_STYLE
    head = "".join(f'<th style="{cell}">{name}</th>' for name in ("method", "original", "augmented", "note"))
    body: list[str] = []
    spans: dict[str, int] = {}
    for row in rows:
        spans[row["method"]] = spans.get(row["method"], 0) + 1
    shown: set[str] = set()
    for row in rows:
        method = row["method"]
        cells = []
        if method not in shown:
            shown.add(method)
            family = api.AUGMENTERS[method].family
            cells.append(f'<td rowspan="{spans[method]}" style="{cell}" data-method="{method}"><b>{method}</b><br>'
                         f'<small>{html.escape(family)}</small></td>')
        if row["error"]:
            cells += [f'<td style="{cell}">{html.escape(row["original"])}</td>', f'<td style="{cell}">—</td>',
                      f'<td style="{cell}"><b>failed:</b> {html.escape(row["error"])}</td>']
        else:
            left, right, changes = word_diff_html(row["original"], row["augmented"])
            cells += [f'<td style="{cell}">{left}</td>', f'<td style="{cell}">{right}</td>',
                      f'<td style="{cell}">{change_note(changes)}</td>']
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="augment-preview" style="{table}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
