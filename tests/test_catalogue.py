"""The bad-input catalogue: every way we know for a user to get the input wrong (or for the machine to fail
them), run through the engine and, where the case exists in the UI, through the app's API (gradio_client
against the app served locally, as a browser would reach it). Each case asserts the message the user sees
(what is wrong and what to do) and that nothing already saved was lost: an engine run folder and an API
user's run folder, both finished before the case, are byte-for-byte intact, and that user's finished session
is still the one the inspection tabs serve.

The hub is switched off for the whole module (HF_HUB_OFFLINE=1): unknown model ids and hub datasets must fail
at once with a message that says so. Models are the tiny config-built ones of conftest."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from distill_core import evaluate, probes
from distill_core import session as session_module
from distill_core import step as step_module
from distill_core.attention import attention_maps_from
from distill_core.errors import DistillError, describe_failure
from distill_core.models import LazyTeacher, load_teacher
from distill_core.session import run_session
from distill_core.students import load_student
from tests.conftest import served_app, tiny_session_config
from tests.test_app import tabs, ui_values
from ui import attention, knobs
from ui.distill import NOTHING_TO_STOP

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")
client_module = pytest.importorskip("gradio_client")
AppError = client_module.exceptions.AppError


# ---- what was saved before each case --------------------------------------------------------

def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def server(tiny_teacher_dir, tmp_path_factory):
    """The app, served locally with the hub switched off; its run folders under `runs`."""
    runs = tmp_path_factory.mktemp("app-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        with served_app(runs) as url:
            yield SimpleNamespace(url=url, runs=runs)


def new_client(server) -> Any:
    """One API user (a gradio_client Client is one browser session: its own UserSession)."""
    return client_module.Client(server.url, verbose=False)


def api_args(client: Any, endpoint: str, **named: Any) -> list[Any]:
    """An endpoint's positional API arguments from values by name: a dict-input endpoint (run_session,
    size_sweep, augment_preview, attention) lists its inputs in the order they were created, each under its
    label (unique within the endpoint); the app's tabs say which name each label belongs to. An input not
    named gets the endpoint's default."""
    inputs = {"/run_session": tabs().distill.recipe, "/size_sweep": tabs().sizes,
              "/augment_preview": tabs().distill.preview, "/attention": tabs().attention}[endpoint].without(["user"])
    labels = {component.label for component in inputs.components.values()}
    assert len(labels) == len(inputs.components), "labels must be unique"
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"][endpoint]["parameters"]
    assert {p["label"] for p in parameters} == labels
    return inputs.api_arguments(parameters, named)


def api_values(client: Any, teacher_dir: Path, **changes) -> list[Any]:
    """run_session's API arguments: the test_app tab values, with an uploaded file sent as a file."""
    values = ui_values(teacher_dir, **changes)
    if values["upload"] is not None:
        values["upload"] = client_module.handle_file(str(values["upload"]))
    return api_args(client, "/run_session", **values)


@pytest.fixture(scope="module")
def earlier(server, tiny_teacher_dir, tmp_path_factory):
    """What users saved before any bad input: a finished engine run folder, and an API user whose finished
    session (its run folder) the inspection tabs serve."""
    engine_dir = tmp_path_factory.mktemp("earlier") / "run"
    events = list(run_session(tiny_session_config(tiny_teacher_dir, steps=2, eval_every=0, probe_every=0),
                              engine_dir))
    assert events[-1]["kind"] == "done"
    client = new_client(server)
    status = client.predict(*api_values(client, tiny_teacher_dir, steps=2), api_name="/run_session")[0]
    assert status.startswith("**Done:**"), status
    (app_dir,) = server.runs.iterdir()
    return SimpleNamespace(client=client, engine_dir=engine_dir, app_dir=app_dir, engine_files=digest(engine_dir),
                           app_files=digest(app_dir))


