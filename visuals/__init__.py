"""Pure figure builders: plain arrays/lists in, plotly figures out."""

from .curves import loss_curves
from .distributions import display_token, kl_strip, next_token_bars
from .sizes import size_quality_figure
from .theme import STUDENT_AFTER, STUDENT_BEFORE, TEACHER, apply_layout, model_color

__all__ = ["loss_curves", "next_token_bars", "kl_strip", "display_token", "size_quality_figure",
           "apply_layout", "model_color", "TEACHER", "STUDENT_BEFORE", "STUDENT_AFTER"]
