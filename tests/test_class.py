"""A class on one app, through the app's API (README, "A class on one Space"): a teacher's run shared with a
link opens read-only for another client, which can neither stop, delete nor (unless allowed) export it; loaded
models stay under a small memory budget with several runs open; retention removes the oldest finished run and
never a running one; a disk that fills while a session saves leaves its checkpoint intact; the fair queue gives
one place per browser and tells the waiting users their place. Users are gradio_client Clients on tiny models
against an app served from this process (so the engine's caches and files can be inspected)."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest
import transformers.modeling_utils

from distill_core import api, batcher, models, retention
from distill_core.budget import model_bytes
from distill_core.resume import load as load_checkpoint
from tests.conftest import served_app
from tests.test_catalogue import api_args, api_values, start_long_run, wait_for
from ui import dark as dark_tab
from ui import distill

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")
client_module = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def server(tiny_teacher_dir, runs):
    with served_app(runs) as url:
        yield url


def new_client(url: str):
    return client_module.Client(url, verbose=False)


def finished_run(client, teacher_dir: Path, **changes) -> dict:
    """A short session run by `client`; its my_runs row (id and owner token)."""
    status = client.predict(*api_values(client, teacher_dir, steps=2, **changes), api_name="/run_session")[0]
    assert status.startswith("**Done:**"), status
    return client.predict(api_name="/my_runs")[-1]


def dark(client, teacher_dir: Path, text: str = "I ate an") -> str:
    """The dark-knowledge view's note for this client."""
    return client.predict(text, -1, 1.0, 5, str(teacher_dir), "layers:1", api_name="/dark_knowledge")[1]


