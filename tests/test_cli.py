"""The CLI as a user runs it: a subprocess, JSON on stdout, a one-line reason and non-zero exit on bad input."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill_core.__main__ import main
from distill_core.config import DistillConfig, field_help
from tests.conftest import REPO, SAMPLE_TEXT


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "distill_core", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_info(tiny_teacher_dir):
    result = cli("info", "--teacher", str(tiny_teacher_dir), "--student", "layers:2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["student"]["layers"] == 2 and report["tokenizer"]["same_vocabulary"]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["info", "--teacher", "smollm2-999", "--student", "layers:2"], "unknown model spec 'smollm2-999'"),
        (["info", "--teacher", "TINY", "--student", "layers:99"], "more layers than the teacher"),
        (["evaluate", "--teacher", "TINY", "--student", "layers:2", "--text", "EMPTY"], "is empty"),
        (["distill", "--config", "CONFIG", "--out", "OUT", "--set", "steps=many"], "steps must be an int"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, reason, tiny_teacher_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    config = tmp_path / "c.yaml"
    config.write_text("steps: 2\n")
    replace = {"TINY": str(tiny_teacher_dir), "EMPTY": str(empty), "CONFIG": str(config), "OUT": str(tmp_path / "out")}
    result = cli(*[replace.get(a, a) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and reason in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def write_config(config, folder) -> Path:
    path = folder / "tiny.yaml"
    config.with_overrides(["eval_every=2", "probe_every=0"]).to_yaml(path)
    return path


def test_distill_then_evaluate_round_trip(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=9", "eval_every=2", "probe_every=0"]).to_yaml(config_path)
    out = tmp_path / "run"
    result = cli("distill", "--config", str(config_path), "--out", str(out), "--set", "seed=1", "--steps", "4")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert {"student_spec", "before", "after", "teacher"} <= set(summary)
    assert summary["before"]["ppl"] > 0 and summary["after"]["ppl"] > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["steps"] == 4  # the field option wins over the file
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "step"] == [1, 2, 3, 4]
    assert "step    4/4" in result.stderr

    text = tmp_path / "eval.txt"
    text.write_text(SAMPLE_TEXT)
    result = cli("evaluate", "--teacher", tiny_config.teacher, "--student", str(out / "student"),
                 "--text", str(text), "--max-tokens", "128")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["teacher"]) == {"ppl", "bits_per_byte", "params", "tokens_per_s", "sample_nll"}
    assert set(report["student"]) == {"ppl", "bits_per_byte", "top1_agreement", "kl_to_teacher", "params",
                                      "tokens_per_s", "sample_nll", "sample_reverse_kl", "sample_entropy"}
    assert 0 <= report["student"]["top1_agreement"] <= 1
    # the teacher grades the student's own continuations of the 16 held-out prompts; its own are the floor
    assert report["student"]["sample_nll"] > report["teacher"]["sample_nll"] > 0
    assert 16 <= report["sample_tokens"] <= 16 * 32
    assert report["tokenizer_bridge"] == "none" and report["bytes"] > 0 and report["student"]["bits_per_byte"] > 0
    assert set(report["real_text"]) >= {"source"}  # the packaged text, or a note saying how to install it
    fixture = REPO / "tests" / "fixtures" / "gettysburg.txt"
    result = cli("evaluate", "--teacher", tiny_config.teacher, "--student", str(out / "student"),
                 "--text", str(text), "--max-tokens", "128", "--real-text", str(fixture), "--sample-tokens", "0")
    skipped = json.loads(result.stdout)
    assert set(skipped["student"]) == {"ppl", "bits_per_byte", "top1_agreement", "kl_to_teacher", "params",
                                       "tokens_per_s"}
    real = skipped["real_text"]
    assert real["source"] == str(fixture) and real["tokens"] > 100 and real["student"]["ppl"] > 0
    assert real["student"]["ppl"] != report["student"]["ppl"]


def test_distill_and_evaluate_a_student_with_its_own_tokenizer(tiny_config, tmp_path):
    out = tmp_path / "bpe"
    result = cli("distill", "--config", str(write_config(tiny_config, tmp_path)), "--out", str(out), "--student",
                 "fresh:layers=2,hidden=32,heads=2,vocab=bpe:400", "--steps", "3", "--tokenizer-bridge", "span")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tokenizer_bridge"]["bridge"] == "span" and summary["after"]["bits_per_byte"] > 0
    assert "bits/byte" in result.stderr and "Tokenizer bridge span" in result.stderr
    # the session's held-out text, budget and windows: the same bytes, the same figures
    result = cli("evaluate", "--teacher", tiny_config.teacher, "--student", str(out / "student"), "--text",
                 tiny_config.eval_text, "--max-tokens", str(tiny_config.eval_max_tokens), "--seq-len",
                 str(tiny_config.seq_len))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokenizer_bridge"] == "span" and report["bytes"] == summary["eval_bytes"]
    assert report["student"]["bits_per_byte"] == pytest.approx(summary["after"]["bits_per_byte"], rel=1e-4)
    assert report["teacher"]["bits_per_byte"] == pytest.approx(summary["teacher"]["bits_per_byte"], rel=1e-4)
    result = cli("evaluate", "--teacher", tiny_config.teacher, "--student", str(out / "student"), "--text",
                 tiny_config.eval_text, "--tokenizer-bridge", "none")
    assert result.returncode == 2 and "tokenizers differ" in result.stderr


def test_ablate_writes_every_row(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=3", "eval_every=0", "probe_every=0", "corpus_text=",
                                f"corpus={REPO / 'assets' / 'texts' / 'sample_user_corpus.txt'}"]).to_yaml(config_path)
    out = tmp_path / "ablation"
    result = cli("ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["ce_only", "soft_target", "attention", "fitnets", "all"]
    for row in rows:
        assert {"name", "ppl", "top1_agreement", "kl_to_teacher", "wall_s"} <= set(row) and row["ppl"] > 0
    assert rows[0]["ppl_before"] == rows[1]["ppl_before"]  # same seed, same student, same data
    configs = {r["name"]: yaml.safe_load((out / r["name"] / "config.yaml").read_text()) for r in rows}
    assert configs["ce_only"]["kd_weight"] == 0 and configs["soft_target"]["kd_weight"] > 0
    assert configs["attention"]["attention_weight"] > 0 and configs["attention"]["hidden_weight"] == 0
    assert configs["fitnets"]["hidden_weight"] > 0 and configs["all"]["attention_weight"] > 0
    assert result.stdout.splitlines()[0].split() == ["name", "steps", "on_policy", "ppl", "bits_per_byte",
                                                     "sample_nll", "sample_rkl", "entropy", "top1_agreement",
                                                     "kl_to_teacher", "real_ppl", "real_kl", "wall_s"]
    assert all(row["bits_per_byte"] > 0 and row["teacher_bits_per_byte"] > 0 for row in rows)
    assert all(row["real_ppl"] > 0 and row["real_teacher_ppl"] > 0 for row in rows)  # the fixture's real text
    assert "real text: the teacher's perplexity" in result.stderr


def test_ablate_rows_and_seeds_run_the_rows_named_once_per_seed_with_each_recipes_mean(tiny_config, tmp_path,
                                                                                  capsys):
    import distill_core.__main__ as main_module

    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=1", "eval_every=0", "probe_every=0"]).to_yaml(config_path)
    out = tmp_path / "seeds"
    heldout = str(REPO / "assets" / "texts" / "heldout.txt")
    result = cli("ablate", "--config", str(config_path), "--eval-text", heldout, "--out", str(out),
                 "--rows", "soft_target,ce_only", "--seeds", "0,4")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["ce_only seed=0", "soft_target seed=0", "ce_only seed=4", "soft_target seed=4"]
    assert yaml.safe_load((out / "soft_target_seed=4" / "config.yaml").read_text())["seed"] == 4
    means = json.loads((out / "seed_means.json").read_text())
    assert [(m["name"], m["seeds"]) for m in means] == [("ce_only", 2), ("soft_target", 2)]
    soft = [r["ppl"] for r in rows if r["name"].startswith("soft_target")]
    assert means[1]["ppl"] == pytest.approx(sum(soft) / 2) and means[1]["ppl_min"] == min(soft)
    assert "mean over seeds" in result.stdout and "soft_target" in result.stdout.split("mean over seeds")[1]
    for extra, message in [(["--rows", "nope"], "unknown ablation row nope"),
                           (["--seeds", "0,x"], "non-negative whole numbers"), (["--seeds", "2,2"], "each seed once"),
                           (["--seeds", "0,1", "--students", "layers:1"], "leave it out with --students")]:
        argv = ["ablate", "--config", str(config_path), "--eval-text", heldout, "--out", str(tmp_path / "no"), *extra]
        assert main_module.main(argv) == 2 and message in capsys.readouterr().err  # before any session
    assert not (tmp_path / "no").exists()


def test_ablate_on_policy_rows(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=2", "eval_every=0", "probe_every=0", "rollout_tokens=4",
                                "sample_eval_tokens=4"]).to_yaml(config_path)
    out = tmp_path / "on-policy"
    result = cli("ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(out), "--on-policy")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "ablation.json").read_text())
    assert [(r["name"], r["on_policy_fraction"], r["on_policy_steps"], r["steps"]) for r in rows] == [
        ("soft_target", 0.0, 0, 2), ("on_policy_0.5", 0.5, 1, 2), ("on_policy_1", 1.0, 2, 2)]
    for row in rows:
        assert row["sample_nll"] > row["teacher_sample_nll"] > 0 and row["wall_s"] > 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["soft_target", "on_policy_0.5", "on_policy_1"]
    assert "of the teacher's own:" in result.stderr
    refused = cli("ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                  "--out", str(out), "--on-policy", "--students", "layers:1")
    assert refused.returncode == 2 and "--on-policy is a sweep of its own" in refused.stderr


def test_ablate_students_sweeps_sizes(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.with_overrides(["steps=2", "eval_every=0", "probe_every=0"]).to_yaml(config_path)
    out = tmp_path / "sizes"
    result = cli("ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(out), "--students", "layers:1,layers:0,3", "--speed-tokens", "4")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "students.json").read_text())
    assert [r["spec"] for r in rows] == ["layers:1", "layers:0,3"] and all(r["error"] is None for r in rows)
    assert not (out / "ablation.json").exists()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["spec", "params_M", "ppl_before", "ppl", "bpb_before", "bpb", "top1_agreement",
                                "kl_to_teacher", "real_ppl", "tokens_per_s", "wall_s"]
    assert lines[1].startswith("teacher ") and len(lines) == 4
    for line, row in zip(lines[2:], rows):
        cells = line.split()
        assert cells[0] == row["spec"] and cells[1] == f"{row['params'] / 1e6:.1f}" and cells[3] == f"{row['ppl']:.2f}"
    assert "== layers:0,3 ==" in result.stderr


def test_ablate_students_bad_list(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.to_yaml(config_path)
    result = cli("ablate", "--config", str(config_path), "--eval-text", str(REPO / "assets" / "texts" / "heldout.txt"),
                 "--out", str(tmp_path / "x"), "--students", " ; ")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: the student list is empty")


def test_distill_resume(tiny_config, tmp_path):
    import threading

    from distill_core.session import run_session

    config = tiny_config.with_overrides(["steps=4", "eval_every=0", "probe_every=0"])
    out = tmp_path / "run"
    stop = threading.Event()
    for event in run_session(config, out, stop):
        if event["kind"] == "step" and event["step"] == 2:
            stop.set()
    assert (out / "checkpoint" / "state.json").is_file()

    refused = cli("distill", "--resume", str(out), "--set", "steps=8")
    assert refused.returncode == 2 and "--set steps=... cannot be used with --resume" in refused.stderr
    both = cli("distill", "--resume", str(out), "--out", str(out))
    assert both.returncode == 2 and "leave out --config and --out" in both.stderr
    missing = cli("distill", "--resume", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr

    result = cli("distill", "--resume", str(out), "--set", "log_every=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_from_step"] == 2 and summary["steps_done"] == 4 and not summary["stopped_early"]
    assert "Resuming at step 2 of 4" in result.stderr
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "step"] == [1, 2, 4]  # log_every=2 after the resume
    assert yaml.safe_load((out / "config.yaml").read_text())["log_every"] == 2
    again = cli("distill", "--resume", str(out))
    assert again.returncode == 2 and "already finished" in again.stderr.strip().splitlines()[-1]


def test_distill_help_lists_every_config_field_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as done:
        main(["distill", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    docs = field_help()
    for field in dataclasses.fields(DistillConfig):
        assert f"--{field.name.replace('_', '-')}" in text, field.name
        assert " ".join(docs[field.name].split()[:6]) in text, field.name
    assert "{forward_kl,reverse_kl,jsd,skew_kl}" in text  # a choice field lists its choices


def test_a_bad_field_option_is_refused_in_one_line(tiny_config, tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    tiny_config.to_yaml(config_path)
    assert main(["distill", "--config", str(config_path), "--out", str(tmp_path / "o"), "--kd-weight", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: kd_weight must be between 0 and 1, got 2.0"
    assert not (tmp_path / "o").exists()
