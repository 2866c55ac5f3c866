"""Size against quality: one session per student spec, a row each in students.json."""

import json
import math
import threading

import pytest

from distill_core.errors import DistillError
from distill_core.sweep import STUDENT_ROW_KEYS, read_student_rows, safe_name, student_sweep


def quick(config):
    return config.with_overrides(["steps=2", "eval_every=0", "probe_every=0"])


def test_sweep_of_two_students(tiny_config, tmp_path):
    events = list(student_sweep(quick(tiny_config), ["layers:1", "layers:3"], tmp_path, speed_tokens=4))
    rows = json.loads((tmp_path / "students.json").read_text())
    assert [e["row"] for e in events if e["kind"] == "row"] == rows
    assert [r["spec"] for r in rows] == ["layers:1", "layers:3"]
    for row in rows:
        assert list(row) == list(STUDENT_ROW_KEYS)
        assert row["error"] is None
        for key in ("ppl_before", "ppl", "kl_to_teacher", "tokens_per_s", "teacher_ppl", "teacher_tokens_per_s", "wall_s"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert 0 <= row["top1_agreement"] <= 1
        assert row["params"] < row["teacher_params"]
        summary = json.loads((tmp_path / safe_name(row["spec"]) / "summary.json").read_text())
        assert summary["student_spec"] == row["spec"] and summary["after"]["ppl"] == row["ppl"]
        assert row["teacher_ppl"] == summary["teacher"]["ppl"]
    assert rows[0]["params"] < rows[1]["params"]
    assert rows[0]["teacher_tokens_per_s"] == rows[1]["teacher_tokens_per_s"]  # measured once per sweep
    # the teacher's line, measured before the students, agrees with what the sessions measured
    teacher = next(e for e in events if e["kind"] == "teacher")
    assert teacher["teacher_ppl"] == pytest.approx(rows[0]["teacher_ppl"], rel=1e-4)
    # every session event says which student it belongs to
    session_events = [e for e in events if e["kind"] in ("step", "done")]
    assert {e["student"] for e in session_events} == {"layers:1", "layers:3"}
    assert [e["student"] for e in events if e["kind"] == "done"] == ["layers:1", "layers:3"]


def test_a_failing_student_gets_an_error_row_and_the_sweep_goes_on(tiny_config, tmp_path):
    events = list(student_sweep(quick(tiny_config), ["layers:1", "layers:99", "layers:0,3"], tmp_path, speed_tokens=4))
    rows = json.loads((tmp_path / "students.json").read_text())
    assert [r["spec"] for r in rows] == ["layers:1", "layers:99", "layers:0,3"]
    bad = rows[1]
    assert "more layers than the teacher" in bad["error"]
    assert bad["params"] is None and bad["ppl"] is None and bad["teacher_params"] == rows[0]["teacher_params"]
    assert rows[0]["error"] is None and rows[2]["error"] is None and rows[2]["ppl"] > 0
    assert (tmp_path / "layers-0_3" / "student" / "config.json").is_file()
    assert sum(e["kind"] == "row" for e in events) == 3


def test_stop_ends_the_sweep_after_the_current_student(tiny_config, tmp_path):
    stop = threading.Event()
    rows = []
    for event in student_sweep(tiny_config.with_overrides(["steps=3", "eval_every=0", "probe_every=0"]),
                               ["layers:1", "layers:2"], tmp_path, stop, speed_tokens=4):
        if event["kind"] == "step" and event["step"] == 2:
            stop.set()
        if event["kind"] == "row":
            rows.append(event["row"])
    assert [r["spec"] for r in rows] == ["layers:1"]
    assert rows[0]["error"] == "stopped at step 2" and rows[0]["ppl"] > 0
    assert json.loads((tmp_path / "students.json").read_text()) == rows
    assert not (tmp_path / "layers-2").exists()


def test_empty_sweep_is_refused(tiny_config, tmp_path):
    with pytest.raises(DistillError, match="at least one student spec"):
        list(student_sweep(tiny_config, [], tmp_path))


def test_safe_name():
    assert safe_name("layers:10") == "layers-10"
    assert safe_name("layers:0,5,9") == "layers-0_5_9"
    assert safe_name("layers:20:angular") == "layers-20-angular"
    assert safe_name("fresh:layers=2,hidden=64,heads=4") == "fresh-layers=2_hidden=64_heads=4"
    assert safe_name("/tmp/runs/a/student") == "tmp_runs_a_student"
    assert len(safe_name("layers:" + ",".join(map(str, range(40))))) <= 60


def test_read_student_rows_checks_the_file(tmp_path):
    good = tmp_path / "students.json"
    good.write_text('[{"spec": "layers:2", "ppl": 3.0}]')
    assert read_student_rows(good) == [{"spec": "layers:2", "ppl": 3.0}]
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "rows.json").write_text('[{"ppl": 3.0}]')
    for path, message in [(None, "no file"), (tmp_path / "bad.json", "not a readable JSON file"),
                          (tmp_path / "rows.json", "must hold a list of rows with a `spec` each")]:
        with pytest.raises(DistillError, match=message):
            read_student_rows(path)