def assert_nothing_lost(earlier, teacher_dir: Path, api: bool = True) -> None:
    """The earlier run folders are intact; with `api`, the earlier API user's session is still the one its
    inspection tabs show."""
    assert digest(earlier.engine_dir) == earlier.engine_files
    assert digest(earlier.app_dir) == earlier.app_files
    if api:
        note = earlier.client.predict("I ate an", -1, 1.0, 5, str(teacher_dir), "layers:1",
                                      api_name="/dark_knowledge")[1]
        assert "Student (after) is the last session's student" in note and earlier.app_dir.name in note, note


def run_folders(server) -> set[Path]:
    return set(server.runs.iterdir())


# ---- the bad files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory, bundled_dir) -> dict[str, Path]:
    """The bad models and uploads the cases name as `@name`."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from distill_core.tiny import build_tiny_teacher

    root = tmp_path_factory.mktemp("bad-inputs")
    found: dict[str, Path] = {}

    def put(name: str, content: bytes | str) -> None:
        path = root / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        found[name] = path

    put("empty.txt", b"")
    put("blank.txt", "  \n\n\t \n")
    put("binary.txt", b"\x00\x01\x02binary\x00" * 50)
    put("latin1.txt", "Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade.\n\n".encode("latin-1") * 20)
    put("sheet.xlsx", b"PK\x03\x04 not a corpus")
    put("fake.parquet", b"this is not parquet")
    rows = "\n".join(f"Title {i},\"The soup was warm and the bread was fresh, said guest {i}.\",{i % 5}"
                     for i in range(40))
    put("reviews.csv", "title,review,stars\n" + rows + "\n")
    big = root / "big.txt"
    with big.open("wb") as handle:  # 21 MiB of text, written sparsely
        handle.write(b"word " * 1000)
        handle.truncate(21 * 2**20)
    found["big.txt"] = big
    (root / "empty-folder").mkdir()
    found["empty-folder"] = root / "empty-folder"

    bert = root / "bert"
    BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(bert)
    found["bert"] = bert
    tokenizer = AutoTokenizer.from_pretrained(bundled_dir)
    tokenizer.add_tokens(["<extra-a>", "<extra-b>"])  # the teacher's vocabulary plus two tokens
    tokenizer.save_pretrained(root / "other-vocabulary")
    found["other-tokenizer"] = build_tiny_teacher(root / "other-vocabulary", root / "other-tokenizer", layers=2)
    return found


def resolve(values: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """`@name` values replaced by the path of that bad file."""
    return {k: str(files[v[1:]]) if isinstance(v, str) and v.startswith("@") else v for k, v in values.items()}


# ---- the catalogue: session inputs -----------------------------------------------------------

NAN = float("nan")
UPLOAD, HUB = knobs.CORPUS_UPLOAD, knobs.CORPUS_HUB


@dataclass(frozen=True)
class Case:
    """One bad input to a session. `fields`: DistillConfig changes for the engine (None: the case exists in
    the UI only); `ui`: the Distill tab's changed inputs for the API (default: `fields`; None: engine only);
    `message`: a regex the message must match; `api_message`: where the API answers differently (Gradio's
    own bounds check of a slider, say)."""

    id: str
    fields: dict[str, Any] | None
    message: str
    ui: dict[str, Any] | None = field(default_factory=dict)
    api_message: str | None = None

    @property
    def ui_changes(self) -> dict[str, Any] | None:
        if self.ui is None:
            return None
        return self.ui or dict(self.fields or {})

    @property
    def is_spec(self) -> bool:
        """A teacher/student spec case: the Setup tab's compatibility check must refuse it too."""
        return bool(self.fields) and set(self.fields) <= {"teacher", "student"}


