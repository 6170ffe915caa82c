"""One rule for every file a command writes, walked over every command's output options as the CLI declares them.

An existing output is refused without --exist-ok, two outputs naming one file are refused, and so is an output
naming an input (`run --json clip.mp4` once destroyed the clip it had just read): each in one line, before any
work (nothing printed, nothing created). The options come from the CLI itself (typer's click parameters): an
option that names a path and is not registered below fails `test_every_path_option_is_registered`, and once it
is registered as an output the other tests walk it too.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from conftest import assert_one_line_error, run_cli
from edgeseg.cli import app

# (command, flag) -> what an existing output is: a file at the path, a non-empty folder, or the named file in the folder
OUTPUTS = {
    ("train", "--out"): "folder",
    ("eval", "--json"): "file",
    ("eval", "--plots"): "confusion_matrix.png",
    ("eval", "--report"): "file",
    ("predict", "--out"): "folder",
    ("import-seed", "--out"): "file",
    ("export", "--out"): "folder",
    ("build", "--out"): "model.fp16.engine",
    ("verify", "--json"): "file",
    ("verify", "--report"): "file",
    ("calib-data", "--out"): "manifest.json",
    ("bench", "--json"): "file",
    ("bench", "--markdown"): "file",
    ("run", "--out"): "file",  # a video file here; folders of frames: tests/test_recordings.py
    ("run", "--json"): "file",
    ("doctor", "--json"): "file",
}
INPUTS = {
    ("train", "--data"), ("train", "--resume"), ("train", "--init"), ("eval", "MODEL"), ("eval", "--data"),
    ("eval", "--reference"), ("predict", "MODEL"), ("predict", "SOURCE"), ("import-seed", "CHECKPOINT"),
    ("export", "MODEL"), ("export", "--profile"), ("export", "--calib"), ("build", "BUNDLE"), ("verify", "MODEL"),
    ("verify", "--bundle"), ("calib-data", "--data"), ("bench", "MODELS"), ("run", "MODEL"), ("run", "--source"),
    # a cache, read and then updated on purpose: the rule for outputs does not apply
    ("export", "--timing-cache"), ("build", "--timing-cache"),
}  # fmt: skip
NOT_PATHS = {("train", "--train-split"), ("eval", "--split"), ("export", "--name"), *(
    (command, "--backend") for command in ("eval", "predict", "verify", "run"))}  # fmt: skip
PATH_WORDS = re.compile(r"\b(file|files|folder|path|paths|glob|manifest|here|json|toml|uri|url)\b", re.I)


def path_options() -> set[tuple[str, str]]:
    """(command, flag or ARGUMENT) of every parameter that names a path: typed Path, or text whose help says so."""
    found = set()
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            label = param.opts[0] if param.param_type_name == "option" else param.name.upper()
            annotation = repr(param.type_descriptor.annotation)
            typed_path = param.type_descriptor.annotation is pathlib.Path or "pathlib.Path" in annotation
            text = param.type_descriptor.annotation is str or "str" in annotation
            if typed_path or (text and PATH_WORDS.search(getattr(param, "help", None) or "")):
                found.add((name, label))
    return found


def test_help_says_what_backend_takes_and_threads_has_one_maximum():
    """`run` and `verify` did not say what --backend accepts; --threads allowed 256 in one command, 1024 in another."""
    params = {(name, param.opts[0] if param.param_type_name == "option" else param.name): param
              for name, command in typer.main.get_command(app).commands.items() for param in command.params}  # fmt: skip
    for name, flag in params:
        if flag == "--backend":
            assert all(word in params[name, flag].help for word in ("auto", "onnxruntime", "tensorrt", "openvino", "torch")), name
    maxima = {name: params[name, flag].max for name, flag in params if flag == "--threads"}
    assert set(maxima) == {"verify", "bench", "run"} and set(maxima.values()) == {1024}, maxima


def test_every_path_option_is_registered():
    options = path_options()
    unregistered = options - set(OUTPUTS) - INPUTS - NOT_PATHS
    assert not unregistered, f"register these as outputs (the rule then applies and is tested) or inputs: {unregistered}"
    assert set(OUTPUTS) <= options, f"registered but no longer in the CLI: {set(OUTPUTS) - options}"


# --- a valid invocation of each command, its outputs at chosen paths ------------------------------------------------
@pytest.fixture(scope="module")
def inputs(small_checkpoint, camvid, camvid_clip, tmp_path_factory) -> dict:
    from edgeseg.export.exporter import export_onnx

    root = tmp_path_factory.mktemp("inputs")
    bundle = root / "bundle"
    export_onnx(small_checkpoint, bundle, data=f"camvid:{camvid}", precisions=("fp32", "fp16"), num_verify=1,
                fidelity_images=1, verify_images=2)  # fmt: skip
    images = root / "images"
    images.mkdir()
    for path in sorted((camvid / "images" / "val").glob("*.jpg"))[:1]:
        shutil.copy(path, images / path.name)
    model_folder = root / "model"
    model_folder.mkdir()
    checkpoint = shutil.copy(small_checkpoint, model_folder / "small.pt")
    return {"checkpoint": Path(checkpoint), "data": f"camvid:{camvid}", "bundle": bundle, "onnx": bundle / "model.fp32.onnx",
            "images": images, "clip": camvid_clip}  # fmt: skip


def invocation(command: str, inputs: dict, outputs: dict[str, Path]) -> list:
    """``command`` with valid inputs, every output option of it at ``outputs[flag]``."""
    out = outputs.get
    return {
        "train": ["train", "--data", inputs["data"], "--out", out("--out"), "--epochs", "1"],
        "eval": ["eval", inputs["checkpoint"], "--data", inputs["data"], "--limit", "1", "--json", out("--json"),
                 "--plots", out("--plots"), "--report", out("--report")],
        "predict": ["predict", inputs["checkpoint"], inputs["images"], "--out", out("--out")],
        "import-seed": ["import-seed", inputs["checkpoint"], "--num-classes", "11", "--out", out("--out")],
        "export": ["export", inputs["checkpoint"], "--out", out("--out"), "--no-verify"],
        "build": ["build", inputs["bundle"], "--out", out("--out")],
        "verify": ["verify", inputs["onnx"], "--json", out("--json"), "--report", out("--report")],
        "calib-data": ["calib-data", "--data", inputs["data"], "--n", "16", "--out", out("--out")],
        "bench": ["bench", inputs["onnx"], "--iters", "1", "--warmup", "0", "--json", out("--json"),
                  "--markdown", out("--markdown")],
        "run": ["run", inputs["onnx"], "--source", inputs["clip"], "--max-frames", "1", "--no-show",
                "--out", out("--out"), "--json", out("--json")],
        "doctor": ["doctor", "--json", out("--json")],
    }[command]  # fmt: skip


def fresh_outputs(command: str, folder: Path) -> dict[str, Path]:
    """A path of its own for each output option of ``command``, none existing yet."""
    suffix = {("run", "--out"): ".avi", ("bench", "--markdown"): ".md", ("eval", "--report"): ".html",
              ("verify", "--report"): ".html"}  # fmt: skip
    return {flag: folder / f"new{index}{suffix.get((command, flag), '.json' if OUTPUTS[(command, flag)] == 'file' else '')}"
            for index, flag in enumerate(flag for cmd, flag in OUTPUTS if cmd == command)}  # fmt: skip


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused_before_work(done, folder: Path, before: list[str], *fragments: str) -> None:
    assert_one_line_error(done, *fragments)
    assert done.stdout == "", f"work started before the refusal: {done.stdout[-500:]}"
    assert listing(folder) == before, "a refused command creates nothing"


# --- the rule -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, flag", sorted(OUTPUTS), ids=[" ".join(key) for key in sorted(OUTPUTS)])
def test_an_existing_output_is_refused_before_any_work(inputs, tmp_path, command, flag):
    outputs = fresh_outputs(command, tmp_path)
    target, kind = outputs[flag], OUTPUTS[(command, flag)]
    if kind == "file":
        target.write_text("mine")
        kept = target
    else:
        target.mkdir()
        kept = target / ("keep.txt" if kind == "folder" else kind)
        kept.write_text("mine")
    before = listing(tmp_path)
    done = run_cli(*invocation(command, inputs, outputs))
    refused_before_work(done, tmp_path, before, flag, "--exist-ok")
    assert kept.read_text() == "mine"


PAIRS = sorted({(cmd, a, b) for cmd, a in OUTPUTS for other, b in OUTPUTS if other == cmd and a < b})


@pytest.mark.parametrize("command, first, second", PAIRS, ids=[" ".join(key) for key in PAIRS])
def test_two_outputs_naming_one_file_are_refused(inputs, tmp_path, command, first, second):
    outputs = fresh_outputs(command, tmp_path)
    outputs[second] = outputs[first] = tmp_path / "same.avi"
    before = listing(tmp_path)
    done = run_cli(*invocation(command, inputs, outputs))
    refused_before_work(done, tmp_path, before, first, second, "same.avi")


# output -> (the input it is pointed at, how the message names that input)
ONTO_INPUTS = {
    ("eval", "--json"): ("checkpoint", "MODEL"), ("import-seed", "--out"): ("checkpoint", "CHECKPOINT"),
    ("predict", "--out"): ("images", "SOURCE"), ("export", "--out"): ("checkpoint folder", "MODEL"),
    ("verify", "--json"): ("onnx", "MODEL"), ("verify", "--report"): ("onnx", "MODEL"), ("bench", "--json"): ("onnx", "MODELS"),
    ("bench", "--markdown"): ("onnx", "MODELS"), ("run", "--json"): ("clip", "--source"),
    ("run", "--out"): ("clip", "--source"),
}  # fmt: skip


@pytest.mark.parametrize("command, flag", sorted(ONTO_INPUTS), ids=[" ".join(key) for key in sorted(ONTO_INPUTS)])
def test_an_output_naming_an_input_is_refused_even_with_exist_ok(inputs, tmp_path, command, flag):
    """The issue's `run ... --json clip.mp4`: the input survives, whatever --exist-ok says."""
    source, named = ONTO_INPUTS[(command, flag)]
    target = inputs["checkpoint"].parent if source == "checkpoint folder" else inputs[source]
    outputs = fresh_outputs(command, tmp_path)
    outputs[flag] = target
    size = sum(p.stat().st_size for p in ([target] if target.is_file() else target.rglob("*")))
    done = run_cli(*invocation(command, inputs, outputs), "--exist-ok")
    refused_before_work(done, tmp_path, [], flag, named)
    assert sum(p.stat().st_size for p in ([target] if target.is_file() else target.rglob("*"))) == size