def digest(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_shared_link_opens_the_run_read_only_for_another_client(server, tiny_teacher_dir, runs):
    teacher = new_client(server)
    run = finished_run(teacher, tiny_teacher_dir)
    note, link = teacher.predict(False, api_name="/share_run")
    assert f"?run={run['id']}&share=" in link and "read-only" in note
    share_token = link.split("share=")[1]
    shared_files = digest(runs / run["id"])

    student = new_client(server)  # one of the class, with the link
    opened = student.predict(run["id"], share_token, api_name="/open_run")
    assert opened[0].startswith(f"**Shared run `{run['id']}`**") and "Shared with you read-only" in opened[4]
    assert "shared run" in dark(student, tiny_teacher_dir) and run["id"] in dark(student, tiny_teacher_dir, "My own text")
    attention = student.predict(*api_args(student, "/attention", text="The cat sat", teacher=str(tiny_teacher_dir),
                                          student="layers:1"), api_name="/attention")[0]
    assert run["id"] in attention and not attention.startswith("**Error:**")

    # refused: export (not allowed), delete, share again; stop and start touch only the visitor's own sessions
    assert student.predict(api_name="/export")[0] == f"**Error:** {distill.NOT_YOURS}"
    refused = student.predict(run["id"], share_token, api_name="/delete_run")
    assert refused.startswith("**Error:** only the owner of run") and (runs / run["id"] / "student").is_dir()
    assert student.predict(True, api_name="/share_run")[0].startswith("**Error:** only the browser that ran")
    assert student.predict(api_name="/stop") == distill.NOTHING_TO_STOP
    job = start_long_run(teacher, tiny_teacher_dir)  # the owner trains again: the visitor's Stop is not its
    assert student.predict(api_name="/stop") == distill.NOTHING_TO_STOP
    steps = len(job.outputs())
    wait_for(lambda: len(job.outputs()) >= steps + 2 or job.done(), "the owner's run to go on")
    assert not job.done()
    assert teacher.predict(api_name="/stop").startswith("**Stop requested:**")
    job.result()
    own = finished_run(student, tiny_teacher_dir, seed=3)  # starting: a session of the visitor's own, new folder
    assert own["id"] != run["id"] and student.predict(api_name="/export")[0].startswith("Exported the student of")
    assert digest(runs / run["id"]) == shared_files  # the shared run is as it was

    # a wrong or revoked token opens nothing; an owner who allows export lets visitors export
    assert "does not open run" in new_client(server).predict(run["id"], "guess", api_name="/open_run")[4]
    teacher.predict(run["id"], run["token"], api_name="/open_run")
    _, link = teacher.predict(True, api_name="/share_run")
    assert "does not open run" in new_client(server).predict(run["id"], share_token, api_name="/open_run")[4]
    visitor = new_client(server)
    visitor.predict(run["id"], link.split("share=")[1], api_name="/open_run")
    assert visitor.predict(api_name="/export")[0].startswith("Exported the student of `")
    assert teacher.predict(api_name="/unshare_run")[0].startswith(f"Run `{run['id']}` is no longer shared")
    assert "does not open run" in new_client(server).predict(run["id"], link.split("share=")[1],
                                                             api_name="/open_run")[4]


def test_the_class_asking_the_same_thing_costs_one_answer(server, tiny_teacher_dir, monkeypatch):
    """Students on one shared run asking the same question get the first one's answer (its figures built once,
    no forward pass); a text of their own is computed; the same continuation is decoded once."""
    teacher = new_client(server)
    run = finished_run(teacher, tiny_teacher_dir, seed=41)
    _, link = teacher.predict(False, api_name="/share_run")
    students = [new_client(server) for _ in range(2)]
    for student in students:
        student.predict(run["id"], link.split("share=")[1], api_name="/open_run")
    calls, real = [], dark_tab.probe_dark_knowledge
    monkeypatch.setattr(dark_tab, "probe_dark_knowledge", lambda *args: calls.append(args[0]) or real(*args))
    first = students[0].predict("The class text", -1, 1.0, 5, str(tiny_teacher_dir), "layers:1",
                                api_name="/dark_knowledge")
    passes = batcher.FORWARDS.passes
    second = students[1].predict("The class text", -1, 1.0, 5, str(tiny_teacher_dir), "layers:1",
                                 api_name="/dark_knowledge")
    assert second == first and calls == ["The class text"] and batcher.FORWARDS.passes == passes
    students[1].predict("My own text", -1, 1.0, 5, str(tiny_teacher_dir), "layers:1", api_name="/dark_knowledge")
    assert calls == ["The class text", "My own text"] and batcher.FORWARDS.passes > passes
    generated = [s.predict("Once upon a", 5, 2, str(tiny_teacher_dir), "layers:1", api_name="/generate")[2]
                 for s in students]
    assert generated[0] == generated[1] and set(generated[0]) == {"teacher", "student (before)", "student (after)"}


def test_a_question_many_ask_at_once_is_answered_once():
    """A class opening the same view at the same second: the first request builds the answer, the others wait
    for it instead of building the same figures; an error is not kept, so the next asker tries again."""
    import threading

    from ui.common import Answers

    answers, made, gate = Answers(), [], threading.Event()

    def make():
        made.append(1)
        gate.wait(5)
        return ("note", "figure")

    got = []
    askers = [threading.Thread(target=lambda: got.append(answers.get_or_make(("q",), make, note_index=0)))
              for _ in range(5)]
    for asker in askers:
        asker.start()
    time.sleep(0.3)
    gate.set()
    for asker in askers:
        asker.join(10)
    assert made == [1] and got == [("note", "figure")] * 5
    failing = lambda: made.append(1) or ("**Error:** no", None)  # noqa: E731
    answers.get_or_make(("bad",), failing, note_index=0)
    answers.get_or_make(("bad",), failing, note_index=0)
    assert len(made) == 3


def test_students_opening_one_shared_run_share_its_curves_and_table(server, tiny_teacher_dir, monkeypatch):
    """The run's results (status, curves, last probe, before/after table) are read from its folder and built once
    for every student who opens it by the same link; its owner sees it as its owner."""
    from ui import runs as runs_tab

    teacher = new_client(server)
    run = finished_run(teacher, tiny_teacher_dir, seed=43)
    _, link = teacher.predict(False, api_name="/share_run")
    built, real = [], runs_tab.run_results
    monkeypatch.setattr(runs_tab, "run_results", lambda out_dir, shared: built.append(shared) or real(out_dir, shared))
    opened = [new_client(server).predict(run["id"], link.split("share=")[1], api_name="/open_run") for _ in range(3)]
    assert built == [True] and all(o[0] == opened[0][0] for o in opened)
    assert opened[0][0].startswith("**Shared run") and "Before / after" in opened[0][3]
    own = teacher.predict(run["id"], run["token"], api_name="/open_run")
    assert built == [True, False] and own[0].startswith("**Opened the earlier run")


def test_loaded_models_stay_under_a_small_budget_with_several_runs(server, tiny_teacher_dir, monkeypatch):
    """Each tiny model holds ~13 MB (its 49152 x 64 embedding); a budget of 3.5 models holds the teacher, the
    untrained student and one trained one: opening three runs in turn from three clients evicts, and every
    view still answers with its own run."""
    clients = [new_client(server) for _ in range(3)]
    rows = [finished_run(client, tiny_teacher_dir, seed=10 + i) for i, client in enumerate(clients)]
    one = model_bytes(models.load_teacher(str(tiny_teacher_dir)))
    budget = int(3.5 * one)
    monkeypatch.setattr(models.LOADED, "_budget", lambda: budget)
    evictions = models.LOADED.evictions
    for _ in range(2):
        for client, row in zip(clients, rows):
            assert row["id"] in dark(client, tiny_teacher_dir, f"Run {row['id']} on")
            assert models.LOADED.bytes <= budget, models.LOADED.stats()
    assert models.LOADED.evictions > evictions
    assert models.LOADED.peak_bytes >= models.LOADED.bytes


def test_retention_removes_the_oldest_finished_run_and_never_a_running_one(server, tiny_teacher_dir, tmp_path,
                                                                          monkeypatch):
    """Under the operator's cap (DISTILL_RUNS_CAP_MB), a new Run first removes the oldest finished run; a run
    being written, or one a user looks at, is never removed."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(runs))  # the served app reads it for every new run
    owner, runner = new_client(server), new_client(server)
    oldest = finished_run(owner, tiny_teacher_dir, seed=21)
    newer = finished_run(owner, tiny_teacher_dir, seed=22)  # the owner looks at this one now
    monkeypatch.setattr(retention, "_LOOKED_AT", {str((runs / newer["id"]).resolve()): time.time()})
    cap = retention.folder_bytes(runs / newer["id"]) + 2**20  # the newer run fits, not both
    monkeypatch.setenv("DISTILL_RUNS_CAP_MB", str(cap / 2**20))
    third = finished_run(owner, tiny_teacher_dir, seed=23)  # its new folder first makes room: the oldest goes
    assert not (runs / oldest["id"]).exists()
    assert (runs / newer["id"] / "student").is_dir() and (runs / third["id"] / "student").is_dir()

    job = start_long_run(runner, tiny_teacher_dir)  # one distillation at a time: retention meets it while it runs
    (running,) = [p for p in runs.iterdir() if (p / "running.json").is_file()]
    report = retention.make_room(cap=1)  # nothing fits: still never the running run, nor those looked at
    assert report["removed"] == [] and report["kept"] == {running.name: "running", newer["id"]: "in view",
                                                          third["id"]: "in view"}
    monkeypatch.setattr(retention, "_LOOKED_AT", {})  # nobody looks any more (the idle time has passed)
    report = retention.make_room(cap=1)
    assert report["removed"] == [newer["id"], third["id"]] and report["kept"] == {running.name: "running"}
    assert "no longer on this machine" in dark(owner, tiny_teacher_dir)  # the owner's open run is gone: it says so
    assert runner.predict(api_name="/stop").startswith("**Stop requested:**")
    assert job.result()[0].startswith("**Stopped** at step ") and (running / "student").is_dir()
    assert not (running / "running.json").exists()  # written, finished: now it may go like any other


def test_a_full_disk_during_the_save_leaves_the_checkpoint_intact(server, tiny_teacher_dir, runs, monkeypatch):
    """A session of 7 steps writes its checkpoint at step 5 (checkpoint_every, 5 here through the preset the app
    reads); then the disk fills while it saves its student (simulated: transformers' safetensors writer writes
    part of the file, then the system says ENOSPC). The status says the disk is full, the half-written folder is
    gone, the checkpoint of step 5 is untouched and resumable."""
    def disk_fills(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1024)  # part of the file, then no space left
        raise OSError(errno.ENOSPC, "No space left on device")

    client = new_client(server)
    preset = api.preset_config
    monkeypatch.setattr(api, "preset_config", lambda name=None: preset(name).with_overrides({"checkpoint_every": 5}))
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_fills)
    status = client.predict(*api_values(client, tiny_teacher_dir, steps=7, seed=31), api_name="/run_session")[0]
    monkeypatch.undo()
    assert status.startswith("**Error:** the disk is full: the student could not be written to"), status
    assert "The last checkpoint is kept in" in status and "--resume" in status
    folder = runs / status.split("Run folder: `")[1].split("`")[0].rstrip("/").rsplit("/", 1)[-1]
    assert not (folder / "student").exists() and not (folder / "student.tmp").exists()
    assert load_checkpoint(folder).step == 5
    assert json.loads((folder / "checkpoint" / "state.json").read_text(encoding="utf-8"))["step"] == 5