def upload(name: str, column: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine fields, UI inputs) for a corpus file."""
    return ({"corpus": f"@{name}", "corpus_text": "", "corpus_column": column},
            {"corpus_choice": UPLOAD, "upload": f"@{name}", "corpus_column": column})


CASES = [
    # model specs (offline)
    Case("teacher-misspelled", {"teacher": "smollm2-13m"},
         r"unknown model spec 'smollm2-13m' \(did you mean 'smollm2-135m'\?\).*the hub is unreachable \(offline\)"),
    Case("teacher-unknown-hub-id", {"teacher": "nobody/no-such-model"},
         r"unknown model spec 'nobody/no-such-model': .*not in the local Hugging Face cache, and the hub is "
         r"unreachable \(offline\)"),
    Case("teacher-invalid-spec", {"teacher": "my teacher!"},
         r"is not a valid model spec \(bundled name, hub id, directory or \.gguf file\)"),
    Case("teacher-missing-path", {"teacher": "/no/such/model"}, r"local model path not found: /no/such/model"),
    Case("teacher-missing-gguf", {"teacher": "/no/such/model.gguf"}, r"GGUF file not found: /no/such/model\.gguf"),
    Case("teacher-folder-without-config", {"teacher": "@empty-folder"},
         r"has no config\.json; it is not a saved model"),
    Case("teacher-not-a-causal-lm", {"teacher": "@bert"},
         r"is not a causal language model \(BertForMaskedLM\); pick a decoder-only LM"),
    Case("student-not-a-causal-lm", {"student": "@bert"},
         r"is not a causal language model \(BertForMaskedLM\); pick a decoder-only LM"),
    Case("student-tokenizer-mismatch", {"student": "@other-tokenizer", "tokenizer_bridge": "none"},
         r"tokenizers differ \(the same token at each of the 49152 ids both tokenizers have; output layers of 49152 "
         r"\(teacher\) and 49154 \(student\) rows\); distillation needs the same vocabulary or a bridge: set "
         r"tokenizer_bridge to auto, shared_ids, uld or span"),
    Case("student-tokenizer-no-shared-ids", {"student": "@other-tokenizer", "tokenizer_bridge": "span",
                                              "attention_weight": 0.0, "top_k": 4},
         r"top_k compares the teacher's top tokens id by id; tokenizer_bridge=span compares whole distributions"),
    Case("teacher-is-a-derived-spec", {"teacher": "layers:2"},
         r"'layers:2' derives a student from a teacher; it cannot be a teacher itself"),
    Case("student-empty-spec", {"student": "  "}, r"spec is empty"),
    Case("student-layers-0", {"student": "layers:0"}, r"'layers:0': a student needs at least one layer"),
    Case("student-more-layers-than-teacher", {"student": "layers:9"},
         r"layers:9 asks for more layers than the teacher has \(4\)"),
    Case("student-layer-out-of-range", {"student": "layers:0,7"},
         r"layer 7 does not exist; the teacher has layers 0\.\.3"),
    Case("student-layers-unordered", {"student": "layers:3,1"}, r"list the layers in increasing order"),
    Case("student-unknown-layer-rule", {"student": "layers:2:random"},
         r"unknown layer-selection rule 'random'; use layers:N .*layers:N:angular"),
    Case("student-fresh-indivisible", {"student": "fresh:layers=2,hidden=30,heads=4"},
         r"hidden \(30\) must be divisible by heads \(4\)"),
    # hyperparameters: zero, negative, NaN, huge
    Case("steps-zero", {"steps": 0}, r"steps must be a positive integer, got 0"),
    Case("steps-huge", {"steps": 10**9}, r"steps 1000000000 is too large \(use at most 1,000,000\)"),
    Case("batch-size-negative", {"batch_size": -4}, r"batch_size must be a positive integer, got -4"),
    Case("learning-rate-nan", {"learning_rate": NAN}, r"learning_rate must be a positive finite number, got nan",
         ui={"learning_rate": "nan"}),  # JSON has no NaN: the API sends text, as a browser's box would
    Case("learning-rate-negative", {"learning_rate": -1e-3},
         r"learning_rate must be a positive finite number, got -0\.001"),
    Case("learning-rate-huge", {"learning_rate": 1e6}, r"learning_rate 1000000\.0 is far too large \(use at most 1\.0\)"),
    Case("temperature-zero", {"temperature": 0.0}, r"temperature must be a positive finite number, got 0\.0",
         api_message=r"Value 0\.0 is less than minimum value 0\.5"),
    Case("temperature-tiny", {"temperature": 1e-40},
         r"temperature 1e-40 is too small \(use at least 0\.01; 1 is the models' own distribution\)",
         api_message=r"Value 1e-40 is less than minimum value 0\.5"),
    Case("temperature-huge", {"temperature": 1e6}, r"temperature 1000000\.0 is too large \(use at most 100\)",
         api_message=r"Value 1000000\.0 is greater than maximum value 10"),
    Case("kd-weight-nan", {"kd_weight": NAN}, r"kd_weight must be between 0 and 1, got nan",
         ui=None),  # a slider: the page cannot send NaN, and JSON has none
    Case("warmup-negative", {"warmup_steps": -2}, r"warmup_steps must be a non-negative integer, got -2"),
    Case("seq-len-huge", {"seq_len": 10**6}, r"seq_len 1000000 exceeds the 8192-token context"),
    Case("seq-len-longer-than-the-corpus", {"seq_len": 4096},
         r"fewer than one block of seq_len=4096: give more text or a smaller seq_len"),
    Case("freeze-every-layer", {"student": "layers:1", "freeze_layers": 1},
         r"freeze_layers=1 would freeze all 1 student layers"),
    # pasted text
    Case("pasted-empty", None, r"pasted text is empty", ui={"pasted": ""}),
    Case("pasted-whitespace-only", None, r"pasted text is empty", ui={"pasted": " \n\t \n"}),
    Case("pasted-too-short", {"corpus_text": "Hi."},
         r"fewer than one block of seq_len=32: give more text or a smaller seq_len", ui={"pasted": "Hi."}),
    # uploads
    Case("upload-missing", None, r"no file uploaded: choose a file", ui={"corpus_choice": UPLOAD}),
    Case("upload-empty", upload("empty.txt")[0], r"corpus file empty\.txt is empty", ui=upload("empty.txt")[1]),
    Case("upload-whitespace-only", upload("blank.txt")[0], r"corpus file blank\.txt is empty",
         ui=upload("blank.txt")[1]),
    Case("upload-binary", upload("binary.txt")[0], r"looks binary \(it contains NUL bytes\); upload plain UTF-8 text",
         ui=upload("binary.txt")[1]),
    Case("upload-not-utf8", upload("latin1.txt")[0], r"is not UTF-8 \(byte \d+ is invalid\); save it as UTF-8",
         ui=upload("latin1.txt")[1]),
    Case("upload-oversized", upload("big.txt")[0], r"big\.txt is 21\.0 MiB; the limit is 20 MiB",
         ui=upload("big.txt")[1]),
    Case("upload-unknown-type", upload("sheet.xlsx")[0], r"unknown file type '\.xlsx'; use one of \.csv",
         ui=upload("sheet.xlsx")[1], api_message=r"Invalid file type\. Please upload a file that is one of these"),
    Case("upload-not-parquet", upload("fake.parquet")[0], r"is not a Parquet file \(no PAR1 marker\)",
         ui=upload("fake.parquet")[1]),
    Case("upload-missing-column", upload("reviews.csv", "text")[0],
         r"has no column 'text'; its text columns: title, review \(all columns: title, review, stars\)",
         ui=upload("reviews.csv", "text")[1]),
    Case("upload-non-text-column", upload("reviews.csv", "stars")[0],
         r"column 'stars' of corpus file reviews\.csv holds int64, not text; its text columns: title, review",
         ui=upload("reviews.csv", "stars")[1]),
    Case("upload-ambiguous-column", upload("reviews.csv")[0],
         r"has several text columns \(title, review\); pick the one to train on", ui=upload("reviews.csv")[1]),
    # a Hugging Face dataset, offline
    Case("hub-dataset-offline", {"hub_dataset": "wikitext", "corpus_text": ""},
         r"Hugging Face dataset 'wikitext' is not available here: the hub is unreachable \(offline\)\. Upload the "
         r"text as a \.txt, \.jsonl, \.csv or \.parquet file instead",
         ui={"corpus_choice": HUB, "hub_dataset": "wikitext"}),
    Case("hub-dataset-no-id", None, r"no Hugging Face dataset id given: type one", ui={"corpus_choice": HUB}),
]


def engine_message(fields: dict[str, Any], teacher_dir: Path, out: Path) -> str:
    """The engine's message for a session with `fields` changed: its DistillError, or its error event."""
    started = time.monotonic()
    try:
        events = list(run_session(tiny_session_config(teacher_dir, **fields), out))
    except DistillError as exc:
        message = str(exc)
    else:
        assert events[-1]["kind"] == "error", events[-1]
        message = events[-1]["message"]
    # "at once": no retries, no minute-long network timeouts (a bound for a crowded CI machine, not a benchmark)
    assert time.monotonic() - started < 60
    return message


