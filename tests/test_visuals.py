"""Tests for visuals/: figure structure, not pixels."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from visuals import (
    MASKED_NOTE,
    alignment_figure,
    attention_difference,
    attention_heatmaps,
    cka_heatmaps,
    display_token,
    graded_continuations,
    head_entropy_grid,
    kl_strip,
    loss_curves,
    next_token_bars,
    pair_cka_over_steps,
    pair_similarity_bars,
    size_quality_figure,
    snapshots_to_series,
    wrong_answer_ranking,
    wrong_answer_ranks,
)
from visuals.alignment import MERGED, MERGED_BAND

HISTORY = [
    {"kind": "step", "step": 1, "loss": 5.0, "kd_loss": 3.0, "ce_loss": 6.0, "lr": 1e-4,
     "tokens_per_s": 900.0},
    {"kind": "step", "step": 2, "loss": 4.5, "kd_loss": 2.8, "ce_loss": 5.5, "attention_loss": 0.3},
    {"kind": "eval", "step": 2, "held_out_loss": 4.5, "held_out_ppl": 90.0, "val_loss": 4.0, "teacher_ppl": 30.0},
    {"kind": "step", "step": 3, "loss": 4.1, "kd_loss": 2.5, "ce_loss": 5.2},
    {"kind": "eval", "step": 3, "held_out_ppl": 80.0, "val_ppl": 50.0},
    {"kind": "log", "message": "ignored"},
]


def _annotation_texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


# --- display_token ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    (" the", "␣the"), ("\n", "\\n"), ("", "∅"), ("  ", "␣␣"), ("a\tb", "a\\tb"),
    ("end ", "end␣"), ("Paris", "Paris"), ("\x00", "\\x00"),
])
def test_display_token_makes_whitespace_visible(raw: str, shown: str) -> None:
    assert display_token(raw) == shown


def test_display_token_truncates_long_tokens() -> None:
    assert display_token("x" * 40, max_len=10) == "x" * 9 + "…"


# --- loss_curves ---------------------------------------------------------------------------

def test_loss_curves_one_line_per_term_plus_eval_lines() -> None:
    fig = loss_curves(HISTORY)
    names = [t.name for t in fig.data]
    assert names == ["total", "kd", "ce", "attention", "held-out text ppl", "corpus validation ppl", "teacher (held-out text)"]
    left = {t.name: t for t in fig.data if t.xaxis == "x"}
    assert list(left["total"].x) == [1, 2, 3] and list(left["total"].y) == [5.0, 4.5, 4.1]
    assert list(left["attention"].x) == [2]  # only the step that logged it


def test_loss_curves_eval_panel_is_log_with_markers() -> None:
    fig = loss_curves(HISTORY)
    held_out, train, teacher = (t for t in fig.data if t.xaxis == "x2")
    assert fig.layout.yaxis2.type == "log"
    assert "markers" in held_out.mode
    assert list(held_out.y) == [90.0, 80.0]
    # validation ppl falls back to exp(val_loss) when only the loss was logged
    assert list(train.y) == pytest.approx([math.exp(4.0), 50.0])
    # the teacher's held-out perplexity is the dotted target line across all steps
    assert list(teacher.y) == [30.0, 30.0] and teacher.line.dash == "dot"


def test_loss_curves_axis_titles_and_subplot_titles() -> None:
    fig = loss_curves(HISTORY)
    assert fig.layout.xaxis.title.text == "step" and fig.layout.xaxis2.title.text == "step"
    assert fig.layout.yaxis.title.text == "loss (nats)"
    assert "perplexity" in fig.layout.yaxis2.title.text
    assert {"Training loss terms", "Held-out evaluation"} <= set(_annotation_texts(fig))


def test_loss_curves_empty_history() -> None:
    fig = loss_curves([])
    assert len(fig.data) == 0
    assert "No steps yet — press Run" in _annotation_texts(fig)
    assert fig.layout.yaxis2.type == "log"


def test_loss_curves_steps_without_eval_say_so() -> None:
    fig = loss_curves(HISTORY[:2])
    assert "No evaluation yet" in _annotation_texts(fig)
    assert "No steps yet — press Run" not in _annotation_texts(fig)


# --- next_token_bars -----------------------------------------------------------------------

LABELS = [" a", " the", "\n", " cat"]
PROBS = {"teacher": [0.1, 0.5, 0.05, 0.3], "student (before)": [0.4, 0.1, 0.2, 0.1],
         "student (after)": [0.15, 0.45, 0.05, 0.25]}


def test_next_token_bars_panels_and_titles() -> None:
    fig = next_token_bars(LABELS, PROBS, actual_label=" cat", title="after 'The'")
    assert [t.name for t in fig.data] == list(PROBS)
    assert all(isinstance(t, go.Bar) and t.orientation == "h" for t in fig.data)
    assert [a.text for a in fig.layout.annotations][:3] == list(PROBS)
    assert fig.layout.xaxis.title.text == "probability"
    x_max = 0.5 * 1.1
    for axis in (fig.layout.xaxis, fig.layout.xaxis2, fig.layout.xaxis3):
        assert tuple(axis.range) == pytest.approx((0.0, x_max))


def test_next_token_bars_highest_teacher_prob_on_top() -> None:
    fig = next_token_bars(LABELS, PROBS, actual_label=" cat")
    axis = fig.layout.yaxis
    assert axis.autorange == "reversed"  # row 0 is drawn at the top
    top_to_bottom = [text for _, text in sorted(zip(axis.tickvals, axis.ticktext))]
    assert top_to_bottom == ["␣the", "★ ␣cat", "␣a", "\\n"]
    # every panel uses the same row order: the teacher bars are sorted, the students follow them
    assert list(fig.data[0].x) == [0.5, 0.3, 0.1, 0.05]
    assert list(fig.data[1].x) == [0.1, 0.1, 0.4, 0.2]


def test_next_token_bars_marks_actual_token() -> None:
    fig = next_token_bars(LABELS, PROBS, actual_label=" cat")
    for trace in fig.data:
        widths = list(trace.marker.line.width)
        assert widths == [0, 2.5, 0, 0]  # " cat" is row 1 after sorting
    assert sum("★" in text for text in fig.layout.yaxis.ticktext) == 1


def test_next_token_bars_actual_outside_candidates_noted_in_title() -> None:
    fig = next_token_bars(LABELS, PROBS, actual_label=" dog")
    assert not any("★" in text for text in fig.layout.yaxis.ticktext)
    assert "␣dog" in fig.layout.title.text


def test_next_token_bars_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        next_token_bars(LABELS, {"teacher": [0.5, 0.5]})


# --- kl_strip --------------------------------------------------------------------------------

def test_kl_strip_shape_scale_and_labels() -> None:
    tokens = ["The", " cat", " sat", "\n"]
    kl = {"student (before)": [0.5, 2.0, 1.0, float("nan")],
          "student (after)": np.array([0.1, 0.4, 0.2, np.nan])}
    fig = kl_strip(tokens, kl)
    (heatmap,) = fig.data
    z = np.asarray(heatmap.z, dtype=float)
    assert z.shape == (2, 4)
    assert z[0, 1] == 2.0 and np.isnan(z[0, 3])
    assert heatmap.zmin == 0 and heatmap.zmax == 2.0  # one scale across rows
    assert list(heatmap.y) == list(kl)
    assert heatmap.colorbar.title.text == "KL (nats)"
    assert list(fig.layout.xaxis.ticktext) == ["The", "␣cat", "␣sat", "\\n"]
    assert "%{customdata}" in heatmap.hovertemplate and "%{z" in heatmap.hovertemplate
    assert heatmap.customdata[0][1] == "␣cat"


def test_kl_strip_repeated_tokens_stay_separate_columns() -> None:
    fig = kl_strip(["a", "a", "a"], {"student": [0.1, 0.2, 0.3]})
    assert list(fig.data[0].x) == [0, 1, 2]


def test_kl_strip_all_nan_and_mismatch() -> None:
    fig = kl_strip(["x", "y"], {"student": [float("nan")] * 2})
    assert fig.data[0].zmax == 1.0
    with pytest.raises(ValueError):
        kl_strip(["x", "y"], {"student": [0.1]})


# --- size_quality_figure -------------------------------------------------------------------

TEACHER_ROW = {"teacher_params": 134_515_008, "teacher_ppl": 63.7, "teacher_tokens_per_s": 10.2}
SIZE_ROWS = [
    {"spec": "layers:10", "params": 56_000_000, "ppl_before": 25_000.0, "ppl": 410.0, "top1_agreement": 0.2,
     "kl_to_teacher": 2.5, "tokens_per_s": 25.0, "wall_s": 100.0, "error": None, **TEACHER_ROW},
    {"spec": "layers:15", "params": 78_000_000, "ppl_before": 2_400.0, "ppl": 190.0, "top1_agreement": 0.3,
     "kl_to_teacher": 1.6, "tokens_per_s": 17.5, "wall_s": 120.0, "error": None, **TEACHER_ROW},
    {"spec": "layers:20", "params": 99_100_000, "ppl_before": 327.2, "ppl": 121.1, "top1_agreement": 0.44,
     "kl_to_teacher": 1.07, "tokens_per_s": 12.0, "wall_s": 150.0, "error": None, **TEACHER_ROW},
]


def _trace(fig: go.Figure, name: str):
    return next(t for t in fig.data if t.name == name)


def test_size_quality_one_point_per_student_plus_teacher() -> None:
    fig = size_quality_figure(SIZE_ROWS)
    after = _trace(fig, "student after distillation")
    assert list(after.x) == pytest.approx([56.0, 78.0, 99.1]) and list(after.y) == [410.0, 190.0, 121.1]
    before = _trace(fig, "student before distillation")
    assert list(before.y) == [25_000.0, 2_400.0, 327.2] and before.opacity < 1  # faded
    teacher = _trace(fig, "teacher")
    assert list(teacher.x) == pytest.approx([134.515008]) and list(teacher.y) == [63.7]
    assert teacher.marker.symbol == "star" and teacher.marker.color != after.marker.color
    # one dotted segment per student joins its before and after markers (None separates them)
    joins = _trace(fig, "before → after")
    assert [y for y in joins.y if y is not None] == [25_000.0, 410.0, 2_400.0, 190.0, 327.2, 121.1]
    assert len(fig.data) == 4


def test_size_quality_labels_axes_and_title() -> None:
    fig = size_quality_figure(SIZE_ROWS)
    after = _trace(fig, "student after distillation")
    assert "text" in after.mode
    assert after.text[0] == "layers:10<br>25.0 tok/s" and after.text[2] == "layers:20<br>12.0 tok/s"
    assert "10.2 tok/s" in _trace(fig, "teacher").text[0]
    assert fig.layout.xaxis.title.text == "parameters (millions)"
    assert "perplexity" in fig.layout.yaxis.title.text
    assert fig.layout.title.text == "Size vs quality"


def test_size_quality_log_axis_only_for_a_wide_range() -> None:
    assert size_quality_figure(SIZE_ROWS).layout.yaxis.type == "log"  # 63.7 .. 25000
    narrow = [dict(row, ppl_before=row["ppl"] * 1.5) for row in SIZE_ROWS[1:]]  # 63.7 .. 285
    fig = size_quality_figure(narrow)
    assert fig.layout.yaxis.type == "linear" and "log" not in fig.layout.yaxis.title.text


def test_size_quality_failed_and_partial_rows() -> None:
    failed = {"spec": "layers:99", "params": None, "ppl_before": None, "ppl": None, "tokens_per_s": None,
              "error": "more layers than the teacher has", **TEACHER_ROW}
    fig = size_quality_figure(SIZE_ROWS[:1] + [failed])
    assert len(_trace(fig, "student after distillation").x) == 1
    assert any("layers:99" in text for text in _annotation_texts(fig))
    # a row without before-perplexity or speed still plots its after point
    fig = size_quality_figure([dict(SIZE_ROWS[0], ppl_before=None, tokens_per_s=None)])
    assert [t.name for t in fig.data] == ["student after distillation", "teacher"]
    assert fig.data[0].text[0] == "layers:10<br>— tok/s"


def test_size_quality_empty() -> None:
    fig = size_quality_figure([])
    assert len(fig.data) == 0
    assert "No students yet — press Compare sizes" in _annotation_texts(fig)


# --- attention -------------------------------------------------------------------------------

TOKENS = ["I", " ate", " an", " apple"]


def _causal(t: int, seed: int) -> np.ndarray:
    """A random causal attention map: rows sum to 1, zeros above the diagonal."""
    rng = np.random.default_rng(seed)
    m = np.tril(rng.random((t, t)) + 0.05)
    return m / m.sum(1, keepdims=True)


def _heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if t.type == "heatmap"]


def test_attention_heatmaps_panels_labels_and_shared_scale() -> None:
    maps = {"teacher": _causal(4, 0), "student (before)": _causal(4, 1), "student (after)": _causal(4, 2)}
    fig = attention_heatmaps(TOKENS, maps, titles=["teacher · layer 3", "before · layer 1", "after · layer 1"])
    heatmaps = _heatmaps(fig)
    assert len(heatmaps) == 3 and len(fig.data) == 6  # one heatmap and one hatched mask per panel
    assert [a.text for a in fig.layout.annotations][:3] == ["teacher · layer 3", "before · layer 1", "after · layer 1"]
    # one colour scale for every panel: 0 .. the largest weight outside the first (always 1) row
    assert all(h.coloraxis == "coloraxis" for h in heatmaps)
    expected_max = max(m[1:].max() for m in maps.values())
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == pytest.approx(expected_max)
    # token labels on both axes, query rows top to bottom
    for axis in (fig.layout.xaxis, fig.layout.yaxis, fig.layout.xaxis3, fig.layout.yaxis3):
        assert list(axis.ticktext) == ["I", "␣ate", "␣an", "␣apple"]
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # reversed: row 0 on top
    assert fig.layout.xaxis.title.text.startswith("key") and fig.layout.yaxis.title.text.startswith("query")


def test_attention_heatmaps_mask_the_future() -> None:
    m = _causal(4, 0)
    fig = attention_heatmaps(TOKENS, {"teacher": m})
    z = np.array(_heatmaps(fig)[0].z, dtype=float)  # None -> nan
    assert z.shape == (4, 4)
    assert np.isnan(z[np.triu_indices(4, k=1)]).all()
    assert np.allclose(z[np.tril_indices(4)], m[np.tril_indices(4)])
    masks = [t for t in fig.data if t.name == MASKED_NOTE]
    assert len(masks) == 1 and masks[0].fill == "toself" and masks[0].fillpattern.shape == "/"
    assert masks[0].showlegend  # the legend says what the hatching means


def test_attention_heatmaps_reject_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        attention_heatmaps(TOKENS, {"teacher": np.ones((3, 3))})
    with pytest.raises(ValueError):
        attention_heatmaps(TOKENS, {})


def test_attention_difference_is_centred_on_zero() -> None:
    a, b = _causal(4, 0), _causal(4, 1)
    fig = attention_difference(TOKENS, a, b, ("student (after)", "teacher"))
    (heatmap,) = _heatmaps(fig)
    z = np.array(heatmap.z, dtype=float)
    assert np.allclose(z[np.tril_indices(4)], (a - b)[np.tril_indices(4)])
    assert np.isnan(z[0, 1])
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert heatmap.zmax == pytest.approx(np.abs(np.tril(a - b)).max())
    assert fig.layout.annotations[0].text == "student (after) − teacher"
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]


def test_head_entropy_grid_small_multiples_and_selection() -> None:
    rng = np.random.default_rng(0)
    entropy = {"teacher": rng.random((6, 4)), "student (before)": rng.random((3, 4))}
    fig = head_entropy_grid(entropy, {"teacher": (5, 2), "student (before)": (1, None)})
    heatmaps = _heatmaps(fig)
    assert [np.array(h.z, dtype=float).shape for h in heatmaps] == [(6, 4), (3, 4)]
    assert [a.text for a in fig.layout.annotations][:2] == list(entropy)
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # layer 0 on top
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    one_head, whole_layer = fig.layout.shapes
    assert (one_head.x0, one_head.x1, one_head.y0, one_head.y1) == (1.5, 2.5, 4.5, 5.5)
    assert (whole_layer.x0, whole_layer.x1) == (-0.5, 3.5) and whole_layer.xref == "x2"


# --- similarity ------------------------------------------------------------------------------

def test_cka_heatmaps_axes_scale_and_mapped_pairs() -> None:
    rng = np.random.default_rng(0)
    cka = {"student (before)": rng.random((4, 2)), "student (after)": rng.random((4, 2))}
    fig = cka_heatmaps(cka, [[0, 0], [1, 3]])
    heatmaps = _heatmaps(fig)
    assert len(heatmaps) == 2 and np.array(heatmaps[0].z, dtype=float).shape == (4, 2)  # teacher rows, student cols
    assert fig.layout.xaxis.title.text == "student layer" and fig.layout.yaxis.title.text == "teacher layer"
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    marks = [t for t in fig.data if t.type == "scatter"]
    assert len(marks) == 2 and [m.showlegend for m in marks] == [True, False]
    assert list(marks[0].x) == [0, 1] and list(marks[0].y) == [0, 3]  # (student, teacher)
    assert marks[0].customdata[1][0] == pytest.approx(cka["student (before)"][3, 1])


def test_pair_similarity_bars_cka_and_cosine_panels() -> None:
    pairs = [[0, 0], [1, 3]]
    fig = pair_similarity_bars(pairs, {"student (before)": [0.5, 0.2], "student (after)": [0.6, 0.7]},
                               {"student (after)": [0.9, 0.8]})
    assert [(t.name, t.xaxis) for t in fig.data] == [("student (before)", "x"), ("student (after)", "x"),
                                                      ("student (after)", "x2")]
    assert list(fig.data[0].x) == ["0:0", "1:3"]
    assert fig.layout.yaxis.title.text == "linear CKA" and fig.layout.yaxis2.title.text == "cosine similarity"
    assert len(pair_similarity_bars(pairs, {"student": [0.1, 0.2]}).data) == 1
    with pytest.raises(ValueError):
        pair_similarity_bars(pairs, {"student": [0.1]})


def test_pair_cka_over_steps_one_line_per_pair_and_the_mean() -> None:
    fig = pair_cka_over_steps([0, 6, 12], [[0.2, 0.4], [0.3, 0.6], [0.5, 0.7]], [[0, 0], [1, 3]])
    assert [t.name for t in fig.data] == ["0:0", "1:3", "mean of the pairs"]
    assert list(fig.data[1].x) == [0, 6, 12] and list(fig.data[1].y) == [0.4, 0.6, 0.7]
    assert list(fig.data[2].y) == pytest.approx([0.3, 0.45, 0.6])
    assert fig.layout.xaxis.title.text == "step" and "CKA" in fig.layout.yaxis.title.text
    assert tuple(fig.layout.yaxis.range) == (0, 1.02)
    empty = pair_cka_over_steps([], [], [[0, 0]])
    assert len(empty.data) == 1 and "No snapshots yet" in _annotation_texts(empty)[0]


def test_snapshots_to_series_reads_probe_events() -> None:
    events = [{"kind": "probe", "step": 0, "layer_pairs": [[0, 0], [1, 3]], "pair_cka": [0.9, 0.2]},
              {"kind": "probe", "step": 6, "candidates": []},  # a teacher-cache session: no CKA
              {"kind": "probe", "step": 12, "layer_pairs": [[0, 0], [1, 3]], "pair_cka": [0.95, 0.5]}]
    assert snapshots_to_series(events) == ([0, 12], [[0.9, 0.2], [0.95, 0.5]], [[0, 0], [1, 3]])
    assert snapshots_to_series([]) == ([], [], [])


# --- wrong-answer ranking --------------------------------------------------------------------

FRUIT = [" apple", " orange", " banana", " egg", " onion"]
FRUIT_PROBS = {"teacher": [0.6, 0.2, 0.01, 0.1, 0.09], "student (before)": [0.1, 0.1, 0.5, 0.2, 0.1],
               "student (after)": [0.5, 0.25, 0.02, 0.12, 0.11]}


def test_wrong_answer_ranks_leave_out_the_actual_token() -> None:
    result = wrong_answer_ranks(FRUIT, FRUIT_PROBS, " apple", top=3)
    assert result["labels"] == [" orange", " egg", " onion"]  # the teacher's order of the wrong answers
    assert result["ranks"]["teacher"] == [1, 2, 3]
    assert result["ranks"]["student (after)"] == [1, 2, 3]
    assert result["ranks"]["student (before)"] == [3, 2, 4]  # banana is its favourite wrong answer (ties by order)
    assert result["n_wrong"] == 4
    assert wrong_answer_ranks(FRUIT, FRUIT_PROBS, None)["n_wrong"] == 5  # end of text: every candidate is wrong


def test_wrong_answer_ranking_bump_chart() -> None:
    fig = wrong_answer_ranking(FRUIT, FRUIT_PROBS, " apple", top=4)
    assert len(fig.data) == 4  # one line per wrong answer
    orange = fig.data[0]
    assert list(orange.x) == [0, 1, 2] and list(orange.y) == [1, 3, 1]
    assert orange.text[0] == "1. ␣orange"
    assert list(fig.layout.xaxis.ticktext) == list(FRUIT_PROBS)  # the teacher first
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # rank 1 on top
    assert "rank" in fig.layout.yaxis.title.text


def _alignment_result() -> dict:
    # "the breakfast": teacher "the", " breakfast"; student "t", "he", " break", "fast"
    return {"teacher": {"pieces": ["the", " breakfast"], "spans": [(0, 3), (3, 13)], "one_to_one": [False, False]},
            "student": {"pieces": ["t", "he", " break", "fast"], "spans": [(0, 1), (1, 3), (3, 9), (9, 13)],
                        "one_to_one": [False, False, False, False]},
            "groups": [{"teacher": [0, 0], "student": [0, 1], "start": 0, "end": 3, "one_to_one": False},
                       {"teacher": [1, 1], "student": [2, 3], "start": 3, "end": 13, "one_to_one": False}],
            "one_to_one_share": 0.0, "bytes": 13}


def test_alignment_figure_draws_each_token_over_its_bytes_and_a_band_per_span() -> None:
    fig = alignment_figure(_alignment_result(), "title")
    shapes = fig.layout.shapes
    assert len(shapes) == 2 + 2 + 4  # two bands, two teacher tokens, four student tokens
    bands = [s for s in shapes if s.fillcolor == MERGED_BAND]
    assert [(b.x0, b.x1) for b in bands] == [(0, 3), (3, 13)]
    tokens = [s for s in shapes if s.fillcolor == MERGED]
    assert len(tokens) == 6  # none has a one-to-one partner
    labels = fig.data[0].text
    assert list(labels) == ["the", "␣breakfast", "t", "he", "␣break", "fast"]
    assert list(fig.layout.yaxis.ticktext) == ["teacher", "student"]


def test_alignment_figure_wraps_long_texts_by_whole_spans() -> None:
    groups = [{"teacher": [i, i], "student": [i, i], "start": 4 * i, "end": 4 * i + 4, "one_to_one": True}
              for i in range(30)]
    side = {"pieces": ["abcd"] * 30, "spans": [(4 * i, 4 * i + 4) for i in range(30)], "one_to_one": [True] * 30}
    fig = alignment_figure({"teacher": side, "student": side, "groups": groups, "one_to_one_share": 1.0,
                                    "bytes": 120}, line_bytes=40)
    assert list(fig.layout.yaxis.ticktext) == ["teacher", "student"] * 3  # 120 bytes in lines of 40
    assert max(s.x1 for s in fig.layout.shapes) <= 40


GRADED = {"prompt": "The", "tokens": [" cat", " sat", "\n"], "teacher_prob": [0.5, 1e-6, 0.01],
          "model_prob": [0.4, 0.3, 0.2], "reverse_kl": [0.1, 5.0, 2.0],
          "teacher_top": [[(" cat", 0.5), (" dog", 0.3)], [(" ran", 0.6)], [(".", 0.4)]], "mean_nll": 5.3,
          "mean_reverse_kl": 2.37}


def test_graded_continuations_colour_each_token_by_the_teachers_grade():
    fig = graded_continuations({"student (after)": GRADED, "teacher": {**GRADED, "tokens": [" a"] * 3}})
    shapes = fig.layout.shapes
    assert len(shapes) == 6
    likely, unlikely = shapes[0].fillcolor, shapes[1].fillcolor  # p 0.5 (green end), p 1e-6 (below the floor: red)
    assert unlikely == "rgb(232, 132, 124)" and likely != unlikely
    texts = [t for t in fig.data if t.mode == "text"]
    assert list(texts[0].text) == ["␣cat", "␣sat", display_token("\n")]
    assert "teacher's probability 1e-06" in texts[0].hovertext[1] and "<b>␣ran</b> 60%" in texts[0].hovertext[1]
    assert "teacher's NLL 5.30 nats/token" in fig.layout.annotations[0].text
    by_kl = graded_continuations({"student": GRADED}, "reverse_kl")
    assert by_kl.layout.shapes[1].fillcolor == "rgb(232, 132, 124)"  # KL 5 >= the ceiling: red
    assert by_kl.layout.shapes[0].fillcolor != by_kl.layout.shapes[2].fillcolor
    with pytest.raises(ValueError, match="color_by"):
        graded_continuations({"student": GRADED}, "loudness")
    long = {**GRADED, "tokens": [" word"] * 40, "teacher_prob": [0.5] * 40, "model_prob": [0.5] * 40,
            "reverse_kl": [0.0] * 40, "teacher_top": [[(" a", 0.5)]] * 40}
    tall = graded_continuations({"student": long})
    assert len({round(s.y0, 3) for s in tall.layout.shapes}) > 1  # wrapped onto several lines


def test_recipe_curves_one_labelled_line_per_recipe_on_shared_log_axes() -> None:
    from visuals import recipe_curves, rows_to_curves

    fig = recipe_curves({"ce_only": [(0, 40.0), (10, 30.0), (20, 25.0)], "soft_target": [(0, 40.0), (20, 20.0)],
                         "waiting": []}, teacher_ppl=12.0)
    assert [t.name for t in fig.data] == ["ce_only", "soft_target", "waiting", "teacher"]
    assert list(fig.data[0].y) == [40.0, 30.0, 25.0] and len(fig.data[2].x) == 0
    assert fig.layout.yaxis.type == "log" and "perplexity" in fig.layout.yaxis.title.text
    assert {a.text for a in fig.layout.annotations} == {"ce_only", "soft_target"}  # names at the lines' ends
    assert len({t.line.color for t in fig.data[:3]}) == 3
    empty = recipe_curves({})
    assert "No evaluation yet" in empty.layout.annotations[0].text
    curves = rows_to_curves([{"name": "a", "ppl_before": 50.0, "ppl": 20.0, "steps": 8}])
    assert curves == {"a": [(0, 50.0), (8, 20.0)]}


def test_recipe_curves_move_the_names_of_lines_that_end_together_apart() -> None:
    from visuals import recipe_curves

    same = [(0, 330.0), (22, 117.0)]
    fig = recipe_curves({"soft_target": same, "attention": [(0, 330.0), (22, 117.3)], "fitnets": same},
                        teacher_ppl=64.0)
    ys = sorted(a.y for a in fig.layout.annotations)
    gap = math.log10(330.0 / 64.0) * 0.06  # a share of the y axis, which reaches down to the teacher
    assert ys[0] == pytest.approx(math.log10(117.0))  # the lowest name stays at its line's end
    assert all(b - a >= gap - 1e-9 for a, b in zip(ys, ys[1:]))  # the others are moved up until readable
    apart = recipe_curves({"a": [(0, 300.0), (10, 100.0)], "b": [(0, 300.0), (10, 200.0)]})
    assert sorted(a.y for a in apart.layout.annotations) == pytest.approx([2.0, math.log10(200.0)])
