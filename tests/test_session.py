import json
import math
import threading

import pytest
import torch

from distill_core import step as step_module
from distill_core.errors import DistillError
from distill_core.session import run_session


def run_all(config, out, stop=None):
    return list(run_session(config, out, stop))


def test_session_lowers_the_loss_and_saves(tiny_config, tmp_path):
    events = run_all(tiny_config, tmp_path)
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "done"
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 13))
    for e in steps:
        assert {"loss", "kd_loss", "ce_loss", "lr", "tokens_per_s", "eta_s"} <= set(e)
    assert sum(e["kd_loss"] for e in steps[-3:]) < sum(e["kd_loss"] for e in steps[:3])
    summary = events[-1]["summary"]
    assert summary["after"]["kl_to_teacher"] < summary["before"]["kl_to_teacher"]
    assert summary["student_spec"] == "layers:2" and summary["steps_done"] == 12
    # periodic held-out evaluations (0, 4, 8, final) and probe snapshots (0, 6, final)
    assert [e["step"] for e in events if e["kind"] == "eval"] == [0, 4, 8, 12]
    assert [e["step"] for e in events if e["kind"] == "probe"] == [0, 6, 12]
    # outputs on disk
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["after"] == summary["after"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len([l for l in lines if json.loads(l)["kind"] == "step"]) == 12
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert reloaded.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(tmp_path / "student").vocab_size > 0
    assert (tmp_path / "config.yaml").is_file()


def test_every_event_names_its_phase_and_the_summary_times_them(tiny_config, tmp_path):
    events = run_all(tiny_config, tmp_path)
    phases = [e["phase"] for e in events]
    order = list(dict.fromkeys(phases))
    assert order == ["corpus", "teacher", "student", "evaluation", "training", "saving"] or \
        order == ["teacher", "corpus", "student", "evaluation", "training", "saving"], order
    steps = {e["phase"] for e in events if e["kind"] == "step"}
    periodic = {e["phase"] for e in events if e["kind"] in ("eval", "probe") and 0 < e["step"] < 12}
    assert steps == {"training"} and periodic == {"evaluation"}  # evaluation during training is its own time
    phases_s = events[-1]["summary"]["phases_s"]
    assert {"teacher", "corpus", "student", "evaluation", "training"} <= set(phases_s)
    rounding = 0.005 * (len(phases_s) + 1)  # each time and the wall are rounded to 0.01 s
    assert sum(phases_s.values()) <= events[-1]["summary"]["wall_s"] + rounding


def test_same_seed_same_run(tiny_config, tmp_path):
    a = [e["loss"] for e in run_all(tiny_config.with_overrides(["steps=4"]), tmp_path / "a") if e["kind"] == "step"]
    b = [e["loss"] for e in run_all(tiny_config.with_overrides(["steps=4"]), tmp_path / "b") if e["kind"] == "step"]
    assert a == pytest.approx(b, rel=1e-5)


def test_stop_between_steps_saves_the_student(tiny_config, tmp_path):
    stop = threading.Event()
    events = []
    for event in run_session(tiny_config, tmp_path, stop):
        events.append(event)
        if event["kind"] == "step" and event["step"] == 3:
            stop.set()
    assert events[-1]["kind"] == "stopped"
    assert events[-1]["summary"]["steps_done"] == 3 and events[-1]["summary"]["stopped_early"]
    assert (tmp_path / "student" / "config.json").is_file()


@pytest.mark.parametrize("loss_fn, chunk", [("chunked_distillation_loss", 1024), ("distillation_loss", 0)],
                         ids=["chunked", "full-logits"])
def test_nan_loss_stops_and_keeps_last_good_student(tiny_config, tmp_path, monkeypatch, loss_fn, chunk):
    real = getattr(step_module, loss_fn)
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(step_module, loss_fn, sometimes_nan)
    events = run_all(tiny_config.with_overrides({"loss_chunk_tokens": chunk}), tmp_path)
    assert events[-1]["kind"] == "error"
    assert "NaN" in events[-1]["message"] and "step 2" in events[-1]["message"]
    assert events[-1]["summary"]["steps_done"] == 2
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_freeze_layers(tiny_config, tmp_path):
    events = run_all(tiny_config.with_overrides(["steps=2", "freeze_layers=1", "freeze_embeddings=true"]), tmp_path)
    summary = events[-1]["summary"]
    assert summary["student"]["trainable_params"] < summary["student"]["params"] / 2
    with pytest.raises(DistillError, match="would freeze all"):
        run_all(tiny_config.with_overrides(["freeze_layers=2"]), tmp_path / "x")


def test_bad_inputs_fail_before_training(tiny_config, tmp_path):
    with pytest.raises(DistillError, match="pasted text is empty|too small|fewer than one block"):
        run_all(tiny_config.with_overrides({"corpus_text": "hi"}), tmp_path)
    with pytest.raises(DistillError, match="more layers than the teacher"):
        run_all(tiny_config.with_overrides(["student=layers:99"]), tmp_path)
    with pytest.raises(DistillError, match="corpus file not found"):
        run_all(tiny_config.with_overrides({"corpus_text": "", "corpus": str(tmp_path / "none.txt")}), tmp_path)


def test_shared_prefix_is_exact(tiny_config, tmp_path, monkeypatch):
    """Reusing the teacher's hidden states for frozen copied layers gives the same training run."""
    frozen = tiny_config.with_overrides(["steps=3", "freeze_layers=1", "freeze_embeddings=true", "student=layers:0,1,3"])
    events = run_all(frozen, tmp_path / "a")
    assert any("reuses the teacher's hidden states" in e.get("message", "") for e in events)
    with_prefix = [e["loss"] for e in events if e["kind"] == "step"]
    monkeypatch.setattr(step_module.SharedPrefix, "create", classmethod(lambda cls, *args: None))
    without = [e["loss"] for e in run_all(frozen, tmp_path / "b") if e["kind"] == "step"]
    assert with_prefix == pytest.approx(without, rel=1e-4)


def test_out_of_memory_mid_run_keeps_the_student(tiny_config, tmp_path, monkeypatch):
    real = step_module.DistillStep.__call__
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module.DistillStep, "__call__", failing_step)
    events = run_all(tiny_config, tmp_path)
    assert events[-1]["kind"] == "error"
    assert "out of memory: lower batch_size or seq_len" in events[-1]["message"]
    assert events[-1]["summary"]["steps_done"] == 3
    assert (tmp_path / "student" / "model.safetensors").is_file()