@pytest.mark.parametrize("case", [c for c in CASES if c.fields is not None], ids=lambda c: c.id)
def test_engine_refuses(case, files, tiny_teacher_dir, earlier, tmp_path):
    message = engine_message(resolve(case.fields, files), tiny_teacher_dir, tmp_path / "out")
    assert re.search(case.message, message), message
    assert "\n" not in message.strip() and "Traceback" not in message
    assert_nothing_lost(earlier, tiny_teacher_dir, api=False)


@pytest.mark.parametrize("case", [c for c in CASES if c.ui_changes is not None], ids=lambda c: c.id)
def test_api_refuses(case, files, tiny_teacher_dir, server, earlier):
    client, before = new_client(server), run_folders(server)
    values = api_values(client, tiny_teacher_dir, **resolve(case.ui_changes, files))
    expected = case.api_message or case.message
    try:
        status = client.predict(*values, api_name="/run_session")[0]
    except AppError as exc:  # Gradio refused the value before the app saw it (its own bounds or file types)
        assert case.api_message and re.search(expected, str(exc)), str(exc)
    else:
        assert status.startswith("**Error:**") and re.search(expected, status), status
        assert "Traceback" not in status
    assert run_folders(server) == before  # a refused session leaves no run folder
    if case.is_spec:  # the Setup tab's check says the same
        pair = {"teacher": str(tiny_teacher_dir), "student": "layers:1", **resolve(case.fields, files)}
        report, raw = client.predict(pair["teacher"], pair["student"], api_name="/compatibility")
        assert report.startswith("**Error:**") and re.search(case.message, report) and raw is None, report
    assert_nothing_lost(earlier, tiny_teacher_dir)


