"""What the Distill tab shows of one streaming session (`RunView`) and the Student size tab of one sweep
(`SweepView`), built from the engine's events: status lines, figures, the before/after summary, the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import visuals
from distill_core import api
from ui.common import error_markdown, fmt_number, fmt_params, fmt_seconds, item_progress, shown_path

SWEEP_TABLE_HEADERS = ["model", "params", "ppl before", "ppl after", "bits/byte before", "bits/byte after",
                       "top-1 agreement", "KL to teacher", "real-text ppl", "tokens/s", "wall time", "error"]


PHASE_NAMES = {"conversion": "converting the teacher", "teacher": "loading the teacher", "corpus": "corpus",
               "student": "building the student", "evaluation": "evaluation", "training": "training",
               "saving": "saving"}


def phases_line(phases_s: dict[str, float], current: str | None = None) -> str:
    """Where the time went, phase by phase (`current`, still running, in bold)."""
    parts = [f"{PHASE_NAMES.get(name, name)} {fmt_seconds(seconds)}" for name, seconds in phases_s.items()
             if name != "start" and name != current and seconds >= 0.05]
    now = [f"**now: {PHASE_NAMES.get(current, current)}**"] if current and current != "start" else []
    return "Phases: " + " · ".join(parts + now) if parts or now else ""


class RunView:
    """What the Distill tab shows of one streaming session, built from its events."""

    def __init__(self, config: api.DistillConfig, out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        self.history: list[dict[str, Any]] = []  # step and eval events, for loss_curves
        self.message = "Starting …"
        self.corpus: dict[str, Any] | None = None
        self.last_step: dict[str, Any] | None = None
        self.first_probe: dict[str, Any] | None = None
        self.last_probe: dict[str, Any] | None = None
        self.probes: list[dict[str, Any]] = []  # every probe event (the Similarity tab's CKA over the steps)
        self.last_rollout: dict[str, Any] | None = None  # an on-policy step's continuation, graded by the teacher
        self.final: dict[str, Any] | None = None
        self.failure: str | None = None
        self.stop_requested = False
        self.training = False  # the engine has entered its training loop
        self.stopped_before_training = False  # Stop came before the training loop: nothing trained, nothing saved
        self.reopened_run = False  # an earlier run opened from its folder (not streamed now)
        self.kept_checkpoint = False  # nothing saved at the end (e.g. a full disk), but a checkpoint is kept
        self.shared = False  # opened from a share link: read-only
        self.phase = "start"  # the engine's phase (api.PHASES) and the seconds spent in each so far
        self.phases_s: dict[str, float] = {}
        self.phase_since = 0.0

    def add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if event.get("phase", self.phase) != self.phase:
            elapsed = event.get("elapsed_s", self.phase_since)
            self.phases_s[self.phase] = self.phases_s.get(self.phase, 0.0) + elapsed - self.phase_since
            self.phase, self.phase_since = event["phase"], elapsed
        self.training = self.training or kind == "step" or bool(event.get("training"))
        if kind in ("step", "eval"):
            self.history.append(event)
        if kind == "step":
            self.last_step = event
        elif kind in ("status", api.PAUSED):
            self.message = event["message"]
        elif kind == "corpus":
            self.corpus = event
        elif kind == "probe":
            self.first_probe = self.first_probe or event
            self.last_probe = event
            self.probes.append(event)
        elif kind == "rollout":
            self.last_rollout = event
        elif kind in api.FINAL_KINDS:
            self.final = event

    def fail(self, message: str) -> None:
        self.failure = message

    @classmethod
    def reopened(cls, out_dir: Path) -> "RunView":
        """The view of an earlier run, rebuilt from its folder (metrics.jsonl and summary.json)."""
        summary = api.run_summary(out_dir) or {}
        view = cls(api.run_config(out_dir) or api.preset_config(), out_dir)
        for event in api.run_events(out_dir):
            view.add(event)
        kind = "error" if summary.get("error") else ("stopped" if summary.get("stopped_early") else "done")
        view.add({"kind": kind, "summary": summary, "message": summary.get("error") or kind})
        view.reopened_run = True
        return view

    @property
    def finished(self) -> bool:
        return self.final is not None or self.failure is not None or self.stopped_before_training

    def status_markdown(self) -> str:
        steps = self.config.steps
        lines: list[str] = []
        if self.failure:
            lines.append(error_markdown(self.failure))
            if self.kept_checkpoint:
                folder = shown_path(self.out_dir)
                lines.append(f"The last checkpoint is kept in `{folder}/checkpoint` (untouched): "
                             f"`python -m distill_core distill --resume {folder}` continues the session from it.")
        elif self.stopped_before_training:
            lines.append("**Stopped** before training started: nothing was trained or saved (earlier runs are kept).")
        elif self.final is not None:
            summary = self.final["summary"]
            done = summary["steps_done"]
            student_dir = shown_path(self.out_dir / "student")
            if self.shared:
                lines.append(f"**Shared run `{self.out_dir.name}`** ({done}/{steps} steps), opened read-only from its "
                             "link: every view shows its student, with your own texts and settings.")
            elif self.reopened_run:
                lines.append(f"**Opened the earlier run `{self.out_dir.name}`** ({done}/{steps} steps): every view and "
                             "Export show its student.")
            elif self.final["kind"] == "done":
                lines.append(f"**Done:** {done}/{steps} steps in {fmt_seconds(summary['wall_s'])}. "
                             f"Student saved to `{student_dir}`.")
                lines.append(phases_line(summary.get("phases_s") or {}))
            elif self.final["kind"] == "stopped":
                lines.append(f"**Stopped** at step {done}/{steps}. The student so far is saved to `{student_dir}`.")
            else:
                lines.append(f"{error_markdown(self.final['message'])}  \nStudent saved to `{student_dir}`.")
        else:
            step = self.last_step
            if step is not None:
                terms = " · ".join(f"{key.removesuffix('_loss')} {step[key]:.3f}"
                                   for key in step if key.endswith("_loss"))
                lines.append(f"**Step {step['step']}/{steps}** · loss {step['loss']:.3f} ({terms}) · "
                             f"{step['tokens_per_s']:,.0f} tokens/s · ETA {fmt_seconds(step['eta_s'])}"
                             + (f" · on-policy: the student wrote its batch ({step['rollout_tokens']} tokens) in "
                                f"{fmt_seconds(step['rollout_s'])}" if step.get("on_policy") else ""))
            else:
                lines.append(f"**Step 0/{steps}**")
            message = self.message + (" · **stop requested**, finishing the current step" if self.stop_requested else "")
            lines.append(f"{message}")
            lines.append(phases_line(self.phases_s, self.phase))
        if self.corpus is not None:
            c = self.corpus
            lines.append(f"Corpus: {c['source']}: {c['train_tokens']:,} training tokens "
                         f"({c['epochs']} epochs over {steps} steps), {c['eval_tokens']:,} held-out evaluation tokens.")
            if c.get("augmented"):
                lines.append(augmented_markdown(c["augmented"]))
        if self.out_dir.exists():  # a session that ends before training leaves no folder
            lines.append(f"Run folder: `{shown_path(self.out_dir)}`")
        return "  \n".join(line for line in lines if line)

    def loss_figure(self) -> Any:
        return visuals.loss_curves(self.history)

    def probe_figure(self) -> Any:
        probe = self.last_probe
        probs = {"teacher": probe["teacher_probs"]}
        first = self.first_probe
        if first is not probe:  # the student before, on the tokens it had among its snapshot's (no bar elsewhere)
            before = dict(zip(first["candidates"], first["student_probs"]))
            probs["student (before)"] = [before.get(token, float("nan")) for token in probe["candidates"]]
        now_label = "student (before)" if probe["step"] == 0 else f"student (step {probe['step']})"
        probs[now_label] = probe["student_probs"]
        title = (f"Next token after “{probe['text']}” at T={probe['temperature']:g} "
                 f"(KL teacher‖student {probe['kl_last']:.3f} nats)")
        return visuals.next_token_bars(probe["candidates"], probs, None, title)

    def rollout_figure(self) -> Any:
        """The last on-policy step's first continuation, every token coloured by the teacher's probability of it."""
        rollout = self.last_rollout
        return visuals.graded_continuations(
            {f"student at step {rollout['step']}": rollout}, "teacher_prob",
            f"The student's own words at step {rollout['step']} (on-policy), graded by the teacher: “{rollout['prompt']}” …")

    def summary_markdown(self) -> str:
        if self.final is None:
            return ""
        s = self.final["summary"]
        t, st, before, after = s["teacher"], s["student"], s["before"], s["after"]
        pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        rows = [
            ("held-out perplexity ↓", fmt_number(t["ppl"], 2), fmt_number(before["ppl"], 2), fmt_number(after["ppl"], 2)),
            ("bits per byte ↓", fmt_number(t.get("bits_per_byte"), 4), fmt_number(before.get("bits_per_byte"), 4),
             fmt_number(after.get("bits_per_byte"), 4)),
            ("top-1 agreement with the teacher ↑", "—", pct(before["top1_agreement"]), pct(after["top1_agreement"])),
            ("KL(teacher ‖ student), nats/token ↓", "—", fmt_number(before["kl_to_teacher"]),
             fmt_number(after["kl_to_teacher"])),
            ("teacher's NLL of the model's own continuations, nats/token ↓", fmt_number(t.get("sample_nll")),
             fmt_number(before.get("sample_nll")), fmt_number(after.get("sample_nll"))),
            ("parameters", fmt_params(t["params"]), fmt_params(st["params"]),
             f"{fmt_params(st['params'])} ({fmt_params(st['trainable_params'])} trained)"),
        ]
        lines = [f"### Before / after ({s['steps_done']}/{s['steps']} steps, {s['eval_tokens']:,} held-out tokens)",
                 "", f"| | teacher `{s['teacher_spec']}` | student before `{s['student_spec']}` | student after |",
                 "|---|---:|---:|---:|"]
        lines += [f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows + real_text_rows(s.get("real_text"))]
        if (s.get("real_text") or {}).get("note"):
            lines += ["", f"Real text not measured: {s['real_text']['note']}"]
        elif s.get("real_text"):
            lines += ["", f"Real text: {s['real_text']['tokens']:,} tokens of {s['real_text']['source']} (nobody here wrote it)."]
        lines += ["", f"Final training loss {fmt_number(s['final_loss'])} · training {fmt_seconds(s['train_s'])} · "
                      f"total {fmt_seconds(s['wall_s'])} · corpus: {s['corpus']} · saved in `{shown_path(self.out_dir)}`"]
        if s.get("augmented"):
            lines += ["", augmented_markdown(s["augmented"])]
        bridge = s.get("tokenizer_bridge") or {}
        if bridge.get("bridge") not in (None, "none"):
            lines += ["", f"Tokenizer bridge **{bridge['bridge']}**: {bridge['reason']}"
                      + (f"; {bridge['one_to_one_share']:.0%} of the corpus's bytes align one to one"
                         if bridge.get("one_to_one_share") is not None else "")
                      + ". Perplexities are per each model's own tokens; bits per byte compare them."]
        return "\n".join(lines)


def real_text_rows(real: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """The before/after table's real-text rows from a summary's `real_text` (none when it was not measured)."""
    if not real or "after" not in real:
        return []
    before, after = real.get("before") or {}, real["after"]
    return [("real-text perplexity ↓", fmt_number(real["teacher"]["ppl"], 2), fmt_number(before.get("ppl"), 2),
             fmt_number(after["ppl"], 2)),
            ("real-text KL(teacher ‖ student) ↓", "—", fmt_number(before.get("kl_to_teacher")),
             fmt_number(after["kl_to_teacher"]))]


def augmented_markdown(report: dict[str, Any]) -> str:
    """One line from a session's `augmented` report: texts each augmenter produced, blocks and tokens added."""
    counts = " · ".join(f"{method} {count:,}" for method, count in report.get("methods", {}).items())
    return (f"Augmentation: {counts} new texts (changed copies of training text) → {report.get('blocks', 0):,} "
            f"extra training blocks ({report.get('tokens', 0):,} tokens).")



