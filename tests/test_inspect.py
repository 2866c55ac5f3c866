"""The side-by-side probes: CKA's invariances, attention maps, similarity, generation, evaluation, export."""

import zipfile

import numpy as np
import pytest
import torch

from distill_core.checkpoints import derive_student, load_teacher
from distill_core.errors import DistillError
from distill_core.probes import attention_probe, cka_matrix, linear_cka, similarity_probe

TEXT = "For breakfast I ate an apple, then I went to school and the teacher asked about the river."


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 12, generator=g, dtype=torch.float64)
    y = torch.randn(50, 20, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x * 7.5, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    # not invariant to an arbitrary (non-orthogonal) linear map
    a = torch.randn(12, 12, generator=g, dtype=torch.float64) + 3 * torch.eye(12, dtype=torch.float64)
    a[:, 0] *= 50
    assert linear_cka(x @ a, y) != pytest.approx(base, rel=1e-3)


def test_cka_matrix_equals_pairwise_linear_cka():
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(30, 8, generator=g) for _ in range(3)]
    ys = [torch.randn(30, 5, generator=g), xs[1] * 2]
    matrix = cka_matrix(xs, ys)
    assert matrix.shape == (3, 2)
    assert np.allclose(matrix, [[linear_cka(x, y) for y in ys] for x in xs])
    assert matrix[1, 1] == pytest.approx(1.0)
    with pytest.raises(DistillError, match="same examples"):
        linear_cka(xs[0], torch.randn(29, 8))


def test_attention_probe_on_tiny_models(tiny_teacher_dir):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    result = attention_probe(teacher, {"student (before)": student.model}, TEXT)
    t = len(result["tokens"])
    assert result["maps"]["teacher"].shape == (4, 4, t, t)
    assert result["maps"]["student (before)"].shape == (2, 4, t, t)
    maps = result["maps"]["teacher"]
    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5)  # each query row is a distribution
    assert np.all(np.triu(maps[0, 0], k=1) == 0)  # causal: no attention to later tokens
    # the derived student keeps teacher layers 0 and 3 (first and last): identical maps there
    assert np.allclose(result["maps"]["student (before)"][0], maps[0], atol=1e-5)
    entropy = result["entropy"]["teacher"]
    assert entropy.shape == (4, 4) and np.all((entropy >= 0) & (entropy <= 1 + 1e-6))


def test_similarity_probe_on_tiny_models(tiny_teacher_dir):
    from distill_core.losses import FitNetsProjection

    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    pairs = [(0, 0), (1, 3)]
    result = similarity_probe(teacher, {"student": student.model}, TEXT, pairs, FitNetsProjection(2, 64, 64))
    assert result["cka"]["student"].shape == (4, 2)
    # copied layer 0 with the identical input: identical states -> CKA 1, cosine 1 (identity projection)
    assert result["pair_cka"]["student"][0] == pytest.approx(1.0, abs=1e-6)
    assert result["pair_cosine"]["student"][0] == pytest.approx(1.0, abs=1e-5)
    assert result["n_tokens"] == len(teacher.tokenizer(TEXT, add_special_tokens=False)["input_ids"]) - 1
    with pytest.raises(DistillError, match="at least 4 tokens"):
        similarity_probe(teacher, {"student": student.model}, "Hi")


def test_generate_greedy_is_deterministic_and_sampling_follows_the_seed(tiny_teacher_dir):
    from distill_core.evaluate import generate

    teacher = load_teacher(str(tiny_teacher_dir))
    greedy = [generate(teacher.model, teacher.tokenizer, "The river", 8) for _ in range(2)]
    assert greedy[0]["text"] == greedy[1]["text"] and greedy[0]["new_tokens"] == 8
    assert greedy[0]["tokens_per_s"] > 0
    a, b, c = (generate(teacher.model, teacher.tokenizer, "The river", 12, sample=True, seed=s, temperature=1.5)
               for s in (3, 3, 4))
    assert a["text"] == b["text"] and a["text"] != c["text"]
    with pytest.raises(DistillError, match="empty"):
        generate(teacher.model, teacher.tokenizer, "  ", 8)


def test_evaluate_models_and_the_trade_sentence(tiny_teacher_dir):
    from distill_core.data import pack, split_documents
    from distill_core.evaluate import evaluate_models, trade_sentence

    teacher = load_teacher(str(tiny_teacher_dir))
    student = derive_student(teacher, "layers:2")
    blocks = pack(teacher.tokenizer, split_documents(TEXT * 4), 16, max_tokens=64, pad_last=True)
    rows = evaluate_models(teacher.model, {"student": student.model}, teacher.tokenizer, blocks, speed_tokens=4)
    assert set(rows) == {"teacher", "student"}
    assert rows["student"]["params"] < rows["teacher"]["params"]
    assert rows["student"]["size_bytes"] < rows["teacher"]["size_bytes"]
    assert all(r["tokens_per_s"] > 0 for r in rows.values())
    sentence = trade_sentence(rows, "student")
    kept = rows["teacher"]["ppl"] / rows["student"]["ppl"]
    assert f"{kept:.0%}" in sentence and "fewer parameters" in sentence and "speed" in sentence


def test_export_zip_loads_and_names_are_safe(tiny_config, tmp_path):
    from transformers import AutoModelForCausalLM

    from distill_core.export import export_config, export_student, safe_filename
    from distill_core.session import run_session

    run = tmp_path / "run"
    list(run_session(tiny_config.with_overrides({"steps": 2}), run))
    archive = export_student(run, tmp_path / "out", name="../../etc/passwd")
    assert archive.parent == tmp_path / "out" and archive.name == "passwd.zip"
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unzipped")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "unzipped" / "passwd")
    assert model.config.num_hidden_layers == 2
    assert export_config(run).read_text().startswith("teacher:")
    assert safe_filename("a b/../c?.zip") == "c-.zip"
    with pytest.raises(DistillError, match="no saved student"):
        export_student(tmp_path / "nothing", tmp_path)
