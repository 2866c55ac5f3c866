"""The app as on a ZeroGPU Space, driven through its API: the app served in its own process with
DISTILL_ZEROGPU_EMULATION=1, so every GPU call of a session runs in a spawned child process with its
arguments and every yielded event pickled (ZeroGPU's worker), and with a GPU duration so short that each
call trains one step: a session runs in slices that resume from each other's checkpoint. Run, Stop,
Compare sizes and every view must work as they do on a plain machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.conftest import REPO
from tests.test_catalogue import api_args, api_values, client_module, stopped_step, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def zerogpu_app(tmp_path_factory):
    """`python app.py` in its own process, emulating ZeroGPU with one-second GPU calls."""
    runs = tmp_path_factory.mktemp("zerogpu-runs")
    port = free_port()
    env = {**os.environ, "DISTILL_ZEROGPU_EMULATION": "1", "DISTILL_GPU_DURATION_S": "1", "HF_HUB_OFFLINE": "1",
           "DISTILL_STUDIO_RUNS": str(runs), "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            client = client_module.Client(url, verbose=False)
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(f"the app did not start: {server.stderr.read()[-2000:]}")
            time.sleep(1)
    try:
        yield SimpleNamespace(url=url, runs=runs, client=client)
    finally:
        server.terminate()
        server.wait(30)


def test_run_goes_through_slices_across_a_process_boundary(zerogpu_app, tiny_teacher_dir):
    client = zerogpu_app.client
    status = client.predict(*api_values(client, tiny_teacher_dir, steps=2), api_name="/run_session")[0]
    assert status.startswith("**Done:** 2/2 steps"), status
    (run,) = zerogpu_app.runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_done"] == 2 and summary["resumed_from_step"] == 1  # two calls, one step each
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == [1, 2]  # each step once, across the calls
    # the views read the run from disk in the app's process
    teacher = str(tiny_teacher_dir)
    note = client.predict("I ate an", -1, 1.0, 5, teacher, "layers:1", api_name="/dark_knowledge")[1]
    assert note.startswith("Student (after) is the last session's student"), note
    assert client.predict(*api_args(client, "/attention", teacher=teacher, student="layers:1",
                                    text="I ate an apple today"), api_name="/attention")[0].startswith("Student (after)")
    assert client.predict("The river flows past the old mill and into the sea below it", teacher, "layers:1",
                          api_name="/similarity")[0].startswith("Student (after)")
    assert "student (after)" in client.predict(teacher, "layers:1", api_name="/evaluate")[2]
    assert "student (after)" in client.predict("The river", 4, 0, teacher, "layers:1", api_name="/generate")[2]
    assert client.predict(api_name="/export")[0].startswith("Exported the student of")


def test_stop_reaches_the_gpu_process(zerogpu_app, tiny_teacher_dir):
    client = client_module.Client(zerogpu_app.url, verbose=False)
    job = client.submit(*api_values(client, tiny_teacher_dir, steps=500), api_name="/run_session")
    wait_for(lambda: any(str(out[0]).startswith("**Step ") and not out[0].startswith("**Step 0/")
                         for out in job.outputs()) or job.done(), "the first step", timeout_s=180)
    assert client.predict(api_name="/stop").startswith("**Stop requested:**")
    assert 1 <= stopped_step(job.result(timeout=180)[0]) < 500


def test_compare_sizes_sends_each_student_to_the_gpu(zerogpu_app, tiny_teacher_dir):
    client = client_module.Client(zerogpu_app.url, verbose=False)
    values = {**{k: v for k, v in api_args_named(tiny_teacher_dir, steps=1).items() if k != "student"},
              "specs": "layers:1, layers:2"}
    status = client.predict(*api_args(client, "/size_sweep", **values), api_name="/size_sweep")[0]
    assert status.startswith("**Done:** 2/2 students"), status


def api_args_named(teacher_dir, **changes):
    from tests.test_app import ui_values

    return ui_values(teacher_dir, **changes)
