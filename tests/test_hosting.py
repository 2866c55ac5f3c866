"""Safe defaults for hosting (distill_core/hosting.py): remote code, pickled weights, public mode and its
caps, export names, and the Spaces pieces (the spaces.GPU helper, hub defaults, README front matter)."""

from __future__ import annotations

import json
import os
import re
import importlib
import shutil
import types
from pathlib import Path

import pytest
import torch
import yaml

from distill_core import hosting
from distill_core.models import load_config, load_model, load_teacher
from distill_core.students import derive_student
from distill_core.config import ASSETS, DistillConfig
from distill_core.errors import DistillError
from tests.conftest import REPO, SAMPLE_TEXT


@pytest.fixture(autouse=True)
def default_caps(monkeypatch):
    """Every test starts outside public mode, with the default caps and no remote code."""
    for name in list(os.environ):
        if name.startswith("DISTILL_CAP_"):
            monkeypatch.delenv(name)
    for name in ("DISTILL_PUBLIC", "SPACE_ID", "DISTILL_TRUST_REMOTE_CODE", "DISTILL_HUB_DEFAULTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def public(monkeypatch, tmp_path):
    """Public mode, with the upload area in a temporary folder (Gradio's GRADIO_TEMP_DIR)."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    monkeypatch.setenv("DISTILL_PUBLIC", "1")
    return uploads


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ---- trust_remote_code ---------------------------------------------------------------------------

def remote_code_model(tiny_teacher_dir: Path, folder: Path, marker: Path) -> Path:
    """The tiny teacher with an `auto_map` that points AutoConfig at a Python file shipped in the folder;
    importing that file creates `marker`."""
    copy_model(tiny_teacher_dir, folder)
    (folder / "configuration_shipped.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).mkdir()\n"
        "from transformers import LlamaConfig\n\n\n"
        "class ShippedConfig(LlamaConfig):\n"
        "    pass\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "configuration_shipped.ShippedConfig"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_trust_remote_code_is_an_operator_setting(monkeypatch):
    assert hosting.trust_remote_code() is False
    monkeypatch.setenv("DISTILL_TRUST_REMOTE_CODE", "1")
    assert hosting.trust_remote_code() is True
    monkeypatch.setenv("DISTILL_PUBLIC", "1")  # any visitor could name a repository: never in public mode
    assert hosting.trust_remote_code() is False
    monkeypatch.setenv("DISTILL_PUBLIC", "0")
    monkeypatch.setenv("DISTILL_TRUST_REMOTE_CODE", "ture")
    with pytest.raises(DistillError, match="DISTILL_TRUST_REMOTE_CODE must be 1 or 0"):
        hosting.trust_remote_code()


def test_shipped_code_runs_only_when_the_operator_trusts_it(tiny_teacher_dir, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    folder = remote_code_model(tiny_teacher_dir, tmp_path / "shipped", marker)
    loaded = load_model(str(folder))  # the built-in Llama classes, the shipped file never imported
    assert type(loaded.model.config).__name__ == "LlamaConfig"
    assert not marker.exists()
    monkeypatch.setenv("DISTILL_TRUST_REMOTE_CODE", "1")
    config = load_config(str(folder))
    assert marker.exists() and type(config).__name__ == "ShippedConfig"


# ---- pickled weights -----------------------------------------------------------------------------

class RunsCode:
    """Unpickling this calls os.mkdir(path): what a malicious checkpoint would do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def pickled_model(tiny_teacher_dir: Path, folder: Path, payload) -> Path:
    """The tiny teacher with its weights as pytorch_model.bin (torch.save of `payload`), no safetensors."""
    copy_model(tiny_teacher_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save(payload, folder / "pytorch_model.bin")
    return folder


def test_pickled_checkpoint_loads_weights_only(tiny_teacher_dir, tmp_path):
    reference = load_model(str(tiny_teacher_dir)).model.state_dict()
    folder = pickled_model(tiny_teacher_dir, tmp_path / "bin", dict(reference))
    loaded = load_model(str(folder)).model.state_dict()
    assert torch.equal(loaded["model.layers.0.mlp.up_proj.weight"], reference["model.layers.0.mlp.up_proj.weight"])


def test_malicious_pickle_does_not_run(tiny_teacher_dir, tmp_path):
    probe = tmp_path / "probe-ran"
    torch.save({"weight": RunsCode(probe)}, tmp_path / "probe.bin")
    torch.load(tmp_path / "probe.bin", weights_only=False)  # a plain pickle load runs the payload
    assert probe.is_dir()

    marker = tmp_path / "payload-ran"
    folder = pickled_model(tiny_teacher_dir, tmp_path / "evil", {"model.embed_tokens.weight": RunsCode(marker)})
    with pytest.raises(DistillError, match="cannot load"):
        load_model(str(folder))
    assert not marker.exists()


# ---- public mode: switching it on ----------------------------------------------------------------

def test_public_mode_follows_spaces_and_the_operator(monkeypatch):
    assert hosting.public_mode() is False
    monkeypatch.setenv("SPACE_ID", "someone/distill-studio")
    assert hosting.public_mode() is True
    monkeypatch.setenv("DISTILL_PUBLIC", "0")
    assert hosting.public_mode() is False
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("DISTILL_PUBLIC", "1")
    assert hosting.public_mode() is True
    monkeypatch.setenv("DISTILL_PUBLIC", "maybe")
    with pytest.raises(DistillError, match="DISTILL_PUBLIC must be 1 or 0"):
        hosting.public_mode()


# ---- public mode: model specs --------------------------------------------------------------------

def test_public_mode_refuses_local_model_paths(tiny_teacher_dir, public, tmp_path):
    for spec in (str(tiny_teacher_dir), "./runs/x/student", "~/models/m", str(tmp_path / "model.gguf")):
        with pytest.raises(DistillError, match="is a local path; public mode loads no models from this machine"):
            load_model(spec)
    with pytest.raises(DistillError, match="teacher spec .* is a local path"):
        DistillConfig(teacher=str(tiny_teacher_dir))
    with pytest.raises(DistillError, match="student spec .* is a local path"):
        DistillConfig(student=str(tiny_teacher_dir))
    with pytest.raises(DistillError, match="back-translation model .* is a local path"):
        DistillConfig(back_translation_models=f"{tiny_teacher_dir},Helsinki-NLP/opus-mt-de-en")
    # the bundled teacher, hub ids and derived students stay allowed
    config = DistillConfig(teacher="smollm2-135m", student="layers:2")
    config.with_overrides({"teacher": "HuggingFaceTB/SmolLM2-360M-Instruct",
                           "student": "fresh:layers=2,hidden=64,heads=4"})


def test_public_mode_caps_model_size(tiny_teacher_dir, monkeypatch):
    teacher = load_teacher(str(tiny_teacher_dir))  # loaded by the operator, before public mode
    monkeypatch.setenv("DISTILL_PUBLIC", "1")
    assert derive_student(teacher, "fresh:layers=1,hidden=32,heads=4").model.config.num_hidden_layers == 1
    with pytest.raises(DistillError, match=r"the parameter count of the student 'fresh:layers=8,hidden=4096,heads=32'"
                                           r" is [\d,]+; public mode allows at most 1,000,000,000 \(the model_params"):
        derive_student(teacher, "fresh:layers=8,hidden=4096,heads=32")


# ---- public mode: files --------------------------------------------------------------------------

def test_public_mode_reads_files_only_from_uploads_and_assets(public, tmp_path):
    from distill_core.corpora import read_corpus_file
    from distill_core.data import read_text_file

    outside = tmp_path / "secret.txt"
    outside.write_text("not for visitors\n", encoding="utf-8")
    uploaded = public / "abc123" / "corpus.txt"
    uploaded.parent.mkdir()
    uploaded.write_text(SAMPLE_TEXT, encoding="utf-8")
    (public / "link.txt").symlink_to(outside)

    for path in ("/etc/passwd", outside, public / ".." / "secret.txt", public / "link.txt"):
        with pytest.raises(DistillError, match="is not an uploaded file: in public mode files are read only"):
            read_text_file(path, "corpus file")
        with pytest.raises(DistillError, match="corpus .* is not an uploaded file"):
            DistillConfig(corpus=str(path))
    with pytest.raises(DistillError, match="eval_text '/etc/passwd' is not an uploaded file"):
        DistillConfig(eval_text="/etc/passwd")
    with pytest.raises(DistillError, match="prompts_file .* is not an uploaded file"):
        DistillConfig(prompts_file=str(outside))
    with pytest.raises(DistillError, match="not an uploaded file"):
        read_corpus_file(outside)

    texts, info = read_corpus_file(uploaded)
    assert info["documents"] == len(texts) > 1
    assert DistillConfig(corpus=str(uploaded)).corpus == str(uploaded)
    assert read_text_file(ASSETS / "texts" / "heldout.txt", "evaluation text").strip()  # the app's own assets


def test_outside_public_mode_any_file_is_read(tmp_path):
    from distill_core.data import read_text_file

    outside = tmp_path / "local.txt"
    outside.write_text("a local file\n", encoding="utf-8")
    assert read_text_file(outside) == "a local file\n"


# ---- public mode: caps ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, cap", [("steps", 201, 200), ("batch_size", 17, 16), ("seq_len", 512, 256),
                                               ("hub_max_rows", 5001, 5000), ("generation_tokens", 129, 128),
                                               ("eval_max_tokens", 4096, 2048), ("augment_copies", 3, 2)])