# ---- the catalogue: the inspection tabs --------------------------------------------------------

@dataclass(frozen=True)
class ProbeCase:
    """A bad input to an inspection tab: `engine(teacher, student)` calls the engine with it; `endpoint` and
    `args` call the app's API (the teacher and student specs are appended; a dict: a dict-input endpoint's
    inputs by name, with the pair as `teacher` and `student`). `api_message`: where the API answers
    differently (the app's own wording, or Gradio's bounds check)."""

    id: str
    engine: Any
    message: str
    endpoint: str
    args: tuple | dict[str, Any]
    api_message: str | None = None

    def call(self, client: Any, teacher: str, student: str) -> Any:
        if isinstance(self.args, dict):
            args = api_args(client, self.endpoint, teacher=teacher, student=student, **self.args)
        else:
            args = [*self.args, teacher, student]
        return client.predict(*args, api_name=self.endpoint)


PROBE_CASES = [
    ProbeCase("probe-temperature-zero",
              lambda t, s: probes.dark_knowledge(t, {"student": s.model}, "I ate an", -1, 0.0),
              r"temperature must be positive, got 0\.0", "/dark_knowledge", ("I ate an", -1, 0.0, 5),
              api_message=r"Value 0\.0 is less than minimum value 0\.5"),
    ProbeCase("probe-empty-text", lambda t, s: probes.dark_knowledge(t, {"student": s.model}, "   "),
              r"probe text is empty", "/dark_knowledge", ("   ", -1, 1.0, 5)),
    ProbeCase("probe-position-outside-the-text",
              lambda t, s: probes.dark_knowledge(t, {"student": s.model}, "I ate an", 99),
              r"position 99 is outside the text's 3 tokens \(0\.\.2\)", "/dark_knowledge", ("I ate an", 99, 1.0, 5)),
    ProbeCase("attention-layer-out-of-range", lambda t, s: attention_maps_from(t.model, [9]).__enter__(),
              r"attention maps asked for layers \[9\] of a 4-layer model", "/attention",
              dict(text=attention.ATTENTION_TEXT, teacher_layer=9, teacher_head=0, student_layer=-1, student_head=0,
                   average_heads=False),
              api_message=r"the teacher layer 9 does not exist: it has layers 0\.\.3"),
    ProbeCase("generate-zero-tokens", lambda t, s: evaluate.generate(s.model, t.tokenizer, "The river", 0),
              r"new tokens must be between 1 and 512, got 0", "/generate", ("The river", 0, 0),
              api_message=r"Value 0 is less than minimum value 1"),
]