def size_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The sweep's rows as table rows (SWEEP_TABLE_HEADERS), the teacher first."""
    pct = lambda v: "—" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"  # noqa: E731
    speed = lambda v: fmt_number(v, 1)  # noqa: E731
    table: list[list[str]] = []
    teacher = next((r for r in rows if isinstance(r.get("teacher_ppl"), (int, float))), None)
    if teacher is not None:
        table.append(["teacher", fmt_params(teacher.get("teacher_params")), "—",
                      fmt_number(teacher["teacher_ppl"], 2), "—", fmt_number(teacher.get("teacher_bits_per_byte"), 4),
                      "—", "—", fmt_number(teacher.get("real_teacher_ppl"), 2), speed(teacher.get("teacher_tokens_per_s")),
                      "—", ""])
    for r in rows:
        table.append([str(r.get("spec", "?")), fmt_params(r.get("params")), fmt_number(r.get("ppl_before"), 2),
                      fmt_number(r.get("ppl"), 2), fmt_number(r.get("bpb_before"), 4), fmt_number(r.get("bpb"), 4),
                      pct(r.get("top1_agreement")), fmt_number(r.get("kl_to_teacher")), fmt_number(r.get("real_ppl"), 2),
                      speed(r.get("tokens_per_s")), fmt_seconds(r.get("wall_s")), str(r.get("error") or "")])
    return table


