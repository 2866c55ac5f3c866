"""Pure figure builders: plain arrays/lists in, plotly figures out."""

from .alignment import alignment_figure
from .attention import MASKED_NOTE, attention_difference, attention_heatmaps, causal_mask, head_entropy_grid
from .curves import loss_curves, recipe_curves, rows_to_curves
from .grading import COLOR_BY, graded_continuations
from .distributions import display_token, kl_strip, next_token_bars, wrong_answer_ranking, wrong_answer_ranks
from .similarity import cka_heatmaps, pair_cka_over_steps, pair_label, pair_similarity_bars, snapshots_to_series
from .sizes import size_quality_figure
from .theme import STUDENT_AFTER, STUDENT_BEFORE, TEACHER, apply_layout, model_color

__all__ = ["alignment_figure", "loss_curves", "recipe_curves", "rows_to_curves", "graded_continuations", "COLOR_BY", "next_token_bars", "kl_strip",
           "display_token", "wrong_answer_ranking",
           "wrong_answer_ranks", "size_quality_figure", "attention_heatmaps", "attention_difference",
           "head_entropy_grid", "causal_mask", "MASKED_NOTE", "cka_heatmaps", "pair_similarity_bars",
           "pair_cka_over_steps", "pair_label", "snapshots_to_series", "apply_layout", "model_color", "TEACHER",
           "STUDENT_BEFORE", "STUDENT_AFTER"]