def test_public_mode_caps_session_sizes(public, field, value, cap):
    DistillConfig(**{field: cap})  # at the cap: allowed
    with pytest.raises(DistillError, match=f"{field} is {value:,}; public mode allows at most {cap:,} "
                                           f"\\(the {field} cap; the operator sets it with DISTILL_CAP_{field.upper()}\\)"):
        DistillConfig(**{field: value})


def test_caps_apply_only_in_public_mode_and_the_operator_can_move_them(monkeypatch):
    assert DistillConfig(steps=1000, batch_size=64).steps == 1000
    monkeypatch.setenv("DISTILL_PUBLIC", "1")
    with pytest.raises(DistillError, match="steps is 1,000"):
        DistillConfig(steps=1000)
    monkeypatch.setenv("DISTILL_CAP_STEPS", "1000")
    assert DistillConfig(steps=1000).steps == 1000
    monkeypatch.setenv("DISTILL_CAP_STEPS", "lots")
    with pytest.raises(DistillError, match="DISTILL_CAP_STEPS must be a positive integer"):
        DistillConfig(steps=10)


def test_public_mode_caps_upload_size(public, monkeypatch):
    from distill_core.corpora import read_corpus_file

    monkeypatch.setenv("DISTILL_CAP_UPLOAD_MB", "1")
    big = public / "big.txt"
    big.write_text("word " * 300_000, encoding="utf-8")  # 1.4 MiB
    with pytest.raises(DistillError, match=r"corpus file big.txt is 1\.4 MiB; public mode allows at most 1 MiB "
                                           r"\(the upload_mb cap"):
        read_corpus_file(big)
    with pytest.raises(DistillError, match=r"the pasted training text is 1\.4 MiB; public mode allows at most 1 MiB"):
        DistillConfig(corpus_text="word " * 300_000)
    small = public / "small.txt"
    small.write_text(SAMPLE_TEXT, encoding="utf-8")
    assert read_corpus_file(small)[1]["format"] == "text"