def row_line(row: dict[str, Any]) -> str:
    """One finished student in the progress list."""
    if row.get("error") and not isinstance(row.get("ppl"), (int, float)):
        return f"- `{row.get('spec', '?')}`: **failed:** {row['error']}"
    line = (f"- `{row.get('spec', '?')}`: {fmt_params(row.get('params'))}, held-out perplexity "
            f"{fmt_number(row.get('ppl_before'), 1)} → **{fmt_number(row.get('ppl'), 1)}**, "
            f"{fmt_number(row.get('tokens_per_s'), 1)} tokens/s, {fmt_seconds(row.get('wall_s'))}")
    return line + (f" ({row['error']})" if row.get("error") else "")


class SweepView:
    """What the Student size tab shows of one streaming sweep, built from its events."""

    def __init__(self, specs: list[str], steps: int, out_dir: Path) -> None:
        self.specs, self.steps, self.out_dir = specs, steps, out_dir
        self.rows: list[dict[str, Any]] = []
        self.teacher: str | None = None  # the teacher's measurements, in words
        self.current: str | None = None  # the spec the latest session events belong to
        self.last_step: dict[str, Any] | None = None
        self.message = "Starting …"
        self.failure: str | None = None
        self.ended = False
        self.stop_requested = False

    def add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "row":
            self.rows.append(event["row"])
            self.current, self.last_step, self.message = None, None, "Starting the next student …"
            return
        if kind == "teacher":
            self.teacher = event.get("message")
            return
        spec = event.get("student", event.get("spec"))  # the engine tags each session event with its student
        if isinstance(spec, str):
            self.current = spec
        elif self.current is None and len(self.rows) < len(self.specs):
            self.current = self.specs[len(self.rows)]
        if kind == "step":
            self.last_step = event
        elif kind in ("status", api.PAUSED):
            self.message = event["message"]
        elif kind in api.FINAL_KINDS:
            self.message = f"Session {kind}: {event.get('message', '')}"

    def fail(self, message: str) -> None:
        self.failure = message

    def status_markdown(self) -> str:
        n, done = len(self.specs), len(self.rows)
        lines: list[str] = []
        if self.failure:
            lines.append(error_markdown(self.failure))
        elif self.ended:
            results = self.out_dir / "students.json"
            saved = f" Rows saved to `{shown_path(results)}`." if results.is_file() else ""
            if self.stop_requested:  # the last row is the stopped student's (its error says at which step)
                lines.append(f"**Stopped** after {done}/{n} students.{saved}")
            else:
                lines.append(f"**Done:** {done}/{n} students.{saved}")
        else:
            lines += item_progress(self, "student", self.specs, self.steps)
        if self.teacher:
            lines.append(self.teacher[0].upper() + self.teacher[1:])
        lines.append(f"Run folder: `{shown_path(self.out_dir)}`")
        return "\n\n".join(["  \n".join(lines), *(["\n".join(map(row_line, self.rows))] if self.rows else [])])

    def figure(self) -> Any:
        return visuals.size_quality_figure(self.rows)

    def table(self) -> list[list[str]]:
        return size_table(self.rows)