@pytest.mark.parametrize("overrides", [["divergence=jsd"], ["top_k=32"], ["divergence=reverse_kl"], ["divergence=skew_kl", "top_k=8"]])
def test_other_divergences_train(tiny_config, tmp_path, overrides):
    events = run_all(tiny_config.with_overrides(["steps=8", "eval_every=0", "probe_every=0", *overrides]), tmp_path)
    steps = [e for e in events if e["kind"] == "step"]
    assert events[-1]["kind"] == "done" and len(steps) == 8
    assert all(math.isfinite(e["kd_loss"]) for e in steps)
    summary = events[-1]["summary"]  # held-out KL(teacher || student), whatever the training divergence
    assert summary["after"]["kl_to_teacher"] < summary["before"]["kl_to_teacher"]


def test_fitnets_session_trains_and_saves_the_projection_apart(tiny_config, tmp_path):
    from safetensors.torch import load_file

    config = tiny_config.with_overrides(["steps=12", "eval_every=0", "probe_every=0", "hidden_weight=1.0",
                                         "hidden_loss=cosine", "student=fresh:layers=2,hidden=32,heads=2",
                                         "layer_map=uniform"])
    events = run_all(config, tmp_path)
    steps = [e for e in events if e["kind"] == "step"]
    assert events[-1]["kind"] == "done"
    assert all("fitnets_loss" in e for e in steps)
    assert sum(e["fitnets_loss"] for e in steps[-3:]) < sum(e["fitnets_loss"] for e in steps[:3])
    assert events[-1]["summary"]["layer_map"] == [[0, 1], [1, 3]]
    weights = load_file(tmp_path / "fitnets_projection.safetensors")
    assert weights["maps.0.weight"].shape == (64, 32)  # student width 32 -> teacher width 64
    student_keys = load_file(tmp_path / "student" / "model.safetensors").keys()
    assert not any("maps." in key for key in student_keys)