def test_exist_ok_replaces_a_json_output(inputs, tmp_path):
    report = tmp_path / "verify.json"
    report.write_text("old")
    done = run_cli("verify", inputs["onnx"], "--json", report, "--exist-ok")
    assert done.returncode == 0, done.stderr[-1500:]
    assert report.read_text().startswith("{") and '"passed": true' in report.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verify.json"], "no temporary file is left"


def test_a_repeated_output_is_refused(inputs, tmp_path):
    out = tmp_path / "rec.avi"
    done = run_cli("run", inputs["onnx"], "--source", inputs["clip"], "--no-show", "--out", out, "--out", out)
    refused_before_work(done, tmp_path, [], f"--out {out} twice")


def test_a_file_output_cannot_be_the_folder_of_another(inputs, tmp_path):
    done = run_cli("eval", inputs["checkpoint"], "--data", inputs["data"], "--json", tmp_path / "x", "--plots", tmp_path / "x")
    refused_before_work(done, tmp_path, [], "--json", "--plots")


def test_bench_writes_beside_its_first_model_wherever_the_user_stands(inputs, tmp_path):
    """Its default --json is bench-<time>.json beside the first model (in its bundle), not under the current folder."""
    bundle = shutil.copytree(inputs["bundle"], tmp_path / "bundle")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "edgeseg", "bench", str(bundle / "model.fp32.onnx"), "--iters", "1", "--warmup", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-1500:]
    assert list(elsewhere.iterdir()) == []
    written = sorted(p.suffix for p in bundle.glob("bench-*"))
    assert written == [".json", ".md"] and f"results: {bundle}/bench-" in done.stdout
