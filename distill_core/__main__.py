"""Command line: python -m distill_core info | distill | evaluate | ablate | bench

Exit codes: 0 success; 2 bad input (a one-line reason on stderr); 1 an unexpected failure;
130 a distillation stopped by Ctrl-C (the student so far is saved).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from distill_core.errors import DistillError, describe_failure


QUICKSTART = Path(__file__).resolve().parent.parent / "assets" / "configs" / "quickstart.yaml"


def _quiet_libraries() -> None:
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def cmd_info(args: argparse.Namespace) -> int:
    from distill_core.checkpoints import compatibility_report, load_student, load_teacher

    from distill_core.config import DistillConfig

    config = DistillConfig(teacher=args.teacher, student=args.student).with_overrides(args.set or [])
    teacher = load_teacher(args.teacher)
    student = load_student(args.student, teacher)
    print(json.dumps(compatibility_report(teacher, student, config), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from distill_core.checkpoints import load_student, load_teacher
    from distill_core.data import pack, read_text_file, split_documents
    from distill_core.evaluate import evaluate_pair

    if args.max_tokens < 2:
        raise DistillError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    text = read_text_file(args.text, "evaluation text")
    teacher = load_teacher(args.teacher)
    student = load_student(args.student, teacher)
    blocks = pack(teacher.tokenizer, split_documents(text), args.seq_len, max_tokens=args.max_tokens, pad_last=True)
    report = evaluate_pair(teacher.model, student.model, teacher.tokenizer, blocks)
    print(json.dumps(report, indent=2))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from distill_core.config import DistillConfig
    from distill_core.distributed import is_main_process
    from distill_core.session import run_session

    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise DistillError("--resume DIR reads DIR/config.yaml and writes to DIR: leave out --config and --out")
        out = Path(args.resume)
        config = _resume_config(out, args.set or [])
    else:
        if args.config is None or args.out is None:
            raise DistillError("distill needs --config FILE and --out DIR (or --resume DIR to continue a stopped run)")
        out = Path(args.out)
        config = DistillConfig.from_yaml(args.config).with_overrides(args.set or [])
    main_process = is_main_process()  # under accelerate launch only rank 0 prints
    stop = threading.Event()
    final = None
    with _ctrl_c_stops(stop, quiet=not main_process):
        for event in run_session(config, out, stop, resume=args.resume is not None):
            if main_process:
                _log_event(event)
            if event["kind"] in ("done", "stopped", "error"):
                final = event
    if not main_process:
        return 2 if final["kind"] == "error" else (130 if final["kind"] == "stopped" else 0)
    print(json.dumps(final["summary"], indent=2))
    if final["kind"] == "error":
        print(f"error: {final['message']}", file=sys.stderr)
        return 2
    return 130 if final["kind"] == "stopped" else 0


def _resume_config(out: Path, overrides: list[str]):
    """The config of the stopped run in OUT, with `--set` overrides limited to the fields a resumed
    run may change (config.RESUME_FIELDS)."""
    from distill_core.config import RESUME_FIELDS, DistillConfig

    if not out.is_dir():
        raise DistillError(f"--resume: no such folder: {out}")
    if not (out / "config.yaml").is_file():
        raise DistillError(f"--resume: {out} is not a session folder ({out / 'config.yaml'} is missing)")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" in item and key not in RESUME_FIELDS:
            raise DistillError(f"--set {key}=... cannot be used with --resume: a resumed run trains exactly as the "
                               f"checkpoint's; only {', '.join(RESUME_FIELDS)} may change")
    return DistillConfig.from_yaml(out / "config.yaml").with_overrides(overrides)


def cmd_ablate(args: argparse.Namespace) -> int:
    from distill_core.config import DistillConfig
    from distill_core.data import read_text_file
    from distill_core.sweep import parse_student_list

    specs = parse_student_list(args.students) if args.students is not None else None  # fail before training
    if specs is not None and args.augmentation is not None:
        raise DistillError("--students and --augmentation are separate sweeps; give one of them")
    if args.small_corpus is not None and args.augmentation is None:
        raise DistillError("--small-corpus goes with --augmentation METHODS")
    read_text_file(args.eval_text, "evaluation text")
    config = DistillConfig.from_yaml(args.config).with_overrides([*(args.set or []), f"eval_text={args.eval_text}"])
    if specs is not None:
        return _student_sweep(config, specs, Path(args.out), args.speed_tokens)
    from distill_core.sweep import SMALL_CORPUS_SENTENCES, ablation, augmentation_rows, small_corpus

    plan = None
    if args.augmentation is not None:
        from distill_core.augment import parse_methods

        methods = parse_methods(args.augmentation)  # fail before any corpus is loaded
        if not methods:
            raise DistillError("--augmentation needs at least one method, e.g. synonym,teacher_substitute")
        for message, sentences in small_corpus(config, args.small_corpus or SMALL_CORPUS_SENTENCES):
            print(f"small corpus: {message}", file=sys.stderr, flush=True)
        plan = augmentation_rows(config, methods, sentences)

    rows, last_name = [], None
    for event in ablation(config, args.out, plan):
        if event["ablation"] != last_name:
            print(f"== {event['ablation']} ==", file=sys.stderr, flush=True)
            last_name = event["ablation"]
        if event["kind"] == "row":
            rows.append(event["row"])
        elif event["kind"] in ("status", "done", "stopped", "error"):
            _log_event(event)
    width = max([12, *(len(row["name"]) for row in rows)])
    print(f"{'name':<{width}} {'ppl':>9} {'top1_agreement':>15} {'kl_to_teacher':>14} {'wall_s':>8}")
    for row in rows:
        print(f"{row['name']:<{width}} {row['ppl']:>9.2f} {row['top1_agreement']:>15.3f} "
              f"{row['kl_to_teacher']:>14.3f} {row['wall_s']:>8.1f}")
    return 0


STUDENT_COLUMNS = [("spec", 34, None), ("params_M", 9, ".1f"), ("ppl_before", 11, ".2f"), ("ppl", 9, ".2f"),
                   ("top1_agreement", 15, ".3f"), ("kl_to_teacher", 14, ".3f"), ("tokens_per_s", 13, ".1f"),
                   ("wall_s", 8, ".1f")]


def _student_table_line(values: dict | None = None) -> str:
    """One line of the size table: the header when `values` is None."""
    cells = []
    for name, width, fmt in STUDENT_COLUMNS:
        if values is None:
            text = name
        else:
            value = values.get(name)
            text = str(value) if fmt is None else ("-" if value is None else format(value, fmt))
        cells.append(f"{text:<{width}}" if fmt is None else f"{text:>{width}}")
    return " ".join(cells)


def _student_sweep(config, specs: list[str], out: Path, speed_tokens: int) -> int:
    from distill_core.sweep import student_sweep

    stop = threading.Event()
    rows, teacher, last_spec = [], None, None
    with _ctrl_c_stops(stop):
        for event in student_sweep(config, specs, out, stop, speed_tokens=speed_tokens):
            kind, spec = event["kind"], event.get("student")
            if spec is not None and spec != last_spec:
                print(f"== {spec} ==", file=sys.stderr, flush=True)
                last_spec = spec
            if kind == "row":
                rows.append(event["row"])
                if event["row"]["error"]:
                    print(f"{spec}: error: {event['row']['error']}", file=sys.stderr, flush=True)
            elif kind == "teacher":
                teacher = event
                _log_event({**event, "kind": "status"})
            elif kind in ("status", "done", "stopped", "error"):
                _log_event(event)
    print(_student_table_line())
    if teacher is not None:
        print(_student_table_line({"spec": f"teacher {config.teacher}", "params_M": teacher["teacher_params"] / 1e6,
                                   "ppl": teacher["teacher_ppl"], "tokens_per_s": teacher["teacher_tokens_per_s"]}))
    for row in rows:
        if row["error"] and row["params"] is None:
            print(f"{row['spec']:<34} error: {row['error']}")
            continue
        print(_student_table_line({**row, "params_M": row["params"] / 1e6}) + (f"  ({row['error']})" if row["error"] else ""))
    if stop.is_set():
        return 130
    if rows and all(row["params"] is None for row in rows):
        print("error: no student of the sweep could be built (see the table)", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def _ctrl_c_stops(stop: threading.Event, quiet: bool = False):
    """While inside: the first Ctrl-C sets `stop` (the session stops after its step and saves), a
    second one aborts."""
    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        if not quiet:
            print("\nstopping after this step (Ctrl-C again to abort without saving) …", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from distill_core.bench import GPU_DEFAULTS, run_bench
    from distill_core.config import DistillConfig

    if args.repeats < 1:
        raise DistillError(f"--repeats must be at least 1, got {args.repeats}")
    config = DistillConfig.from_yaml(args.config or QUICKSTART)
    shapes = args.shapes
    on_gpu = config.device != "cpu" and torch.cuda.is_available()
    if on_gpu and args.config is None:  # the GPU comparison: 360M -> 135M shapes, 16 x 1024 tokens
        shapes = shapes or "smollm2-360m>135m"
        config = config.with_overrides(GPU_DEFAULTS)
    config = config.with_overrides(args.set or [])
    result = run_bench(config, repeats=args.repeats, shapes=shapes)
    print(f"device {result['device']}; {result['teacher']} ({result['teacher_params'] / 1e6:.1f} M) -> "
          f"{result['student']} ({result['student_params'] / 1e6:.1f} M); batch {config.batch_size} x {config.seq_len}; "
          f"engine settings {result['engine_settings']}; median of {args.repeats} steps after a warm-up")
    print(f"{'loop':<16} {'step_s':>8} {'tokens/s':>10} {'peak_mb':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for name, row in result["rows"].items():
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(f"{name:<16} {row['step_s']:>8.3f} {row['tokens_per_s']:>10.1f} {row['peak_mb']:>9.1f} "
              f"{row['tflops']:>8.2f} {mfu:>6}")
    print(f"speedup {result['speedup']:.2f}x, memory ratio {result['memory_ratio']:.2f}")
    keys = ("device", "engine_tokens_per_s", "reference_tokens_per_s", "speedup", "engine_peak_mb",
            "reference_peak_mb", "memory_ratio")
    print(json.dumps({key: result[key] for key in keys}))
    return 0


def _log_event(event: dict) -> None:
    kind, t = event["kind"], f"[{event['elapsed_s']:7.1f}s]"
    if kind == "status":
        line = event["message"]
    elif kind == "corpus":
        line = (f"corpus: {event['source']}; {event['train_tokens']} training tokens, {event['val_tokens']} "
                f"held out, {event['eval_tokens']} evaluation tokens, {event['epochs']} epochs")
        if event.get("augmented"):
            made = ", ".join(f"{m} {n}" for m, n in event["augmented"]["methods"].items())
            line += f"; augmented texts: {made} ({event['augmented']['tokens']} of the training tokens)"
    elif kind == "step":
        terms = " ".join(f"{k.removesuffix('_loss')} {v:.3f}" for k, v in event.items() if k.endswith("_loss"))
        line = (f"step {event['step']:>4}/{event['steps']}  loss {event['loss']:.3f} ({terms})  "
                f"lr {event['lr']:.2e}  {event['tokens_per_s']:.0f} tok/s  eta {event['eta_s']:.0f}s")
    elif kind == "eval":
        line = f"eval @ step {event['step']}: held-out ppl {event['held_out_ppl']:.1f}, corpus validation ppl {event['val_ppl']:.1f}"
        if "kl_to_teacher" in event:
            line += f", top-1 agreement {event['top1_agreement']:.3f}, KL to teacher {event['kl_to_teacher']:.3f}"
    elif kind == "probe":
        pairs = ", ".join(f"{c!r} {t:.2f}/{s:.2f}" for c, t, s in
                          list(zip(event["candidates"], event["teacher_probs"], event["student_probs"]))[:4])
        line = f"probe {event['text']!r} (teacher/student at T={event['temperature']:g}): {pairs}"
    else:
        line = f"{kind}: {event.get('message', '')}" + (f" -> {event['out_dir']}" if event.get("out_dir") else "")
    print(f"{t} {line}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from distill_core.config import RESUME_FIELDS

    parser = argparse.ArgumentParser(prog="python -m distill_core", description="Distill Studio engine")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a JSON compatibility report for a teacher/student pair")
    info.add_argument("--teacher", required=True, help="teacher spec, e.g. smollm2-135m")
    info.add_argument("--student", required=True, help="student spec, e.g. layers:20")
    info.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="session settings the memory estimate uses, e.g. batch_size=16 seq_len=1024")
    info.set_defaults(func=cmd_info)

    distill = sub.add_parser(
        "distill", help="run a distillation session",
        description="Run a session: --config FILE --out DIR; or continue a stopped one from its checkpoint: "
        "--resume DIR. Runs unchanged under `accelerate launch --multi_gpu --num_processes N -m distill_core "
        "distill ...` (data-parallel; gloo on CPUs).")
    distill.add_argument("--config", help="YAML config, e.g. assets/configs/quickstart.yaml")
    distill.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable); "
                         "with --resume only " + ", ".join(RESUME_FIELDS))
    distill.add_argument("--out", help="output directory (student/, config.yaml, metrics.jsonl, summary.json, "
                         "checkpoint/ while a run is unfinished)")
    distill.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR (its config.yaml and "
                         "checkpoint/) at its saved step, appending to its metrics.jsonl")
    distill.set_defaults(func=cmd_distill)

    ablate = sub.add_parser(
        "ablate", help="same seed, data and steps: ce_only, soft_target, attention, fitnets, all; or, with "
        "--students, the config's recipe on several student sizes",
        description="Without --students: one session per technique row (ce_only, soft_target, attention, fitnets, "
        "all), DIR/ablation.json. With --augmentation METHODS: soft_target and soft_target+augment on a small "
        "corpus (--small-corpus N sentences), DIR/ablation.json. With --students: one session per student spec "
        "with the config's recipe, DIR/students.json and a size-against-quality table (the teacher's line first).")
    ablate.add_argument("--config", required=True)
    ablate.add_argument("--eval-text", required=True, help="held-out UTF-8 text every row is evaluated on")
    ablate.add_argument("--out", required=True, help="DIR: one run folder per row and DIR/ablation.json "
                        "(DIR/students.json with --students)")
    ablate.add_argument("--students", metavar="SPECS",
                        help="student specs to sweep, e.g. layers:10,layers:15,layers:20. A comma starts a new "
                        "spec unless it continues the one before (layers:0,5,9 or fresh:layers=2,hidden=64,heads=4 "
                        "stay whole); a list with ';' is split at ';' only (for specs with commas of their own: "
                        "'layers:0,5,9;runs/x/student')")
    ablate.add_argument("--augmentation", metavar="METHODS",
                        help="instead of the technique rows: soft_target and soft_target+augment (these methods, "
                        "comma-separated, at the config's augment_strength and augment_copies) on a deliberately "
                        "small corpus, same seed and steps; e.g. synonym,teacher_substitute")
    ablate.add_argument("--small-corpus", type=int, metavar="N", help="sentences in the small corpus of "
                        "--augmentation, drawn from the config's corpus (default 300)")
    ablate.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    ablate.add_argument("--speed-tokens", type=int, default=32, help=argparse.SUPPRESS)
    ablate.set_defaults(func=cmd_ablate)

    bench = sub.add_parser("bench", help="time the engine's step against a plain reference loop, same shapes and data")
    bench.add_argument("--config", default=None,
                       help="the pair, shapes and engine settings (default: the quickstart session; on a GPU, the "
                            "SmolLM2-360M -> 135M shapes at batch 16 x 1024)")
    bench.add_argument("--shapes", default=None, help="random-weight models of these shapes instead of the config's "
                       "pair: smollm2-360m>135m or tiny")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    bench.add_argument("--repeats", type=int, default=5, help="timed steps per loop after one warm-up (default 5)")
    bench.set_defaults(func=cmd_bench)

    evaluate = sub.add_parser("evaluate", help="held-out perplexity, agreement, KL and speed of a student against its teacher")
    evaluate.add_argument("--teacher", required=True)
    evaluate.add_argument("--student", required=True, help="a saved student directory or a derived spec like layers:6")
    evaluate.add_argument("--text", required=True, help="UTF-8 text file to evaluate on")
    evaluate.add_argument("--max-tokens", type=int, default=1024, help="score at most this many tokens (default 1024)")
    evaluate.add_argument("--seq-len", type=int, default=256, help=argparse.SUPPRESS)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback, for anything unforeseen (out of memory: what to do)
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