def test_public_mode_caps_generation_texts_and_sweeps(tiny_teacher_dir, public):
    from distill_core.evaluate import generate
    from distill_core.probes import encode
    from distill_core.sweep import student_sweep

    with pytest.raises(DistillError, match="new tokens is 200; public mode allows at most 128 \\(the new_tokens cap"):
        generate(None, None, "The baker", new_tokens=200)
    with pytest.raises(DistillError, match="the length of the probe text \\(characters\\) is 4,001"):
        encode(None, "x" * 4001)
    with pytest.raises(DistillError, match="the length of the prompt \\(characters\\) is 5,000"):
        generate(None, None, "y" * 5000, new_tokens=10)
    config = DistillConfig(teacher="smollm2-135m", student="layers:2")
    with pytest.raises(DistillError, match="the number of students in the sweep is 5; public mode allows at most 4"):
        next(student_sweep(config, [f"layers:{n}" for n in range(1, 6)], public / "sweep"))


def test_public_mode_cli_refuses_a_local_teacher(tiny_teacher_dir, public, capsys):
    from distill_core.__main__ import main

    assert main(["info", "--teacher", str(tiny_teacher_dir), "--student", "layers:2"]) == 2
    assert "is a local path; public mode loads no models" in capsys.readouterr().err
    assert main(["evaluate", "--teacher", "smollm2-135m", "--student", "layers:2", "--text", "/etc/passwd"]) == 2
    assert "'/etc/passwd' is not an uploaded file" in capsys.readouterr().err


