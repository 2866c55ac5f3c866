"""Distill Studio's engine: knowledge distillation of causal language models, UI-free."""

from distill_core.config import DistillConfig
from distill_core.errors import DistillError

__all__ = ["DistillConfig", "DistillError"]