def test_attention_transfer_session(tiny_config, tmp_path):
    config = tiny_config.with_overrides(["steps=12", "eval_every=0", "probe_every=0", "attention_weight=1.0",
                                         "student=fresh:layers=2,hidden=32,heads=2", "layer_map=uniform"])
    events = run_all(config, tmp_path)
    steps = [e for e in events if e["kind"] == "step"]
    assert events[-1]["kind"] == "done" and all("attention_loss" in e for e in steps)
    assert sum(e["attention_loss"] for e in steps[-3:]) < sum(e["attention_loss"] for e in steps[:3])


def test_probe_snapshots_track_cka_of_the_mapped_pairs(tiny_config, tmp_path):
    events = run_all(tiny_config.with_overrides({"steps": 3, "probe_every": 1}), tmp_path)
    probes = [e for e in events if e["kind"] == "probe"]
    assert [e["step"] for e in probes] == [0, 1, 2, 3]
    assert probes[0]["layer_pairs"] == [[0, 0], [1, 3]]  # layers:2 keeps teacher layers 0 and 3
    # before training, student layer 0 is teacher layer 0 on the same input: CKA 1
    assert probes[0]["pair_cka"][0] == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= v <= 1.0 + 1e-9 for e in probes for v in e["pair_cka"])
    assert probes[-1]["pair_cka"] != probes[0]["pair_cka"]  # training moved the representations