def test_upload_area_is_gradios(monkeypatch, tmp_path):
    from gradio.utils import get_upload_folder

    assert hosting.upload_dir() == Path(get_upload_folder()).resolve()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    assert hosting.upload_dir() == Path(get_upload_folder()).resolve() == tmp_path.resolve()


# ---- export names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "/", "a/../../b", "..\\..\\windows\\system32",
                                  "nul\x00byte", ".hidden", "~/x", "run name?.zip"])
def test_export_names_cannot_leave_the_export_folder(name, tmp_path):
    from distill_core.export import safe_filename

    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe)
    assert (tmp_path / f"{safe}.zip").resolve().parent == tmp_path.resolve()


# ---- Spaces --------------------------------------------------------------------------------------

def test_spaces_gpu_is_the_identity_without_spaces(monkeypatch):
    def handler():
        return "ran"

    monkeypatch.setattr(hosting, "_SPACES", None)
    assert hosting.spaces_gpu(120)(handler) is handler
    calls = []
    fake = types.SimpleNamespace(GPU=lambda duration: lambda fn: calls.append((duration, fn)) or "wrapped")
    monkeypatch.setattr(hosting, "_SPACES", fake)
    assert hosting.spaces_gpu(120)(handler) == "wrapped" and calls == [(120, handler)]


