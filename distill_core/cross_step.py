"""One distillation step across tokenizers (tokenizer_bridge `uld` or `span`), readable top to bottom like
step.DistillStep, whose teacher and student passes and update it reuses: the teacher reads the batch's text in
its own tokens (paired_data.PairedBlocks' teacher side), the student in its own; the soft-target term is the
bridge's loss (cross_losses.py), mixed with the student's hard-label cross-entropy as usual,
alpha * bridge + (1 - alpha) * CE.

The layer-wise terms need states of the same text: with `span` FitNets compare hidden states at the ends of
aligned spans (both models have read exactly the same bytes there), and attention transfer compares the maps
among the tokens aligned one to one (rows renormalised over them); with `uld` both are refused
(tokenizer_bridge.Bridge.check_config).

Shapes: b blocks; ts student tokens and tt teacher tokens per block; G aligned spans in the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from distill_core.cross_losses import SharedTokens, span_aligned_loss, uld_loss
from distill_core.device import autocast
from distill_core.losses import attention_transfer_loss, fitnets_loss, hard_label_ce, shift_for_next_token
from distill_core.paired_data import PairedBlocks
from distill_core.step import DistillStep, StudentOutputs, TeacherTargets
from distill_core.tokenizer_bridge import Bridge


class CrossTokenizerStep(DistillStep):
    """`DistillStep` for a pair whose tokenizers differ: `step(batch)` on PairedBlocks returns the loss terms, or
    None (no update) when the loss or gradient is not finite."""

    def __init__(self, config: Any, teacher: Any, student: Any, optimizer: torch.optim.Optimizer, bridge: Bridge,
                 shared: SharedTokens | None, **options: Any):
        super().__init__(config, teacher, student, optimizer, **options)
        self.bridge, self.shared = bridge, shared

    def __call__(self, batch: PairedBlocks, cached: Any = None) -> dict[str, float] | None:
        student_ids = batch.input_ids.to(self.device)  # (b, ts)
        student_mask = batch.attention_mask.to(self.device)
        teacher_ids = batch.teacher_ids.to(self.device)  # (b, tt), the same bytes
        teacher_mask = batch.teacher_mask.to(self.device)
        labels, mask = shift_for_next_token(student_ids, student_mask)  # the student's next tokens
        with autocast(self.device, self.dtype):
            teacher = self.teacher_targets(teacher_ids, teacher_mask, None, chunked=False)  # 1. what to learn
            student = self.student_outputs(student_ids, student_mask, teacher, chunked=False)  # 2. what it says
            total, terms = self.bridged_loss_terms(batch, teacher, student, labels, mask)  # 3. how far
        return self.update(total, terms)

    def bridged_loss_terms(self, batch: PairedBlocks, teacher: TeacherTargets, student: StudentOutputs,
                           labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """alpha * the bridge's soft-target term + (1 - alpha) * hard labels, plus the layer-wise terms."""
        c = self.config
        student_ids, teacher_ids = batch.input_ids.to(self.device), batch.teacher_ids.to(self.device)
        ce = hard_label_ce(student.final, labels, mask)
        if self.bridge.kind == "uld":
            _, teacher_counted = shift_for_next_token(teacher_ids, batch.teacher_mask.to(self.device))
            kd = uld_loss(student.final, teacher.distribution, mask, teacher_counted, c.temperature)
        else:
            kd = span_aligned_loss(student.final, teacher.distribution, student_ids, teacher_ids, batch.aligned_spans(),
                                   self.shared, c.temperature, c.divergence, c.jsd_beta, c.skew_alpha)
        total = c.kd_weight * kd + (1.0 - c.kd_weight) * ce
        terms = {"kd_loss": kd, "ce_loss": ce}
        if self.projection is not None:
            spans = batch.aligned_spans().to(self.device)
            # hidden_states[i + 1] is the output of layer i; each state taken at an aligned span's last token
            hint = fitnets_loss([student.hidden_states[s + 1][spans.row, spans.student_last][None] for s, _ in self.pairs],
                                [teacher.hidden_states[t + 1][spans.row, spans.teacher_last][None] for _, t in self.pairs],
                                self.projection, c.hidden_loss)
            total, terms["fitnets_loss"] = total + c.hidden_weight * hint, hint
        if self.attention:
            positions = batch.one_to_one_tokens()
            student_maps, query_mask = one_to_one_maps([student.attentions[s] for s, _ in self.pairs], positions, 1)
            teacher_maps, _ = one_to_one_maps([teacher.attentions[t] for _, t in self.pairs], positions, 0)
            transfer = attention_transfer_loss(student_maps, teacher_maps, c.attention_loss, query_mask)
            total, terms["attention_loss"] = total + c.attention_weight * transfer, transfer
        return total, terms


def one_to_one_maps(maps: list[torch.Tensor], positions: list[tuple[torch.Tensor, torch.Tensor]],
                    side: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Attention maps (b, heads, t, t) cut to the tokens aligned one to one (`positions`: per block the teacher's
    and the student's positions; `side` 0 or 1 picks which), each query row renormalised over the kept keys and
    padded to the block with the most: ([(b, heads, K, K)], query mask (b, K))."""
    width = max(1, max(len(p[side]) for p in positions))
    device = maps[0].device
    query_mask = torch.zeros(len(positions), width, device=device)
    cut_maps = []
    for layer_maps in maps:
        cut = layer_maps.new_zeros(layer_maps.shape[0], layer_maps.shape[1], width, width)
        for row, pair in enumerate(positions):
            index = pair[side].to(device)
            k = index.numel()
            rows = layer_maps[row][:, index][:, :, index].float()  # (heads, k, k)
            cut[row, :, :k, :k] = rows / rows.sum(-1, keepdim=True).clamp_min(1e-12)
            query_mask[row, :k] = 1
        cut_maps.append(cut)
    return cut_maps, query_mask


def make_step(config: Any, teacher: Any, student: Any, optimizer: torch.optim.Optimizer, bridge: Bridge,
              shared: SharedTokens | None, **options: Any) -> DistillStep:
    """The session's step for the pair's bridge: `CrossTokenizerStep` across tokenizers; otherwise `DistillStep`,
    over the ids both output layers have for `shared_ids`."""
    if bridge.cross:
        return CrossTokenizerStep(config, teacher, student, optimizer, bridge, shared, **options)
    step = DistillStep(config, teacher, student, optimizer, **options)
    step.vocab_rows = bridge.shared_rows
    return step