@pytest.mark.parametrize("case", PROBE_CASES, ids=lambda c: c.id)
def test_inspection_refuses(case, tiny_teacher_dir, server, earlier):
    teacher = load_teacher(str(tiny_teacher_dir))
    with pytest.raises(DistillError) as refused:
        case.engine(teacher, load_student("layers:1", teacher))
    assert re.search(case.message, str(refused.value)), str(refused.value)
    expected = case.api_message or case.message
    try:
        note = case.call(new_client(server), str(tiny_teacher_dir), "layers:1")[
            1 if case.endpoint == "/dark_knowledge" else 0]
    except AppError as exc:  # Gradio refused the value before the app saw it (a slider's or a box's bounds)
        assert re.search(expected, str(exc)), str(exc)
    else:
        assert note.startswith("**Error:**") and re.search(expected, note), note
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_export_before_any_session(tiny_teacher_dir, server, earlier, tmp_path):
    from distill_core.export import export_student

    with pytest.raises(DistillError, match="no saved student in .*: run a session first"):
        export_student(tmp_path, tmp_path / "zips")
    note = new_client(server).predict(api_name="/export")[0]
    assert note.startswith("**Error:** no session has finished in this browser session yet: run one")
    assert_nothing_lost(earlier, tiny_teacher_dir)


# ---- the catalogue: failures mid-run -----------------------------------------------------------

def nan_loss_at(monkeypatch, step: int) -> None:
    """The training loss of the `step`-th step (counted from the next session on) becomes NaN, as a too high
    learning rate makes it (the config refuses rates above 1.0, at which a tiny Llama stays finite). Both loss
    paths of the step are poisoned: the chunked one (the default) and the full-logits one."""
    calls = {"n": 0}

    def poisoned(real):
        def loss(*args, **kwargs):
            out = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == step:
                out.total = out.total * NAN
            return out
        return loss

    for name in ("distillation_loss", "chunked_distillation_loss"):  # the step's loss functions (step.DistillStep)
        monkeypatch.setattr(step_module, name, poisoned(getattr(step_module, name)))


def oom_at(monkeypatch, step: int) -> None:
    """The `step`-th training step (a call of the session's step.DistillStep) runs out of (GPU) memory."""
    real, calls = step_module.DistillStep.__call__, {"n": 0}

    def train_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module.DistillStep, "__call__", train_step)


