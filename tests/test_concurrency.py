"""Several users at once against one served app (README, "Several users"): distillations run one at a time
through Gradio's queue (one shared concurrency id) while the others wait and see their position; each user's
runs and results are their own; the inspection views answer while a run trains. Users are gradio_client
Clients (each one browser session, its own UserSession) on tiny models. Overlap is checked from the order of
events, never from durations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import app
from distill_core.config import DistillConfig
from tests.conftest import served_app
from tests.test_app import ui_values
from tests.test_catalogue import api_args, api_values, start_long_run, wait_for
from ui import distill
from ui.common import DISTILLATIONS, VIEW_CONCURRENCY
from ui.attention import ATTENTION_TEXT
from ui.similarity import similarity_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")
client_module = pytest.importorskip("gradio_client")

USERS = 4


@pytest.fixture(scope="module")
def server(tiny_teacher_dir, tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("runs")) as url:
        yield url


@pytest.fixture()
def session_log(monkeypatch) -> list[tuple[int, str]]:
    """(seed, "start" | "end") of every session the app runs, in the order they happen (the engine's session as
    the Distill tab calls it, ui.distill.SESSION, wrapped; the app serves from this process)."""
    log: list[tuple[int, str]] = []
    lock, real = threading.Lock(), distill.SESSION

    def logged(config, out_dir, stop=None):
        with lock:
            log.append((config.seed, "start"))
        try:
            yield from real(config, out_dir, stop)
        finally:
            with lock:
                log.append((config.seed, "end"))

    monkeypatch.setattr(distill, "SESSION", logged)
    return log


def run_name(status: str) -> str:
    """The run folder a session's final status names."""
    return status.split("Run folder: `")[1].split("`")[0].rstrip("/").rsplit("/", 1)[-1]


def test_the_app_declares_one_distillation_lane():
    """run_session, size_sweep and compare share one concurrency id and enter at once: the app's own fair queue
    (ui.common.DISTILLATIONS) runs one at a time and shows the place on their status line; every inspection
    view has its own lane, several requests at once (so that they meet in shared forward passes)."""
    fns = {fn.api_name: fn for fn in app.build_app().fns.values() if fn.api_name}
    for name, status_elem in (("run_session", "run-status"), ("size_sweep", "sweep-status"),
                              ("compare", "compare-status")):
        fn = fns[name]
        assert (fn.concurrency_id, fn.concurrency_limit) == (app.DISTILLATION_QUEUE, None)
        assert fn.show_progress == "minimal" and [b.elem_id for b in fn.show_progress_on] == [status_elem]
    views = [fns[name].concurrency_id for name in ("dark_knowledge", "attention", "similarity", "evaluate",
                                                   "generate", "compatibility", "export")]
    assert len(set(views)) == len(views) and app.DISTILLATION_QUEUE not in views
    assert {fns[name].concurrency_limit for name in ("dark_knowledge", "attention", "similarity", "evaluate",
                                                     "generate")} == {VIEW_CONCURRENCY}


def statuses(job) -> list[str]:
    """Every status line a running job has streamed so far (its first output each time)."""
    return [str(outputs[0]) for outputs in job.outputs()]


