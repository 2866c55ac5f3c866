"""One check of the GPU path, in one run, with every figure in one JSON file (scripts/gpu_check.sh runs it).

    .venv/bin/python scripts/gpu_check.py [--out gpu_check.json] [--tiny] [--steps N]

On a CUDA GPU (within about 8 minutes on one card):
1. bench on the SmolLM2-360M -> 135M shapes (random weights, 16 x 1024 tokens): the plain reference loop,
   the engine's step and the engine's step with compiled layers;
2. a real session on the bundled pair (smollm2-135m -> layers:20) at GPU settings: the autocast dtype of
   the card (bf16 from compute capability 8.0, fp16 below), batch 32 x 256, 300 steps;
3. the three probes (dark knowledge, attention, hidden-state similarity) on the trained student;
4. the evaluation of teacher, student before and student after, with generation speeds.
Without CUDA (or with --tiny) it runs the same four steps at tiny scale (a 4-layer teacher with the real
tokenizer, a few steps), so that the test suite runs this very script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_core import api  # noqa: E402
from distill_core.hub import bundled_gguf_path  # noqa: E402
from distill_core.models import convert_gguf  # noqa: E402
from distill_core.tiny import build_tiny_teacher  # noqa: E402

PROBE_TEXT = "For breakfast I ate an apple, then I walked to the station and waited for the train."


def scale(tiny: bool, steps: int | None, work: Path) -> dict[str, Any]:
    """The check's settings: GPU scale, or tiny scale on the CPU."""
    if not tiny:
        session = api.preset_config().with_overrides({
            "teacher": "smollm2-135m", "student": "layers:20", "batch_size": 32, "seq_len": 256,
            "steps": steps or 300, "warmup_steps": 20, "eval_every": 100, "probe_every": 100, "precision": "auto",
            "eval_max_tokens": 2048, "checkpoint_every": 0})
        bench = api.preset_config().with_overrides(api.GPU_DEFAULTS)
        return {"session": session, "bench": bench, "shapes": "smollm2-360m>135m", "repeats": 5, "speed_tokens": 32}
    teacher = build_tiny_teacher(convert_gguf(bundled_gguf_path()), work / "tiny-teacher")
    text = (api.ROOT / "assets" / "texts" / "sample_user_corpus.txt").read_text(encoding="utf-8")
    session = api.DistillConfig(teacher=str(teacher), student="layers:2", corpus_text=text, steps=steps or 3,
                                batch_size=4, seq_len=32, learning_rate=3e-3, warmup_steps=1, eval_every=0,
                                probe_every=0, eval_max_tokens=128, freeze_embeddings=False, checkpoint_every=0)
    bench = session.with_overrides({"batch_size": 2, "seq_len": 16})
    return {"session": session, "bench": bench, "shapes": "tiny", "repeats": 1, "speed_tokens": 4}


def timed(figures: dict[str, Any], name: str, work: Any) -> Any:
    """Run `work()`, keep its wall time under figures["wall_s"][name], return its result."""
    start = time.perf_counter()
    result = work()
    figures.setdefault("wall_s", {})[name] = round(time.perf_counter() - start, 2)
    return result


def run_session(config: api.DistillConfig, out: Path) -> dict[str, Any]:
    events = list(api.run_session(config, out))
    final = events[-1]
    if final["kind"] != "done":
        raise RuntimeError(f"the session ended with {final['kind']}: {final.get('message')}")
    steps = [e for e in events if e["kind"] == "step"]
    summary = final["summary"]
    return {"summary": {k: summary[k] for k in ("teacher_spec", "student_spec", "steps_done", "final_loss", "wall_s",
                                                "train_s", "teacher", "student", "before", "after",
                                                "memory_estimate_gb")},
            "median_tokens_per_s": sorted(e["tokens_per_s"] for e in steps)[len(steps) // 2]}


def probe_and_evaluate(config: api.DistillConfig, out: Path, speed_tokens: int, figures: dict[str, Any]) -> None:
    """The three probes and the evaluation on the trained student, as the app's views run them."""
    last_run = {"out_dir": str(out), "teacher": config.teacher, "student": config.student}
    models = api.Comparison(config.teacher, config.student, last_run)
    dark = timed(figures, "dark_knowledge", lambda: api.dark_knowledge(models.teacher, models.students, PROBE_TEXT,
                                                                      position=4, temperature=2.0))
    figures["dark_knowledge"] = {"kl_at_position": dark["kl_at_position"], "mean_kl": dark["mean_kl"],
                                 "actual_rank": dark["actual_rank"]}
    attention = timed(figures, "attention", lambda: api.attention_probe(models.teacher, models.students, PROBE_TEXT))
    figures["attention"] = {name: list(maps.shape) for name, maps in attention["maps"].items()}
    pairs = models.layer_pairs()
    similarity = timed(figures, "similarity", lambda: api.similarity_probe(models.teacher, models.students,
                                                                          PROBE_TEXT, pairs))
    figures["similarity"] = {"pair_cka": similarity["pair_cka"], "tokens": similarity["n_tokens"]}
    blocks = api.heldout_blocks(models.config, models.teacher.tokenizer)
    rows = timed(figures, "evaluate", lambda: api.evaluate_models(models.teacher.model, models.students,
                                                                 models.teacher.tokenizer, blocks,
                                                                 speed_tokens=speed_tokens))
    figures["evaluate"] = rows
    figures["trade"] = api.trade_sentence(rows, api.AFTER)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--tiny", action="store_true", help="tiny scale even on a GPU")
    parser.add_argument("--steps", type=int, default=None, help="session steps (default 300 on a GPU, 3 tiny)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    plan = scale(tiny, args.steps, work)
    figures: dict[str, Any] = {"card": torch.cuda.get_device_name() if cuda else "cpu", "scale": "tiny" if tiny else "gpu",
                               "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None}
    if cuda:
        figures["capability"] = list(torch.cuda.get_device_capability())
    figures["bench"] = timed(figures, "bench", lambda: api.run_bench(plan["bench"], repeats=plan["repeats"],
                                                                     shapes=plan["shapes"]))
    figures["session"] = timed(figures, "session", lambda: run_session(plan["session"], work / "run"))
    probe_and_evaluate(plan["session"], work / "run", plan["speed_tokens"], figures)
    Path(args.out).write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    print(json.dumps({"card": figures["card"], "scale": figures["scale"], "wall_s": figures["wall_s"],
                      "speedup": figures["bench"]["speedup"], "after": figures["session"]["summary"]["after"]}))
    return figures


if __name__ == "__main__":
    main()