def test_hub_defaults_only_with_the_hub(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the offline default must not wait for the network")

    monkeypatch.setattr(hosting, "hub_reachable_within", no_network)
    monkeypatch.setattr(hosting, "bundled_gguf_path", lambda: Path("bundled.gguf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hosting.use_hub_defaults() is False  # the bundled teacher is here, not on Spaces: no hub check
    monkeypatch.setenv("SPACE_ID", "someone/distill-studio")
    assert hosting.use_hub_defaults() is True
    monkeypatch.setenv("DISTILL_HUB_DEFAULTS", "0")
    assert hosting.use_hub_defaults() is False
    monkeypatch.delenv("DISTILL_HUB_DEFAULTS")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hosting.use_hub_defaults() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setattr(hosting, "bundled_gguf_path", lambda: None)
    monkeypatch.setattr(hosting, "hub_reachable_within", lambda *a, **k: True)
    assert hosting.use_hub_defaults() is True  # no bundled teacher, but the hub answers


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Spaces YAML front matter"
    return yaml.safe_load(match.group(1))


def test_readme_front_matter_configures_the_space():
    meta = front_matter()
    pinned = re.search(r"^gradio==(\S+)$", (REPO / "requirements.txt").read_text(encoding="utf-8"), re.M).group(1)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pinned
    assert (REPO / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    assert meta["suggested_hardware"] in ("cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small")
    assert meta["title"] and meta["emoji"]


def test_spaces_is_pinned_and_leaves_the_gradio_pin_alone():
    import importlib.metadata

    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^spaces==(\S+)$", text, re.M).group(1)
    assert importlib.metadata.version("spaces") == pinned
    wants_gradio = [r for r in importlib.metadata.requires("spaces") if r.split(";")[0].strip().startswith("gradio")]
    assert wants_gradio == ["gradio"]  # any gradio: requirements.txt's pin (the Space's sdk_version) decides


def test_packages_txt_has_the_makefiles_wordnet():
    wanted = re.search(r"^WORDNET_PACKAGES := (.+)$", (REPO / "Makefile").read_text(encoding="utf-8"), re.M).group(1)
    listed = (REPO / "packages.txt").read_text(encoding="utf-8").split()
    assert set(wanted.split()) <= set(listed)


def test_app_shows_and_enforces_the_public_limits(public, monkeypatch):
    import app
    from tests.test_app import run_distillation, ui_values
    from distill_core import api
    from ui import common, knobs

    monkeypatch.setattr(api, "use_hub_defaults", lambda: True)
    assert common.cap("steps") == 200 and "at most 200 steps, batch 16, sequences of 256 tokens" in common.public_note()
    assert app.launch_options()["max_file_size"] == 10 * 2**20
    demo = app.build_app()
    components = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert (components["steps"].maximum, components["batch-size"].maximum, components["seq-len"].maximum) == (200, 16, 256)
    assert components["generate-tokens"].maximum == 128 and components["public-note"].visible
    assert (components["teacher-spec"].value, components["student-spec"].value) == hosting.HUB_DEFAULT_PAIR

    values = ui_values("smollm2-135m", student="layers:2", corpus_choice=knobs.CORPUS_UPLOAD, upload="/etc/passwd",
                       pasted=None, steps=api_preset_steps())
    status = next(run_distillation(values))[0]
    assert "corpus '/etc/passwd' is not an uploaded file" in status
    values.update(corpus_choice=knobs.CORPUS_GENERATED, steps=500)
    status = next(run_distillation(values))[0]
    assert "steps is 500; public mode allows at most 200 (the steps cap" in status


def api_preset_steps() -> int:
    from distill_core.presets import preset_config

    return preset_config().steps


def test_only_the_engine_session_goes_to_zerogpu(monkeypatch):
    """On Spaces `spaces.GPU` wraps the engine's session alone (never a UI handler, whose user state must stay
    in the app's process); Student size sends each student's session the same way."""
    from ui import distill

    wrapped = []
    fake = types.SimpleNamespace(GPU=lambda duration: lambda fn: wrapped.append((fn.__name__, duration)) or fn)
    monkeypatch.setattr(hosting, "_SPACES", fake)
    try:
        importlib.reload(distill)
        assert wrapped == [("run_session", distill.SESSION_GPU_S)]
        assert distill.SESSION.func.__name__ == "run_in_slices" and distill.SESSION.keywords["time_limit_s"] is None
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
        importlib.reload(distill)
        assert distill.SESSION.keywords["time_limit_s"] == 0.8 * distill.SESSION_GPU_S  # slices on ZeroGPU
    finally:
        monkeypatch.undo()
        importlib.reload(distill)


def test_app_outside_public_mode_has_no_limits():
    import app
    from ui import common

    assert common.cap("steps") is None and common.public_note() == "" and "max_file_size" not in app.launch_options()


def test_resource_settings_have_defaults_from_the_machine_and_the_operator_moves_them(monkeypatch, tmp_path):
    for name in ("DISTILL_MEMORY_MB", "DISTILL_RUNS_CAP_MB", "DISTILL_SHARED_KEEP_HOURS", "DISTILL_IDLE_MINUTES",
                 "DISTILL_SAVE_DTYPE", "DISTILL_TRAIN_THREADS", "DISTILL_VIEW_THREADS"):
        monkeypatch.delenv(name, raising=False)
    machine = hosting.machine_memory_bytes()
    assert 0 < machine <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert hosting.memory_budget_bytes() == pytest.approx(hosting.MEMORY_SHARE * machine, rel=1e-6)
    assert hosting.model_budget_bytes() == pytest.approx(hosting.MODEL_SHARE * hosting.memory_budget_bytes(), abs=1)
    disk = shutil.disk_usage(tmp_path).total
    assert hosting.runs_cap_bytes(tmp_path / "not" / "yet") == pytest.approx(hosting.RUNS_DISK_SHARE * disk, rel=1e-6)
    assert (hosting.shared_keep_s(), hosting.idle_expiry_s(), hosting.save_dtype()) == (24 * 3600, 30 * 60, "fp32")
    assert hosting.view_threads() == 1 and hosting.training_threads() == max(1, (os.cpu_count() or 2) // 2)
    monkeypatch.setenv("DISTILL_MEMORY_MB", "2048")
    monkeypatch.setenv("DISTILL_RUNS_CAP_MB", "500")
    monkeypatch.setenv("DISTILL_IDLE_MINUTES", "0.5")
    assert (hosting.memory_budget_bytes(), hosting.model_budget_bytes()) == (2048 * 2**20, 1024 * 2**20)
    assert hosting.runs_cap_bytes(tmp_path) == 500 * 2**20 and hosting.idle_expiry_s() == 30
    monkeypatch.setenv("DISTILL_MEMORY_MB", "lots")
    with pytest.raises(DistillError, match="DISTILL_MEMORY_MB must be a positive number, got 'lots'"):
        hosting.memory_budget_bytes()