def test_four_users_distil_one_at_a_time_and_each_gets_their_own(server, tiny_teacher_dir, session_log,
                                                                 monkeypatch):
    monkeypatch.setattr(DISTILLATIONS, "_history", [])  # no session has finished here yet: no estimate
    clients = [client_module.Client(server, verbose=False) for _ in range(USERS)]
    jobs = []
    for seed, client in enumerate(clients):  # in this order: first come, first served
        jobs.append(client.submit(*api_values(client, tiny_teacher_dir, steps=3, seed=seed), api_name="/run_session"))
        wait_for(lambda: jobs[-1].outputs() or jobs[-1].done(), "the session to be answered")
    deadline = time.monotonic() + 600
    while not all(job.done() for job in jobs):
        assert time.monotonic() < deadline, "the four sessions did not finish"
        time.sleep(0.05)
    finals = [job.result()[0] for job in jobs]
    assert all(final.startswith("**Done:** 3/3 steps") for final in finals), finals

    # one at a time, in the order they came: every session ended before the next one started
    assert [kind for _, kind in session_log] == ["start", "end"] * USERS
    assert [seed for seed, _ in session_log[::2]] == list(range(USERS))
    # the others waited and saw their place (the last one third in line), and once a session had finished on
    # this machine, how long they would wait
    waited = [[line for line in statuses(job) if line.startswith("**Waiting:")] for job in jobs]
    assert waited[0] == [] and all(waited[1:])
    assert waited[3][0].startswith("**Waiting: 3rd in line** (2 waiting ahead of you; 3 waiting in all")
    assert any("until your session starts" in line for line in waited[3])
    assert "No estimate yet: no session has finished on this machine" in waited[1][0]

    # each user's results are their own: their run, their student, their config (seed)
    names = [run_name(final) for final in finals]
    assert len(set(names)) == USERS
    for seed, (client, name) in enumerate(zip(clients, names)):
        note, archive, config = client.predict(api_name="/export")
        assert note.startswith("Exported the student of `") and name in note and Path(archive).name == f"{name}-student.zip"
        assert DistillConfig.from_yaml(config).seed == seed
        probe_note = client.predict("I ate an", -1, 1.0, 5, str(tiny_teacher_dir), "layers:1",
                                    api_name="/dark_knowledge")[1]
        assert [other for other in names if other in probe_note] == [name]


def test_one_place_per_browser_and_stop_leaves_the_queue(server, tiny_teacher_dir, session_log):
    trainer, waiter = (client_module.Client(server, verbose=False) for _ in range(2))
    job = start_long_run(trainer, tiny_teacher_dir)
    again = trainer.predict(*api_values(trainer, tiny_teacher_dir, steps=2), api_name="/run_session")[0]
    assert again.startswith("**Error:** this browser session already has a distillation queued or running")
    waiting = waiter.submit(*api_values(waiter, tiny_teacher_dir, steps=2, seed=5), api_name="/run_session")
    wait_for(lambda: any(line.startswith("**Waiting: 1st in line**") for line in statuses(waiting)), "its place")
    sweep = waiter.predict(*api_args(waiter, "/size_sweep", **{k: v for k, v in ui_values(tiny_teacher_dir).items()
                                                                if k != "student"}, specs="layers:1"),
                           api_name="/size_sweep")[0]  # a sweep takes the same one place
    assert sweep.startswith("**Error:** this browser session already has a distillation")
    assert waiter.predict(api_name="/stop") == distill.LEFT_QUEUE_NOTE
    assert waiting.result()[0] == distill.LEFT_QUEUE_NOTE
    assert trainer.predict(api_name="/stop").startswith("**Stop requested:**")
    assert job.result()[0].startswith("**Stopped** at step ")
    assert [seed for seed, kind in session_log if kind == "start"] == [0]  # the waiter's session never started