def test_any_pair_with_the_same_tokenizer_distils_with_every_technique(tiny_config, tiny_teacher_dir, tmp_path):
    """A separately saved student of another width and head count (not derived from the teacher):
    soft targets, attention transfer (head-averaged maps: 2 vs 4 heads) and FitNets (32 -> 64 wide)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    student_dir = tmp_path / "other_student"
    LlamaForCausalLM(config).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    run = tiny_config.with_overrides({"student": str(student_dir), "steps": 6, "attention_weight": 0.5,
                                      "hidden_weight": 0.5, "hidden_loss": "cosine", "layer_map": "uniform"})
    events = run_all(run, tmp_path / "run")
    assert events[-1]["kind"] == "done", events[-1]
    summary = events[-1]["summary"]
    assert summary["layer_map"] == [[0, 1], [1, 3]]  # uniform: student layers spread over the teacher's 4
    steps = [e for e in events if e["kind"] == "step"]
    assert {"kd_loss", "attention_loss", "fitnets_loss"} <= set(steps[0])
    assert summary["after"]["kl_to_teacher"] < summary["before"]["kl_to_teacher"]
    assert (tmp_path / "run" / "fitnets_projection.safetensors").is_file()


def test_a_session_in_time_limited_slices_ends_as_one_run(tiny_config, tmp_path):
    """With a time limit each call trains at least one step, then pauses with a checkpoint; `run_in_slices`
    resumes until done, and the student is the one an uninterrupted session makes, to the bit."""
    from safetensors.torch import load_file

    from distill_core.session import PAUSED, run_in_slices

    config = tiny_config.with_overrides({"steps": 4, "eval_every": 0, "probe_every": 0, "checkpoint_every": 0})
    events = list(run_in_slices(config, tmp_path / "sliced", threading.Event(), time_limit_s=1e-3))
    assert [e["step"] for e in events if e["kind"] == PAUSED] == [1, 2, 3]  # one step per call at this limit
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4]
    assert events[-1]["kind"] == "done" and events[-1]["summary"]["resumed_from_step"] == 3
    assert not (tmp_path / "sliced" / "checkpoint").exists()  # complete: nothing left to resume
    whole = list(run_session(config, tmp_path / "whole"))
    assert whole[-1]["summary"]["final_loss"] == events[-1]["summary"]["final_loss"]
    sliced = load_file(tmp_path / "sliced" / "student" / "model.safetensors")
    plain = load_file(tmp_path / "whole" / "student" / "model.safetensors")
    assert all(sliced[name].equal(plain[name]) for name in plain)
    with pytest.raises(DistillError, match="needs an output folder"):
        list(run_session(config, None, time_limit_s=10))


def test_the_corpus_event_counts_the_held_out_tokens_the_evaluation_scores(tiny_config, tmp_path):
    """The run status and the summary give one number (a block's last token has no next token to score)."""
    events = run_all(tiny_config.with_overrides({"steps": 1, "eval_every": 0, "probe_every": 0}), tmp_path)
    corpus = next(e for e in events if e["kind"] == "corpus")
    assert corpus["eval_tokens"] == events[-1]["summary"]["eval_tokens"] > 0


BPE_STUDENT = "fresh:layers=2,hidden=32,heads=2,vocab=bpe:400"


def test_a_student_with_its_own_vocabulary_distils_across_tokenizers(tiny_config, tmp_path):
    """fresh:...,vocab=bpe:N trains its own BPE on the corpus; auto bridges the two tokenizers by span alignment;
    every evaluation reports bits per byte; the student is saved with its own tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    events = run_all(tiny_config.with_overrides({"student": BPE_STUDENT}), tmp_path)
    assert events[-1]["kind"] == "done", events[-1]
    summary = events[-1]["summary"]
    bridge = summary["tokenizer_bridge"]
    assert bridge["bridge"] == "span" and bridge["student_vocabulary"] == 400 and 0 < bridge["one_to_one_share"] < 1
    assert summary["after"]["bits_per_byte"] < summary["before"]["bits_per_byte"]
    assert summary["teacher"]["bits_per_byte"] > 0 and summary["eval_bytes"] > 0
    assert summary["after"]["kl_to_teacher"] < summary["before"]["kl_to_teacher"]
    evals = [e for e in events if e["kind"] == "eval"]
    assert all(e["held_out_bpb"] > 0 for e in evals) and evals[0]["teacher_bpb"] == summary["teacher"]["bits_per_byte"]
    assert any("Tokenizer bridge span" in e.get("message", "") for e in events)
    probes = [e for e in events if e["kind"] == "probe"]
    assert probes and all(len(p["candidates"]) == len(p["student_probs"]) for p in probes)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert len(tokenizer) == model.config.vocab_size == 400
    assert "bits per byte" in (tmp_path / "student" / "README.md").read_text()


def test_uld_trains_and_refuses_layer_wise_terms(tiny_config, tmp_path):
    events = run_all(tiny_config.with_overrides({"student": BPE_STUDENT, "tokenizer_bridge": "uld", "steps": 4}),
                     tmp_path / "uld")
    assert events[-1]["kind"] == "done" and events[-1]["summary"]["tokenizer_bridge"]["bridge"] == "uld"
    with pytest.raises(DistillError, match="attention transfer is off with tokenizer_bridge=uld"):
        run_all(tiny_config.with_overrides({"student": BPE_STUDENT, "tokenizer_bridge": "uld",
                                            "attention_weight": 1.0}), tmp_path / "refused")
    with pytest.raises(DistillError, match=r"tokenizers differ \(different tokenizers \(49152 tokens and 400\)\)"):
        run_all(tiny_config.with_overrides({"student": BPE_STUDENT, "tokenizer_bridge": "none"}), tmp_path / "none")


def test_the_same_tokens_in_a_wider_output_layer_distil_over_the_shared_ids(tiny_config, tiny_teacher_dir, tmp_path):
    """A student saved with 64 padding rows after the teacher's 49152 (like Qwen2.5-7B's 152064 rows against
    0.5B's 151936): auto picks shared_ids and distils over the ids both have."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    config = LlamaConfig(vocab_size=len(tokenizer) + 64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    student_dir = tmp_path / "padded_student"
    LlamaForCausalLM(config).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    events = run_all(tiny_config.with_overrides({"student": str(student_dir), "steps": 6}), tmp_path / "run")
    assert events[-1]["kind"] == "done", events[-1]
    summary = events[-1]["summary"]
    assert summary["tokenizer_bridge"]["bridge"] == "shared_ids"
    assert "output layers of 49152 (teacher) and 49216 (student) rows" in summary["tokenizer_bridge"]["reason"]
    assert summary["after"]["kl_to_teacher"] < summary["before"]["kl_to_teacher"]
    assert summary["after"]["bits_per_byte"] < summary["before"]["bits_per_byte"]


def test_targets_captured_while_writing_do_not_serve_across_tokenizers(tiny_config, tmp_path, monkeypatch):
    """The teacher's targets captured while it wrote the corpus are over its own ids and blocks: a student with a
    vocabulary of its own gets the teacher's forward pass at every step, and the status says why."""
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["The river", "In the market", "My bicycle", "The old mill", "At night",
                                  "The baker", "Rain fell", "Our garden"]) + "\n", encoding="utf-8")
    config = tiny_config.with_overrides({"student": BPE_STUDENT, "corpus": "teacher-generated", "corpus_text": "",
                                         "prompts_file": str(prompts), "generation_tokens": 28, "steps": 2,
                                         "eval_every": 0, "probe_every": 0, "temperature": 1.0})
    events = run_all(config, tmp_path / "run")
    assert events[-1]["kind"] == "done", events[-1]
    why = [e["message"] for e in events if "cannot serve" in e.get("message", "")]
    assert why and "tokenizer_bridge=span" in why[0], why
    assert events[-1]["summary"]["teacher_targets"] == "teacher forward pass at every step"
    same_vocab = run_all(config.with_overrides({"student": "layers:2"}), tmp_path / "same")
    assert same_vocab[-1]["summary"]["teacher_targets"] == "captured while the teacher wrote the corpus"