def saved_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "student" / "model.safetensors"))


def test_nan_loss_mid_run_keeps_the_last_good_student(tiny_teacher_dir, server, earlier, tmp_path, monkeypatch):
    config = tiny_session_config(tiny_teacher_dir, steps=6, eval_every=0, probe_every=0)
    # the reference: the same session stopped after step 2
    stop = threading.Event()
    for event in run_session(config, tmp_path / "stopped", stop):
        if event["kind"] == "step" and event["step"] == 2:
            stop.set()
    nan_loss_at(monkeypatch, 3)
    final = list(run_session(config, tmp_path / "nan"))[-1]
    assert final["kind"] == "error" and final["summary"]["steps_done"] == 2
    assert re.search(r"the loss became NaN or infinite at step 3 \(learning rate 0\.003 too high\?\); the session "
                     r"stopped and kept the student of step 2", final["message"])
    reference, kept = saved_weights(tmp_path / "stopped"), saved_weights(tmp_path / "nan")
    assert kept.keys() == reference.keys() and all(torch.equal(kept[k], reference[k]) for k in kept)
    assert_nothing_lost(earlier, tiny_teacher_dir, api=False)

    client = new_client(server)
    monkeypatch.undo()
    nan_loss_at(monkeypatch, 3)
    status = client.predict(*api_values(client, tiny_teacher_dir, steps=6), api_name="/run_session")[0]
    assert status.startswith("**Error:** the loss became NaN or infinite at step 3") and "Student saved to" in status
    zip_note = client.predict(api_name="/export")[0]  # this user's last good student is served
    assert zip_note.startswith("Exported the student of"), zip_note
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_out_of_memory_mid_run_advises_and_the_app_stays_up(tiny_teacher_dir, server, earlier, tmp_path,
                                                             monkeypatch):
    oom_at(monkeypatch, 3)
    final = list(run_session(tiny_session_config(tiny_teacher_dir, steps=6), tmp_path / "oom"))[-1]
    assert final["kind"] == "error" and final["summary"]["steps_done"] == 2
    assert "step 3 failed (out of memory: lower batch_size or seq_len" in final["message"]
    assert (tmp_path / "oom" / "student" / "model.safetensors").is_file()

    client = new_client(server)
    monkeypatch.undo()
    oom_at(monkeypatch, 3)
    status = client.predict(*api_values(client, tiny_teacher_dir, steps=6), api_name="/run_session")[0]
    assert status.startswith("**Error:** step 3 failed (out of memory: lower batch_size or seq_len, pick a "
                             "smaller student or teacher"), status
    # the app is still up and serves the student of step 2 to this user's inspection tabs
    note = client.predict("I ate an", -1, 1.0, 5, str(tiny_teacher_dir), "layers:1", api_name="/dark_knowledge")[1]
    assert "Student (after) is the last session's student" in note
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_out_of_memory_while_loading_advises(tiny_teacher_dir, server, earlier, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(session_module, "load_student", no_memory)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        list(run_session(tiny_session_config(tiny_teacher_dir), tmp_path / "oom"))
    assert describe_failure(raised.value).startswith("out of memory: lower batch_size or seq_len")
    client, before = new_client(server), run_folders(server)
    status = client.predict(*api_values(client, tiny_teacher_dir), api_name="/run_session")[0]
    assert status.startswith("**Error:** out of memory: lower batch_size or seq_len, pick a smaller student or "
                             "teacher, or wait until other sessions on this machine have finished"), status
    assert run_folders(server) == before
    assert_nothing_lost(earlier, tiny_teacher_dir)


# ---- the catalogue: Stop -----------------------------------------------------------------------

def wait_for(predicate, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_stop_while_loading(tiny_teacher_dir, server, earlier, tmp_path, monkeypatch):
    loading, release = threading.Event(), threading.Event()
    real = LazyTeacher.get  # how a session loads its teacher (from the shared cache, models.MODELS)

    def slow_load(*args, **kwargs):
        loading.set()
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(LazyTeacher, "get", slow_load)
    # the engine: a stop during loading ends the session before its first step, the initial student saved
    stop = threading.Event()
    release.set()
    events = run_session(tiny_session_config(tiny_teacher_dir), tmp_path / "engine", stop)
    for event in events:
        if loading.is_set():
            stop.set()
    assert event["kind"] == "stopped" and event["message"] == "stopped at step 0" and event["summary"]["steps_done"] == 0
    # the app: nothing trained, nothing saved, no run folder left
    loading.clear()
    release.clear()
    client, before = new_client(server), run_folders(server)
    job = client.submit(*api_values(client, tiny_teacher_dir, steps=50), api_name="/run_session")
    assert loading.wait(120)
    assert client.predict(api_name="/stop").startswith("**Stop requested:**")
    release.set()
    status = job.result()[0]
    assert status.startswith("**Stopped** before training started: nothing was trained or saved"), status
    assert run_folders(server) == before
    assert client.predict(api_name="/export")[0].startswith("**Error:** no session has finished")
    assert_nothing_lost(earlier, tiny_teacher_dir)


def start_long_run(client, teacher_dir: Path) -> Any:
    """A 500-step session, returned once it has finished its first step."""
    job = client.submit(*api_values(client, teacher_dir, steps=500), api_name="/run_session")
    wait_for(lambda: any(str(out[0]).startswith("**Step ") and not out[0].startswith("**Step 0/")
                         for out in job.outputs()) or job.done(), "the first step")
    return job


def stopped_step(status: str) -> int:
    match = re.match(r"\*\*Stopped\*\* at step (\d+)/500\. The student so far is saved to", status)
    assert match, status
    return int(match.group(1))


def test_stop_while_running(tiny_teacher_dir, server, earlier):
    client = new_client(server)
    job = start_long_run(client, tiny_teacher_dir)
    assert client.predict(api_name="/stop").startswith("**Stop requested:** finishing the current step")
    assert 1 <= stopped_step(job.result()[0]) < 500
    assert client.predict(api_name="/export")[0].startswith("Exported the student of")
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_stop_twice(tiny_teacher_dir, server, earlier):
    client = new_client(server)
    job = start_long_run(client, tiny_teacher_dir)
    first, second = client.predict(api_name="/stop"), client.predict(api_name="/stop")
    assert first == second and first.startswith("**Stop requested:**")
    assert 1 <= stopped_step(job.result()[0]) < 500
    assert client.predict(api_name="/stop") == NOTHING_TO_STOP  # it has ended: nothing left to stop
    # the extra Stop does not carry over: the next session runs to its end
    assert client.predict(*api_values(client, tiny_teacher_dir, steps=2), api_name="/run_session")[0].startswith(
        "**Done:** 2/2 steps")
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_stop_with_nothing_running(tiny_teacher_dir, server, earlier):
    assert new_client(server).predict(api_name="/stop") == NOTHING_TO_STOP
    assert earlier.client.predict(api_name="/stop") == NOTHING_TO_STOP  # its finished session is kept
    assert_nothing_lost(earlier, tiny_teacher_dir)


def test_catalogue_size():
    """The catalogue counts at least 30 distinct cases (the table, the inspection tabs, the failures mid-run and
    the Stop cases: each test function below the tables is one)."""
    extra = [test_export_before_any_session, test_nan_loss_mid_run_keeps_the_last_good_student,
             test_out_of_memory_mid_run_advises_and_the_app_stays_up, test_out_of_memory_while_loading_advises,
             test_stop_while_loading, test_stop_while_running, test_stop_twice, test_stop_with_nothing_running]
    ids = [c.id for c in CASES] + [c.id for c in PROBE_CASES] + [f.__name__ for f in extra]
    assert len(set(ids)) == len(ids) >= 30