def test_views_answer_while_a_run_trains_and_users_stay_apart(server, tiny_teacher_dir, session_log):
    trainer, looker, waiter = (client_module.Client(server, verbose=False) for _ in range(3))
    job = start_long_run(trainer, tiny_teacher_dir)  # 500 steps: it trains until stopped

    # another user's inspection views answer while it trains, with that user's models only
    teacher = str(tiny_teacher_dir)
    calls = [
        (("I ate an", -1, 1.0, 5, teacher, "layers:1"), "/dark_knowledge", 1),
        (dict(text=ATTENTION_TEXT, teacher_layer=-1, teacher_head=0, student_layer=-1, student_head=0,
              average_heads=False, teacher=teacher, student="layers:1"), "/attention", 0),
        ((similarity_text(), teacher, "layers:1"), "/similarity", 0),
        (("The river", 4, 0, teacher, "layers:1"), "/generate", 0),
        ((teacher, "layers:1"), "/compatibility", 0),
    ]
    for args, endpoint, note_index in calls:
        if isinstance(args, dict):  # a dict-input endpoint: its inputs by name
            args = api_args(looker, endpoint, **args)
        note = looker.predict(*args, api_name=endpoint)[note_index]
        assert not note.startswith("**Error:**"), (endpoint, note)
        if endpoint != "/compatibility":
            assert "No distillation session has run in this browser session yet" in note
        assert not job.done(), f"{endpoint} answered only after the run ended"

    # a second distillation waits in the queue, first in line, until the first one ends
    waiting = waiter.submit(*api_values(waiter, tiny_teacher_dir, steps=2, seed=7), api_name="/run_session")
    wait_for(lambda: any(line.startswith("**Waiting: 1st in line**") for line in statuses(waiting)),
             "the second session to queue")

    # the looker's Stop is not the trainer's: it says nothing runs for it, and the run goes on
    assert looker.predict(api_name="/stop") == distill.NOTHING_TO_STOP
    steps_before = len(job.outputs())
    wait_for(lambda: len(job.outputs()) >= steps_before + 3 or job.done(), "the run to go on")
    assert not job.done()
    assert trainer.predict(api_name="/stop").startswith("**Stop requested:**")
    assert job.result()[0].startswith("**Stopped** at step ")
    assert waiting.result()[0].startswith("**Done:** 2/2 steps")
    assert [kind for _, kind in session_log] == ["start", "end", "start", "end"]
    assert [seed for seed, _ in session_log] == [0, 0, 7, 7]
    # the looker never ran a session: nothing to export
    assert looker.predict(api_name="/export")[0].startswith("**Error:** no session has finished")


def test_models_loaded_by_several_users_at_once_are_whole(tiny_teacher_dir, tmp_path):
    """transformers is not thread-safe while it builds a model: four loads at once left every copy's tied output
    layer on the meta device. The engine builds one model at a time (models.MODEL_LOCK)."""
    from distill_core.models import load_model, load_saved_model
    from distill_core.students import derive_student

    teacher = load_model(str(tiny_teacher_dir))
    builders = [lambda: load_model(str(tiny_teacher_dir)).model, lambda: load_saved_model(tiny_teacher_dir),
                lambda: derive_student(teacher, "fresh:layers=1,hidden=32,heads=2").model,
                lambda: load_model(str(tiny_teacher_dir)).model] * 2
    models: list = [None] * len(builders)

    def build(i: int) -> None:
        models[i] = builders[i]()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(len(builders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model in models:
        assert not [name for name, p in model.named_parameters() if p.is_meta]
        assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied


def test_a_run_opens_again_with_its_token_and_for_nobody_else(server, tiny_teacher_dir):
    """Runs survive a reload: a new browser session (a new client) that presents the earlier run's token gets
    its views and its export; another one, without the token, gets neither."""
    first = client_module.Client(server, verbose=False)
    status = first.predict(*api_values(first, tiny_teacher_dir, steps=2), api_name="/run_session")[0]
    assert status.startswith("**Done:**")
    (run,) = first.predict(api_name="/my_runs")
    assert set(run) == {"id", "token", "teacher", "student"} and run_name(status) == run["id"]
    teacher = str(tiny_teacher_dir)

    later = client_module.Client(server, verbose=False)  # the same person after a reload
    assert later.predict("I ate an", -1, 1.0, 5, teacher, "layers:1", api_name="/dark_knowledge")[1].startswith(
        "No distillation session has run")
    opened = later.predict(run["id"], run["token"], api_name="/open_run")
    assert opened[0].startswith(f"**Opened the earlier run `{run['id']}`**") and "Before / after" in opened[3]
    note = later.predict("I ate an", -1, 1.0, 5, teacher, "layers:1", api_name="/dark_knowledge")[1]
    assert note.startswith("Student (after) is the last session's student") and run["id"] in note
    assert later.predict(api_name="/export")[0].startswith(f"Exported the student of `")

    stranger = client_module.Client(server, verbose=False)
    refused = stranger.predict(run["id"], "not-the-token", api_name="/open_run")
    assert "the token does not open run" in refused[4]
    assert stranger.predict(api_name="/export")[0].startswith("**Error:** no session has finished")
    assert stranger.predict(api_name="/my_runs") == []