def test_ablation_rows_can_be_chosen_by_name(tiny_config):
    from distill_core.sweep import ablation_rows

    chosen = ablation_rows(tiny_config, ["soft_target", "ce_only"])
    assert [name for name, _ in chosen] == ["ce_only", "soft_target"]  # the ablation's order
    assert chosen[0][1].kd_weight == 0.0 and chosen[1][1].kd_weight > 0
    with pytest.raises(DistillError, match="unknown ablation row nope"):
        ablation_rows(tiny_config, ["nope"])


def test_real_fields_of_a_summary():
    from distill_core.sweep import REAL_KEYS, real_fields

    summary = {"real_text": {"source": "x", "tokens": 9, "teacher": {"ppl": 3.0},
                             "before": {"ppl": 9.0, "top1_agreement": 0.1, "kl_to_teacher": 2.0},
                             "after": {"ppl": 5.0, "top1_agreement": 0.4, "kl_to_teacher": 1.0}}}
    assert real_fields(summary) == {"real_ppl_before": 9.0, "real_ppl": 5.0, "real_top1_agreement": 0.4,
                                    "real_kl_to_teacher": 1.0, "real_teacher_ppl": 3.0}
    assert set(real_fields({"real_text": None})) == set(REAL_KEYS)
    assert all(v is None for v in real_fields({"real_text": {"note": "missing"}}).values())


def test_ablation_stop_keeps_the_finished_rows_and_starts_no_other(tiny_config, tmp_path):
    """Stop set while the first row runs: that session ends, its row is kept (stopped early), the next never starts;
    each row runs through the given `session` in its own folder (a name with a colon gets a safe one)."""
    from distill_core.session import run_session
    from distill_core.sweep import ablation

    stop, calls = threading.Event(), []

    def session(config, out_dir, stop_signal):
        calls.append(out_dir)
        for event in run_session(config, out_dir, stop_signal):
            if event["kind"] == "step":
                stop.set()  # after the first step
            yield event

    config = quick(tiny_config).with_overrides(["steps=3"])
    rows = [("preset:a", config), ("b", config.with_overrides(["kd_weight=0"]))]
    events = list(ablation(config, tmp_path, rows, stop=stop, session=session))
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["name"] for r in saved] == ["preset:a"] == [e["row"]["name"] for e in events if e["kind"] == "row"]
    assert saved[0]["stopped_early"] is True and saved[0]["steps"] < 3 and math.isfinite(saved[0]["ppl"])
    assert calls == [tmp_path / "preset-a"] and (tmp_path / "preset-a" / "summary.json").is_file()


def test_seeded_rows_repeat_every_row_seed_by_seed(tiny_config):
    from distill_core.sweep import ablation_rows, seeded_rows

    rows = seeded_rows(ablation_rows(tiny_config, ["ce_only", "soft_target"]), [3, 5])
    assert [name for name, _ in rows] == ["ce_only seed=3", "soft_target seed=3", "ce_only seed=5", "soft_target seed=5"]
    assert [config.seed for _, config in rows] == [3, 3, 5, 5]
    assert rows[0][1].kd_weight == 0.0 and rows[3][1].kd_weight > 0  # each row keeps its recipe
    with pytest.raises(DistillError, match="each seed once"):
        seeded_rows(ablation_rows(tiny_config, ["ce_only"]), [1, 1])


def test_seed_means_average_each_recipe_and_keep_its_range():
    from distill_core.sweep import seed_means

    rows = [{"name": "a seed=0", "ppl": 10.0, "real_ppl": 20.0, "kl_to_teacher": 1.0, "real_kl_to_teacher": None,
             "top1_agreement": 0.5, "error": None},
            {"name": "b seed=0", "ppl": 30.0, "real_ppl": 1.0, "kl_to_teacher": 2.0, "real_kl_to_teacher": 0.2,
             "top1_agreement": 0.1, "error": None},
            {"name": "a seed=1", "ppl": 14.0, "real_ppl": 26.0, "kl_to_teacher": 3.0, "real_kl_to_teacher": 0.4,
             "top1_agreement": 0.3, "error": None},
            {"name": "b seed=1", "ppl": 99.0, "error": "out of memory"}]
    a, b = seed_means(rows)
    assert (a["name"], a["seeds"], b["name"], b["seeds"]) == ("a", 2, "b", 1)  # the failed row is left out
    assert (a["ppl"], a["ppl_min"], a["ppl_max"]) == (12.0, 10.0, 14.0)
    assert (a["real_ppl"], a["kl_to_teacher"], a["top1_agreement"]) == (23.0, 2.0, pytest.approx(0.4))
    assert a["real_kl_to_teacher"] is None and a["real_kl_to_teacher_min"] is None  # one seed lacks it
    assert (b["ppl"], b["real_kl_to_teacher"]) == (30.0, 0.2)
