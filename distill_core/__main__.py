"""Command line: python -m distill_core prepare | info | distill | evaluate | ablate | bench

Every config field is an option of `distill`, `ablate` and `bench` (`--steps 30`, `--divergence jsd`), with
the docstring its field has in config.py as help: `python -m distill_core distill --help` lists them all.
`--set key=value` does the same for any field.

Exit codes: 0 success; 2 bad input (a one-line reason on stderr); 1 an unexpected failure;
130 a distillation stopped by Ctrl-C (the student so far is saved).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from distill_core import api
from distill_core.api import DistillConfig, DistillError

QUICKSTART = api.CONFIGS / "quickstart.yaml"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------
# the config schema as options
# ---------------------------------------------------------------------------------------
def add_config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per DistillConfig field (`--batch-size` or `--batch_size`), its docstring as help; the
    fields in `skip` are options of the command already."""
    group = parser.add_argument_group(
        "config fields", "each overrides the --config file's value (as --set KEY=VALUE does); bools take true/false")
    docs = api.field_help()
    for item in dataclasses.fields(DistillConfig):
        if item.name in skip:
            continue
        default = item.default
        choices = api.CHOICES.get(item.name)
        kind = getattr(type(default), "__name__", "value")
        help_text = f"{docs.get(item.name, '')} ({kind}, default {default!r})".replace("%", "%%")
        group.add_argument(f"--{item.name.replace('_', '-')}", *([f"--{item.name}"] if "_" in item.name else []),
                           dest=f"field_{item.name}", default=argparse.SUPPRESS, choices=choices,
                           metavar=item.name.upper() if choices is None else None, help=help_text)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as options: field name -> the option's text (DistillConfig coerces it)."""
    return {name.removeprefix("field_"): value for name, value in vars(args).items() if name.startswith("field_")}


