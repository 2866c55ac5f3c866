"""The teacher-generated corpus: written once with progress, cached, rebuilt when damaged."""

from distill_core.models import load_teacher
from distill_core.teacher_corpus import generate_corpus


def test_generate_corpus_reports_progress_and_caches(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path))
    teacher = load_teacher(str(tiny_teacher_dir))
    prompts = ["The river", "In the market", "My bicycle"]
    first = list(generate_corpus(teacher, "tiny-identity", prompts, new_tokens=40, seed=0, batch_size=2, report_every_s=0.01))
    fractions = [f for f, _ in first]
    assert len(first) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(texts is None for _, texts in first[:-1])
    texts = first[-1][1]
    assert len(texts) == 3 and all(text.startswith(p) and len(text) > len(p) for text, p in zip(texts, prompts))
    cached = list(generate_corpus(teacher, "tiny-identity", prompts, new_tokens=40, seed=0, batch_size=2))
    assert cached == [(1.0, texts)]  # from the cache: no generation, no progress steps
    [cache_file] = (tmp_path / "corpora").glob("*.json")
    cache_file.write_text("{not json")
    assert list(generate_corpus(teacher, "tiny-identity", prompts, new_tokens=40, seed=0, batch_size=2))[-1][1] == texts  # rebuilt, same seed
