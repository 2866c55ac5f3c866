"""Which models the inspection views compare: the teacher, the student before distillation and, once a
session of the same pair has finished, the student after it. Shared read-only by every user: the
teacher from the model cache (models.MODELS), the untrained and the trained students from models.STUDENTS,
so thirty users looking at the same run hold its student once.

The student before is the one the session started from: its kept teacher layers from summary.json as an
explicit `layers:i,j,k` (specs.initial_student_spec, so that a `layers:N:angular` student comes back the
same) with the run's seed; before any session it is the picked student, untrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from distill_core.alignment import vocabulary_fingerprint
from distill_core.config import DistillConfig
from distill_core.errors import DistillError, first_line
from distill_core.layer_map import resolve_layer_map
from distill_core.losses import FitNetsProjection
from distill_core.models import STUDENTS, LoadedModel, ResolvedModel, load_saved_model, load_teacher, load_tokenizer
from distill_core.presets import preset_config
from distill_core.retention import look_at
from distill_core.runs import run_config, run_summary
from distill_core.specs import initial_student_spec, own_vocabulary
from distill_core.students import corpus_documents, load_student

BEFORE = "student (before)"
AFTER = "student (after)"
PROJECTION_FILE = "fitnets_projection.safetensors"


def _frozen(loaded: Any) -> Any:
    """A shared student is never trained (a session trains its own copy): frozen, its forward passes can be
    shared and reused across users (batcher.FORWARDS)."""
    getattr(loaded, "model", loaded).requires_grad_(False)
    return loaded


def untrained_student(teacher_spec: str, student_spec: str, seed: int | None = None,
                      config: DistillConfig | None = None) -> LoadedModel:
    """A freshly derived (or loaded) student for the pair, as a session starts from; built once and shared. A
    student with a BPE vocabulary of its own trains it on `config`'s corpus (a run's), else the default one."""
    seed = preset_config().seed if seed is None else int(seed)
    docs = corpus_documents(teacher_spec.strip(), config) if own_vocabulary(student_spec) else (None, None)
    key = ("untrained", teacher_spec.strip(), student_spec.strip(), seed, hash(tuple(docs[0] or ())))
    bridge = config.tokenizer_bridge if config is not None else "auto"
    return STUDENTS.get(key, lambda: _frozen(load_student(key[2], load_teacher(key[1]), seed=seed,
                                                          calibration=docs[0], calibration_source=docs[1],
                                                          tokenizer_bridge=bridge)))


def trained_student(out_dir: str | Path) -> Any:
    """The student a session saved in `out_dir`/student, loaded once for every user (a new save of the
    folder is a new entry). A run removed meanwhile (by retention or its owner) says so."""
    folder = Path(out_dir) / "student"
    if not (folder / "config.json").is_file():
        raise DistillError(f"run {Path(out_dir).name} is no longer on this machine (its owner deleted it, or it "
                           "was removed to keep the runs folder under the operator's cap): open another run")
    look_at(out_dir)  # someone is looking at it: retention keeps it
    stamp = tuple(int(p.stat().st_mtime_ns) for p in sorted(folder.glob("*.safetensors")))
    return STUDENTS.get(("trained", str(folder.resolve()), stamp), lambda: _frozen(load_saved_model(folder)))


def trained_tokenizer(out_dir: str | Path) -> Any:
    """The tokenizer a session saved with its student (the teacher's, or the student's own vocabulary)."""
    folder = Path(out_dir) / "student"
    stamp = int((folder / "tokenizer.json").stat().st_mtime_ns) if (folder / "tokenizer.json").is_file() else 0
    return STUDENTS.get(("tokenizer", str(folder.resolve()), stamp),
                        lambda: load_tokenizer(ResolvedModel(str(folder), str(folder), f"saved student {folder}")))


class Comparison:
    """The teacher, the untrained student and (after a session of the same pair) the trained one, with
    what the views need to know about them. `last_run` is the caller's last finished session: a dict
    with its `out_dir`, `teacher` and `student` (None before any). `status` says which case holds:
    `no-run`, `other-pair` (the last session distilled another pair) or `run`."""

    def __init__(self, teacher_spec: str, student_spec: str, last_run: dict[str, Any] | None = None):
        teacher_spec, student_spec = (teacher_spec or "").strip(), (student_spec or "").strip()
        self.teacher = load_teacher(teacher_spec)
        self.run: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None
        self.after: Any = None
        config = None
        if last_run is None:
            self.status = "no-run"
        elif (last_run["teacher"].strip(), last_run["student"].strip()) != (teacher_spec, student_spec):
            self.status = "other-pair"
        else:
            self.status, self.run = "run", last_run
            self.summary = run_summary(last_run["out_dir"])
            config = run_config(last_run["out_dir"])
            self.after = trained_student(last_run["out_dir"])
        self.before_spec = initial_student_spec(self.summary, student_spec) if self.run else student_spec
        self.config = config if config is not None else preset_config().with_overrides(
            {"teacher": teacher_spec, "student": student_spec})
        self.before = untrained_student(teacher_spec, self.before_spec, self.config.seed, self.config)
        self.after_tokenizer = trained_tokenizer(last_run["out_dir"]) if self.after is not None else None

    @property
    def students(self) -> dict[str, Any]:
        """Display name -> model: the student before, and after when there is one."""
        students = {BEFORE: self.before.model}
        if self.after is not None:
            students[AFTER] = self.after
        return students

    @property
    def with_tokenizers(self) -> dict[str, tuple[Any, Any]]:
        """Display name -> (model, its tokenizer): what a view needs when a student reads other tokens."""
        students = {BEFORE: (self.before.model, self.before.tokenizer)}
        if self.after is not None:
            students[AFTER] = (self.after, self.after_tokenizer)
        return students

    @property
    def cross_tokenizer(self) -> bool:
        """Whether a compared student reads the text in tokens other than the teacher's."""
        vocab = vocabulary_fingerprint(self.teacher.tokenizer)
        return any(vocabulary_fingerprint(tok) != vocab for _, tok in self.with_tokenizers.values())

    def require_same_tokens(self, view: str) -> None:
        """DistillError for a view that compares the models token by token when a student reads other tokens."""
        if self.cross_tokenizer:
            raise DistillError(f"The {view} view compares the models token by token, and this student reads the text "
                               "in tokens of its own (a different tokenizer): see Setup's alignment view for how the "
                               "two tokenizations line up, and Dark knowledge for the distributions across them")

    @property
    def out_dir(self) -> Path | None:
        return Path(self.run["out_dir"]) if self.run else None

    def key(self) -> tuple:
        """What identifies these models (for caching a probe of them)."""
        return (self.teacher.spec, self.before_spec, str(self.out_dir))

    def layer_pairs(self) -> list[tuple[int, int]]:
        """The run's layer map, or the pair's `auto` map (the compatibility report's) before any run."""
        saved = (self.summary or {}).get("layer_map")
        if saved:
            return [(int(s), int(t)) for s, t in saved]
        return resolve_layer_map("auto", self.before.model.config.num_hidden_layers,
                                 self.teacher.model.config.num_hidden_layers, self.before.layers_kept)

    def projection(self, pairs: list[tuple[int, int]]) -> tuple[FitNetsProjection | None, str]:
        """The run's FitNets projection (fitnets_projection.safetensors), or None and why not."""
        path = self.out_dir / PROJECTION_FILE if self.out_dir is not None else None
        if path is None or not path.is_file():
            return None, ("The last session trained no FitNets projection (hidden-state weight 0), so there is no "
                          "cosine after it.")
        projection = FitNetsProjection(len(pairs), self.after.config.hidden_size, self.teacher.model.config.hidden_size)
        try:
            projection.load_state_dict(load_file(str(path)))
        except (RuntimeError, KeyError) as exc:
            return None, f"`{path.name}` does not match the run's {len(pairs)} layer pairs ({first_line(exc)})."
        projection.eval()
        return projection, f"Cosine after the run's FitNets projection (`{path.name}`)."