def config_from(args: argparse.Namespace, path: str | Path, *extra: str) -> DistillConfig:
    """The YAML config at `path` with --set and the field options applied (field options win)."""
    config = DistillConfig.from_yaml(path).with_overrides([*(args.set or []), *extra])
    fields = config_overrides(args)
    return config.with_overrides(fields) if fields else config


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    """Setup's last step (`make run`, `make test`): the bundled teacher converted from GGUF once, so that the
    app's first session and page load do no conversion."""
    started = time.perf_counter()
    resolved = api.resolve_model(args.teacher)
    print(f"{args.teacher}: {resolved.source} ({time.perf_counter() - started:.1f} s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    config = DistillConfig(teacher=args.teacher, student=args.student).with_overrides(args.set or [])
    print(json.dumps(api.check_pair(args.teacher, args.student, config), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.max_tokens < 2:
        raise DistillError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    api.read_text_file(args.text, "evaluation text")  # a bad file fails before any model loads
    config = DistillConfig(teacher=args.teacher, eval_text=args.text, eval_max_tokens=args.max_tokens,
                           seq_len=args.seq_len, tokenizer_bridge=args.tokenizer_bridge, real_text=args.real_text)
    teacher = api.load_teacher(args.teacher)
    student = api.load_student(args.student, teacher, tokenizer_bridge=args.tokenizer_bridge)
    report = api.evaluate_student(teacher, student, config)
    same_tokens = report["tokenizer_bridge"] not in api.CROSS_BRIDGES
    report["real_text"] = (api.real_text_report(teacher.model, student.model, teacher.tokenizer, config)
                           if same_tokens or not config.real_text.strip()
                           else {"source": api.describe_real_text(config.real_text),
                                 "note": "not measured: the student reads another vocabulary"})
    if args.sample_tokens and report["tokenizer_bridge"] == "none":  # the teacher grades the student's own text
        prompts = api.heldout_prompts(config.with_overrides({"sample_eval_prompts": args.prompts}), teacher.tokenizer)
        own = api.own_text_report(teacher.model, student.model, teacher.tokenizer, prompts, args.sample_tokens,
                                  seed=args.seed)
        report["teacher"].update(own["teacher"])
        report["student"].update(own["student"])
        report["sample_tokens"] = own["sample_tokens"]
    print(json.dumps(report, indent=2))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise DistillError("--resume DIR reads DIR/config.yaml and writes to DIR: leave out --config and --out")
        out = Path(args.resume)
        config = _resume_config(out, args)
    else:
        if args.config is None or args.out is None:
            raise DistillError("distill needs --config FILE and --out DIR (or --resume DIR to continue a stopped run)")
        out = Path(args.out)
        config = config_from(args, args.config)
    main_process = api.is_main_process()  # under accelerate launch only rank 0 prints
    stop = threading.Event()
    final = None
    with _ctrl_c_stops(stop, quiet=not main_process):
        for event in api.run_session(config, out, stop, resume=args.resume is not None):
            if main_process:
                _log_event(event)
            if event["kind"] in api.FINAL_KINDS:
                final = event
    code = 2 if final["kind"] == "error" else (130 if final["kind"] == "stopped" else 0)
    if main_process:
        print(json.dumps(final["summary"], indent=2))
        if final["kind"] == "error":
            print(f"error: {final['message']}", file=sys.stderr)
    return code


def _resume_config(out: Path, args: argparse.Namespace) -> DistillConfig:
    """The config of the stopped run in OUT, with overrides limited to the fields a resumed run may change
    (config.RESUME_FIELDS)."""
    if not out.is_dir():
        raise DistillError(f"--resume: no such folder: {out}")
    if not (out / "config.yaml").is_file():
        raise DistillError(f"--resume: {out} is not a session folder ({out / 'config.yaml'} is missing)")
    names = [item.split("=", 1)[0].strip() for item in args.set or [] if "=" in item] + list(config_overrides(args))
    for name in names:
        if name not in api.RESUME_FIELDS:
            raise DistillError(f"--set {name}=... cannot be used with --resume: a resumed run trains exactly as the "
                               f"checkpoint's; only {', '.join(api.RESUME_FIELDS)} may change")
    return config_from(args, out / "config.yaml")


def cmd_ablate(args: argparse.Namespace) -> int:
    specs = api.parse_student_list(args.students) if args.students is not None else None  # fail before training
    if specs is not None and args.augmentation is not None:
        raise DistillError("--students and --augmentation are separate sweeps; give one of them")
    if args.small_corpus is not None and args.augmentation is None:
        raise DistillError("--small-corpus goes with --augmentation METHODS")
    if args.on_policy and (specs is not None or args.augmentation is not None or args.rows is not None):
        raise DistillError("--on-policy is a sweep of its own; leave out --students, --augmentation and --rows")
    seeds = _seed_list(args.seeds) if args.seeds is not None else None
    if seeds is not None and specs is not None:
        raise DistillError("--seeds repeats the technique, augmentation or on-policy rows; "
                           "leave it out with --students")
    api.read_text_file(args.eval_text, "evaluation text")
    config = config_from(args, args.config, f"eval_text={args.eval_text}")
    if specs is not None:
        return _student_sweep(config, specs, Path(args.out), args.speed_tokens)
    if args.rows is not None and args.augmentation is not None:
        raise DistillError("--rows chooses rows of the technique ablation; leave it out with --augmentation")
    plan = api.ablation_rows(config, [n.strip() for n in args.rows.split(",") if n.strip()]) if args.rows else None
    if args.augmentation is not None:
        methods = api.parse_methods(args.augmentation)  # fail before any corpus is loaded
        if not methods:
            raise DistillError("--augmentation needs at least one method, e.g. synonym,teacher_substitute")
        for message, sentences in api.small_corpus(config, args.small_corpus or api.SMALL_CORPUS_SENTENCES):
            print(f"small corpus: {message}", file=sys.stderr, flush=True)
        plan = api.augmentation_rows(config, methods, sentences)
    if args.on_policy:
        plan = api.on_policy_rows(config)
    if seeds is not None:
        plan = api.seeded_rows(plan if plan is not None else api.ablation_rows(config), seeds)
    rows, last_name = [], None
    for event in api.ablation(config, args.out, plan):
        if event["ablation"] != last_name:
            print(f"== {event['ablation']} ==", file=sys.stderr, flush=True)
            last_name = event["ablation"]
        if event["kind"] == "row":
            rows.append(event["row"])
        elif event["kind"] in ("status", *api.FINAL_KINDS):
            _log_event(event)
    _print_ablation_table(rows)
    if seeds is not None:
        means = api.seed_means(rows)
        api.write_json_atomic(Path(args.out) / "seed_means.json", means)  # as ablation.json is written
        _print_seed_means(means)
    return 0


def _seed_list(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]; a DistillError naming what is wrong otherwise."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise DistillError(f"--seeds takes non-negative whole numbers separated by commas, e.g. 0,1,2; got {text!r}")
    return [int(part) for part in parts]


def _print_seed_means(means: list[dict]) -> None:
    """Each recipe's mean over its seeds, with the lowest and highest in brackets."""
    width = max([12, *(len(m["name"]) for m in means)])
    print(f"\nmean over seeds (lowest-highest)\n{'name':<{width}} {'seeds':>5} {'ppl':>22} {'real_ppl':>22} "
          f"{'kl_to_teacher':>20} {'real_kl':>20}")
    for m in means:
        cells = [_spread(m, key, ".2f") for key in ("ppl", "real_ppl")]
        cells += [_spread(m, key, ".3f") for key in ("kl_to_teacher", "real_kl_to_teacher")]
        print(f"{m['name']:<{width}} {m['seeds']:>5} {cells[0]:>22} {cells[1]:>22} {cells[2]:>20} {cells[3]:>20}")


def _spread(mean: dict, key: str, fmt: str) -> str:
    if mean.get(key) is None:
        return "-"
    return f"{format(mean[key], fmt)} ({format(mean[key + '_min'], fmt)}-{format(mean[key + '_max'], fmt)})"


def _print_ablation_table(rows: list[dict]) -> None:
    """The ablation's rows: held-out perplexity and bits per byte, the teacher's NLL per token of the student's own
    continuations of held-out prompts (sample_nll; the teacher's own samples' under the table), agreement, KL, the
    real text's perplexity and KL, wall time."""
    width = max([12, *(len(row["name"]) for row in rows)])
    print(f"{'name':<{width}} {'steps':>6} {'on_policy':>10} {'ppl':>9} {'bits_per_byte':>13} {'sample_nll':>11} "
          f"{'sample_rkl':>11} {'entropy':>8} {'top1_agreement':>15} {'kl_to_teacher':>14} {'real_ppl':>9} "
          f"{'real_kl':>8} {'wall_s':>8}")
    for row in rows:
        print(f"{row['name']:<{width}} {row['steps']:>6} {row['on_policy_steps']:>10} {row['ppl']:>9.2f} "
              f"{_cell(row.get('bits_per_byte'), 13, '.4f')} {_cell(row.get('sample_nll'), 11, '.3f')} "
              f"{_cell(row.get('sample_reverse_kl'), 11, '.3f')} {_cell(row.get('sample_entropy'), 8, '.3f')} "
              f"{row['top1_agreement']:>15.3f} {row['kl_to_teacher']:>14.3f} {_cell(row.get('real_ppl'), 9, '.2f')} "
              f"{_cell(row.get('real_kl_to_teacher'), 8, '.3f')} {row['wall_s']:>8.1f}")
    floor = next((row["teacher_sample_nll"] for row in rows if row.get("teacher_sample_nll") is not None), None)
    if floor is not None:
        print(f"(sample_nll: the teacher's NLL per token of the student's continuations of held-out prompts; of the "
              f"teacher's own: {floor:.3f}. sample_rkl: reverse KL(student || teacher) there; entropy: the "
              "student's there)", file=sys.stderr)
    if rows and rows[0].get("real_teacher_ppl") is not None:
        print(f"real text: the teacher's perplexity {rows[0]['real_teacher_ppl']:.2f} (held-out: "
              f"{rows[0]['teacher_ppl']:.2f})", file=sys.stderr)


STUDENT_COLUMNS = [("spec", 34, None), ("params_M", 9, ".1f"), ("ppl_before", 11, ".2f"), ("ppl", 9, ".2f"),
                   ("bpb_before", 11, ".4f"), ("bpb", 7, ".4f"), ("top1_agreement", 15, ".3f"),
                   ("kl_to_teacher", 14, ".3f"), ("real_ppl", 9, ".2f"), ("tokens_per_s", 13, ".1f"),
                   ("wall_s", 8, ".1f")]


def _cell(value: float | None, width: int, fmt: str) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


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


def _student_sweep(config: DistillConfig, specs: list[str], out: Path, speed_tokens: int) -> int:
    stop = threading.Event()
    rows, teacher, last_spec = [], None, None
    with _ctrl_c_stops(stop):
        for event in api.student_sweep(config, specs, out, stop, speed_tokens=speed_tokens):
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
            elif kind in ("status", *api.FINAL_KINDS):
                _log_event(event)
    _print_size_table(config, teacher, rows)
    if stop.is_set():
        return 130
    if rows and all(row["params"] is None for row in rows):
        print("error: no student of the sweep could be built (see the table)", file=sys.stderr)
        return 2
    return 0


def _print_size_table(config: DistillConfig, teacher: dict | None, rows: list[dict]) -> None:
    print(_student_table_line())
    if teacher is not None:
        print(_student_table_line({"spec": f"teacher {config.teacher}", "params_M": teacher["teacher_params"] / 1e6,
                                   "ppl": teacher["teacher_ppl"], "bpb": teacher.get("teacher_bits_per_byte"),
                                   "tokens_per_s": teacher["teacher_tokens_per_s"],
                                   "real_ppl": next((row["real_teacher_ppl"] for row in rows if row.get("real_teacher_ppl")),
                                                    None)}))
    for row in rows:
        if row["error"] and row["params"] is None:
            print(f"{row['spec']:<34} error: {row['error']}")
            continue
        print(_student_table_line({**row, "params_M": row["params"] / 1e6}) + (f"  ({row['error']})" if row["error"] else ""))


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
    if args.repeats < 1:
        raise DistillError(f"--repeats must be at least 1, got {args.repeats}")
    config = DistillConfig.from_yaml(args.config or QUICKSTART)
    shapes = args.shapes
    on_gpu = config.device != "cpu" and torch.cuda.is_available()
    if on_gpu and args.config is None:  # the GPU comparison: 360M -> 135M shapes, 16 x 1024 tokens
        shapes = shapes or "smollm2-360m>135m"
        config = config.with_overrides(api.GPU_DEFAULTS)
    config = config.with_overrides(args.set or [])
    config = config.with_overrides(config_overrides(args)) if config_overrides(args) else config
    result = api.run_bench(config, repeats=args.repeats, shapes=shapes, compile_variant=args.compile_variant)
    print(f"device {result['device']}; {result['teacher']} ({result['teacher_params'] / 1e6:.1f} M) -> "
          f"{result['student']} ({result['student_params'] / 1e6:.1f} M); batch {config.batch_size} x {config.seq_len}; "
          f"engine settings {result['engine_settings']}; median of {args.repeats} steps after a warm-up")
    print(f"{'loop':<16} {'step_s':>8} {'tokens/s':>10} {'peak_mb':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for name, row in result["rows"].items():
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(f"{name:<16} {row['step_s']:>8.3f} {row['tokens_per_s']:>10.1f} {row['peak_mb']:>9.1f} "
              f"{row['tflops']:>8.2f} {mfu:>6}")
    if result["batch_note"]:
        print(f"note: {result['batch_note']}")
    print(f"speedup {result['speedup']:.2f}x, memory ratio {result['memory_ratio']:.2f}")
    if result["compile"]:
        c = result["compile"]
        print(f"compile: {c['compile_s']:.1f} s to compile, {c['saving_per_step_s']:.3f} s saved per step: pays after "
              f"{c['break_even_steps'] or 'never'} steps ({'within' if c['pays_within_session'] else 'not within'} "
              f"this session's {c['session_steps']})")
    keys = ("device", "engine_tokens_per_s", "reference_tokens_per_s", "speedup", "engine_peak_mb",
            "reference_peak_mb", "memory_ratio") + (("compile",) if result["compile"] else ())
    print(json.dumps({key: result[key] for key in keys}))
    if args.end_to_end:
        print("end to end: the session cold (empty cache), then warm, each from the command to summary.json ...",
              file=sys.stderr, flush=True)
        overrides = [*(args.set or []), *(f"{key}={value}" for key, value in config_overrides(args).items())]
        print(json.dumps({"end_to_end": api.end_to_end(args.config or QUICKSTART, overrides)}))
    return 0


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------
def event_line(event: dict) -> str:
    """A session event as one log line."""
    kind = event["kind"]
    if kind == "status":
        return event["message"]
    if kind == "corpus":
        line = (f"corpus: {event['source']}; {event['train_tokens']} training tokens, {event['val_tokens']} "
                f"held out, {event['eval_tokens']} evaluation tokens, {event['epochs']} epochs")
        if event.get("augmented"):
            made = ", ".join(f"{m} {n}" for m, n in event["augmented"]["methods"].items())
            line += f"; augmented texts: {made} ({event['augmented']['tokens']} of the training tokens)"
        return line
    if kind == "step":
        terms = " ".join(f"{k.removesuffix('_loss')} {v:.3f}" for k, v in event.items() if k.endswith("_loss"))
        return (f"step {event['step']:>4}/{event['steps']}  loss {event['loss']:.3f} ({terms})  "
                f"lr {event['lr']:.2e}  {event['tokens_per_s']:.0f} tok/s  eta {event['eta_s']:.0f}s")
    if kind == "eval":
        line = (f"eval @ step {event['step']}: held-out ppl {event['held_out_ppl']:.1f}"
                + (f", {event['held_out_bpb']:.3f} bits/byte" if event.get("held_out_bpb") is not None else "")
                + f", corpus validation ppl {event['val_ppl']:.1f}")
        if "kl_to_teacher" in event:
            line += f", top-1 agreement {event['top1_agreement']:.3f}, KL to teacher {event['kl_to_teacher']:.3f}"
            if event.get("teacher_bpb") is not None:
                line += f" (teacher {event['teacher_ppl']:.1f} ppl, {event['teacher_bpb']:.3f} bits/byte)"
        return line
    if kind == "rollout":
        text = "".join(event["tokens"]).replace("\n", " ")
        return (f"rollout @ step {event['step']} (the teacher's NLL {event['mean_nll']:.2f} nats/token): "
                f"{event['prompt']!r} + {text[:80]!r}")
    if kind == "probe":
        pairs = ", ".join(f"{c!r} {t:.2f}/{s:.2f}" for c, t, s in
                          list(zip(event["candidates"], event["teacher_probs"], event["student_probs"]))[:4])
        return f"probe {event['text']!r} (teacher/student at T={event['temperature']:g}): {pairs}"
    return f"{kind}: {event.get('message', '')}" + (f" -> {event['out_dir']}" if event.get("out_dir") else "")


def _log_event(event: dict) -> None:
    print(f"[{event['elapsed_s']:7.1f}s] {event_line(event)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------
def _add_prepare(sub: Any) -> None:
    prepare = sub.add_parser("prepare", help="convert the bundled teacher once (setup does this before the app starts)")
    prepare.add_argument("--teacher", default="smollm2-135m", help="the model to convert or check (default: the bundled one)")
    prepare.set_defaults(func=cmd_prepare)


def _add_info(sub: Any) -> None:
    info = sub.add_parser("info", help="print a JSON compatibility report for a teacher/student pair")
    info.add_argument("--teacher", required=True, help="teacher spec, e.g. smollm2-135m")
    info.add_argument("--student", required=True, help="student spec, e.g. layers:20")
    info.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="session settings the memory estimate uses, e.g. batch_size=16 seq_len=1024")
    info.set_defaults(func=cmd_info)


def _add_distill(sub: Any) -> None:
    distill = sub.add_parser(
        "distill", help="run a distillation session", usage="%(prog)s (--config FILE --out DIR | --resume DIR) "
        "[--set KEY=VALUE ...] [--FIELD VALUE ...]",
        description="Run a session: --config FILE --out DIR; or continue a stopped one from its checkpoint: "
        "--resume DIR. Runs unchanged under `accelerate launch --multi_gpu --num_processes N -m distill_core "
        "distill ...` (data-parallel; gloo on CPUs).")
    distill.add_argument("--config", help="YAML config, e.g. assets/configs/quickstart.yaml")
    distill.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable); "
                         "with --resume only " + ", ".join(api.RESUME_FIELDS))
    distill.add_argument("--out", help="output directory (student/, config.yaml, metrics.jsonl, summary.json, "
                         "checkpoint/ while a run is unfinished)")
    distill.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR (its config.yaml and "
                         "checkpoint/) at its saved step, appending to its metrics.jsonl")
    add_config_options(distill)
    distill.set_defaults(func=cmd_distill)


def _add_ablate(sub: Any) -> None:
    ablate = sub.add_parser(
        "ablate", usage="%(prog)s --config FILE --eval-text FILE --out DIR [--students SPECS | --augmentation "
        "METHODS [--small-corpus N] | --on-policy] [--seeds LIST] [--set KEY=VALUE ...] [--FIELD VALUE ...]",
        help="same seed, data and steps: ce_only, soft_target, attention, fitnets, all; or soft targets against "
        "on-policy distillation (--on-policy); or, with --students, the config's recipe on several student sizes",
        description="Without --students: one session per technique row (ce_only, soft_target, attention, fitnets, "
        "all), DIR/ablation.json. With --augmentation METHODS: soft_target and soft_target+augment on a small "
        "corpus (--small-corpus N sentences), DIR/ablation.json. With --on-policy: soft_target, on_policy_0.5 and "
        "on_policy_1 (GKD's share λ of the steps on the student's own continuations, the teacher scoring every token), "
        "each with the teacher's NLL per token of the student's samples of held-out prompts, DIR/ablation.json. With --students: one session per student spec "
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
    ablate.add_argument("--on-policy", action="store_true",
                        help="instead of the technique rows: soft_target, then on_policy_0.5 and on_policy_1 (the same "
                        "recipe with that share of the steps on the student's own continuations), same seed and steps")
    ablate.add_argument("--small-corpus", type=int, metavar="N", help="sentences in the small corpus of "
                        "--augmentation, drawn from the config's corpus (default 300)")
    ablate.add_argument("--rows", metavar="NAMES", help="only these rows of the technique ablation, comma-separated "
                                                        "(ce_only,soft_target,attention,fitnets,all)")
    ablate.add_argument("--seeds", metavar="LIST", help="run every row once per seed, e.g. 0,1,2 (rows `NAME seed=S`, "
                        "seed by seed), then print each recipe's mean, lowest and highest over them and write "
                        "DIR/seed_means.json: a recipe a few percent ahead at one seed may not be at the next")
    ablate.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    ablate.add_argument("--speed-tokens", type=int, default=32, help=argparse.SUPPRESS)
    add_config_options(ablate, skip=("eval_text",))
    ablate.set_defaults(func=cmd_ablate)


def _add_bench_and_evaluate(sub: Any) -> None:
    bench = sub.add_parser("bench", help="time the engine's step against a plain reference loop, same shapes and data",
                           usage="%(prog)s [--config FILE] [--shapes NAME] [--repeats N] [--compile-variant] "
                           "[--end-to-end] [--set KEY=VALUE ...] [--FIELD VALUE ...]")
    bench.add_argument("--config", default=None,
                       help="the pair, shapes and engine settings (default: the quickstart session; on a GPU, the "
                            "SmolLM2-360M -> 135M shapes at batch 16 x 1024)")
    bench.add_argument("--shapes", default=None, help="random-weight models of these shapes instead of the config's "
                       "pair: smollm2-360m>135m or tiny")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    bench.add_argument("--repeats", type=int, default=5, help="timed steps per loop after one warm-up (default 5)")
    bench.add_argument("--compile-variant", action="store_true",
                       help="also time the engine with compiled layers (always on a GPU) and say after how many steps "
                            "compiling pays for itself")
    bench.add_argument("--end-to-end", action="store_true",
                       help="also run the config's session twice as `distill` (cold: an empty cache; warm) and print "
                            "each one's wall time from the command to summary.json, split into phases (minutes)")
    add_config_options(bench)
    bench.set_defaults(func=cmd_bench)

    evaluate = sub.add_parser("evaluate", help="held-out perplexity, bits per byte, agreement, KL and speed of a student "
                              "against its teacher")
    evaluate.add_argument("--teacher", required=True)
    evaluate.add_argument("--student", required=True, help="a saved student directory or a derived spec like layers:6")
    evaluate.add_argument("--text", required=True, help="UTF-8 text file to evaluate on")
    evaluate.add_argument("--max-tokens", type=int, default=1024, help="score at most this many tokens (default 1024)")
    evaluate.add_argument("--seq-len", type=int, default=256, help=argparse.SUPPRESS)
    evaluate.add_argument("--tokenizer-bridge", default="auto", choices=api.CHOICES["tokenizer_bridge"],
                          help="how a student with another vocabulary is compared (default auto); perplexity is "
                          "per each model's own tokens, bits per byte compares any two")
    evaluate.add_argument("--real-text", default="bible-kjv",
                          help="real text reported next to --text: bible-kjv (the Book of Ruth, KJV, from Debian's "
                               "bible-kjv-text; the default), a text file, or '' for none")
    evaluate.add_argument("--prompts", default=DistillConfig().sample_eval_prompts,
                          help="held-out prompts the student continues for the teacher-scored measure of its own text "
                          "(default assets/texts/heldout_prompts.txt)")
    evaluate.add_argument("--sample-tokens", type=int, default=DistillConfig().sample_eval_tokens,
                          help=f"new tokens per prompt for that measure (0 skips it; default "
                               f"{DistillConfig().sample_eval_tokens})")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the sampled continuations (default 0)")
    evaluate.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill_core", description="Distill Studio engine")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_info(sub)
    _add_distill(sub)
    _add_ablate(sub)
    _add_bench_and_evaluate(sub)
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
        print(f"error: {api.describe_failure(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