def test_the_summary_reports_the_real_text_next_to_the_held_out_text(tiny_config, tmp_path):
    summary = run_all(tiny_config.with_overrides({"steps": 4}), tmp_path / "with")[-1]["summary"]
    real = summary["real_text"]
    assert real["source"].endswith("gettysburg.txt") and real["tokens"] > 100
    assert set(real) == {"source", "tokens", "teacher", "before", "after"}
    assert real["after"]["kl_to_teacher"] != real["before"]["kl_to_teacher"]  # measured again after training
    assert real["after"]["ppl"] != summary["after"]["ppl"] and real["teacher"]["ppl"] != summary["teacher"]["ppl"]
    saved = json.loads((tmp_path / "with" / "summary.json").read_text())
    assert saved["real_text"] == real
    # a real text that cannot be read is a note, not a failed session; none configured: null
    events = run_all(tiny_config.with_overrides({"steps": 1, "real_text": str(tmp_path / "absent.txt")}), tmp_path / "m")
    assert events[-1]["kind"] == "done" and "not found" in events[-1]["summary"]["real_text"]["note"]
    assert any("Real-text evaluation skipped" in e.get("message", "") for e in events if e["kind"] == "status")
    none = run_all(tiny_config.with_overrides({"steps": 1, "real_text": ""}), tmp_path / "n")[-1]["summary"]
    assert none["real_text"] is None
