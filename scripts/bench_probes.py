"""Time each inspection view's probe on the default pair for a 64-token text (issue 4's budget: 2 s).

    .venv/bin/python scripts/bench_probes.py [--teacher smollm2-135m] [--student layers:20] [--repeats 3]

Loads the pair once, warms up once, then reports the median of several repeats for each probe:
dark knowledge (teacher + before + after students at one position), attention (every layer and
head of the three models), similarity (CKA of every layer pair, two students), generation is
excluded (it is bounded by the number of new tokens, reported as tokens/s instead). The "after"
student is a second copy of the derived student (same shape and cost as a trained one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="smollm2-135m")
    parser.add_argument("--student", default="layers:20")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(ROOT))
    from distill_core.__main__ import _quiet_libraries

    _quiet_libraries()
    import torch

    from distill_core import probes
    from distill_core.evaluate import generate
    from distill_core.models import load_teacher
    from distill_core.students import load_student

    teacher = load_teacher(args.teacher)
    before = load_student(args.student, teacher).model
    after = load_student(args.student, teacher).model
    text_ids = teacher.tokenizer((ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8"),
                                 add_special_tokens=False)["input_ids"][: args.tokens]
    text = teacher.tokenizer.decode(text_ids)
    n_tokens = len(probes.encode(teacher.tokenizer, text)[0])
    students = {"student (before)": before, "student (after)": after}
    pairs = [(0, 0), (before.config.num_hidden_layers - 1, teacher.model.config.num_hidden_layers - 1)]
    views = {
        "dark_knowledge": lambda: probes.dark_knowledge(teacher, students, text, -1, 2.0, 10),
        "attention": lambda: probes.attention_probe(teacher, students, text),
        "similarity": lambda: probes.similarity_probe(teacher, students, text, pairs),
    }
    results = {"device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
               "threads": torch.get_num_threads(), "tokens": n_tokens}
    for name, probe in views.items():
        probe()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            probe()
            times.append(time.perf_counter() - start)
        results[f"{name}_s"] = round(statistics.median(times), 3)
        print(f"{name:<15} median {statistics.median(times):.3f} s over {args.repeats} runs "
              f"(min {min(times):.3f}, max {max(times):.3f}) for {n_tokens} tokens")
    speed = generate(teacher.model, teacher.tokenizer, "For breakfast I ate an", 32)["tokens_per_s"]
    print(f"generation      teacher greedy {speed:.1f} tokens/s")
    results["teacher_generation_tokens_per_s"] = round(speed, 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
