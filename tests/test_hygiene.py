"""Nothing mixed, nothing half-made, nothing accepted out of range: real `edgeseg` subprocesses.

Each bad input gives one line, exit 2 and no traceback, before any work; Ctrl-C says
"interrupted" with exit 130; exports into one --out never mix or collide, and a killed export
leaves nothing a rerun does not clean.
"""

import inspect
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error, can_mount_a_private_tmpfs, run_cli, wait_for

M = "missing.pt"  # parsing fails before any file is opened


def _calib(camvid: Path) -> str:
    return str(camvid / "images" / "train" / "*.jpg")


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _start(*args: str, out: Path) -> subprocess.Popen:
    """`edgeseg ARGS` in the background with SIGINT at its default, as from a terminal."""
    command = [sys.executable, "-m", "edgeseg", *map(str, args)]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=open(out, "w"), stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


# --- numbers out of range: refused where they are parsed -------------------------------------
RANGES = [
    (["train", "--data", "x", "--out", "r", "--img-size", "100000", "100000"], "--img-size"),
    (["train", "--data", "x", "--out", "r", "--img-size", "16", "16"], "--img-size"),
    (["train", "--data", "x", "--out", "r", "--crop-size", "0", "64"], "--crop-size"),
    (["train", "--data", "x", "--out", "r", "--epochs", "0"], "--epochs"),
    (["train", "--data", "x", "--out", "r", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", "x", "--out", "r", "--lr", "-1"], "--lr"),
    (["train", "--data", "x", "--out", "r", "--lr", "0"], "--lr"),
    (["train", "--data", "x", "--out", "r", "--lr", "nan"], "--lr"),
    (["train", "--data", "x", "--out", "r", "--workers", "-3"], "--workers"),
    (["train", "--data", "x", "--out", "r", "--val-every", "0"], "--val-every"),
    (["train", "--data", "x", "--out", "r", "--train-limit", "0"], "--train-limit"),
    (["train", "--data", "x", "--out", "r", "--stop-after", "-1"], "--stop-after"),
    (["export", M, "--out", "e", "--opset", "3"], "--opset"),
    (["export", M, "--out", "e", "--opset", "99"], "--opset"),
    (["export", M, "--out", "e", "--img-size", "100000", "100000"], "--img-size"),
    (["export", M, "--out", "e", "--batch", "0"], "--batch"),
    (["export", M, "--out", "e", "--dynamic-batch", "-2"], "--dynamic-batch"),
    (["export", M, "--out", "e", "--percentile", "0"], "--percentile"),
    (["export", M, "--out", "e", "--percentile", "101"], "--percentile"),
    (["export", M, "--out", "e", "--calib-images", "0"], "--calib-images"),
    (["export", M, "--out", "e", "--workspace", "0"], "--workspace"),
    (["export", M, "--out", "e", "--dla-core", "-1"], "--dla-core"),
    (["export", M, "--out", "e", "--num-verify", "0"], "--num-verify"),
    (["export", M, "--out", "e", "--fidelity-images", "0"], "--fidelity-images"),
    (["export", M, "--out", "e", "--max-miou-drop", "-1"], "--max-miou-drop"),
    (["bench", M, "--img-size", "-5", "10"], "--img-size"),
    (["bench", M, "--img-size", "100000", "100000"], "--img-size"),
    (["bench", M, "--iters", "0"], "--iters"),
    (["bench", M, "--warmup", "-1"], "--warmup"),
    (["bench", M, "--threads", "0"], "--threads"),
    (["bench", M, "--batch-size", "0"], "--batch-size"),
    (["calib-data", "--data", "x", "--out", "c", "--n", "0"], "--n"),
    (["predict", M, "x", "--out", "p", "--alpha", "2"], "--alpha"),
    (["predict", M, "x", "--out", "p", "--alpha", "-0.5"], "--alpha"),
    (["eval", M, "--data", "x", "--limit", "0"], "--limit"),
    (["eval", M, "--data", "x", "--worst", "-1"], "--worst"),
    (["import-seed", M, "--num-classes", "0", "--out", "s.pt"], "--num-classes"),
    (["import-seed", M, "--num-classes", "11", "--out", "s.pt", "--img-size", "8", "8"], "--img-size"),
]


@pytest.mark.parametrize("args,flag", RANGES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in RANGES])
def test_numbers_out_of_range_are_one_line(tmp_path, args, flag):
    done = subprocess.run([sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert_one_line_error(done, flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing is created for a refused command"


@pytest.mark.parametrize("args,fragment", [
    (["train", "--out", "r"], "--data"),
    (["export", M, "--out", "e", "--no-such-flag"], "--no-such-flag"),
    (["no-such-command"], "no-such-command"),
])  # fmt: skip
def test_usage_errors_are_one_line(tmp_path, args, fragment):
    done = subprocess.run([sys.executable, "-m", "edgeseg", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert_one_line_error(done, fragment, "--help")


# --- checks that run before the work -----------------------------------------------------------
def test_unknown_calib_method_is_refused_before_the_fp32_step(small_checkpoint, camvid, tmp_path):
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--precision", "int8",
                   "--calib", _calib(camvid), "--calib-method", "foo")  # fmt: skip
    assert_one_line_error(done, "--calib-method foo", "percentile")
    assert "fp32:" not in done.stdout and list(tmp_path.iterdir()) == []


def test_unknown_keep_fp_node_is_refused_before_calibrating(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "new" / "deeper" / "e"
    done = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--precision", "int8",
                   "--calib", _calib(camvid), "--keep-fp", "NoSuchNode")  # fmt: skip
    assert_one_line_error(done, "--keep-fp NoSuchNode", "Conv")
    assert "calibrating" not in done.stdout
    assert list(tmp_path.iterdir()) == [], "a failed export leaves no folder it made, not even parents"


def test_a_wrong_calib_is_refused_even_when_no_int8_model_needs_it(small_checkpoint, camvid, tmp_path):
    """A missing --calib path was passed over in silence with --precision fp32; now it is refused, and a good
    one that no step uses is named in a note."""
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--precision", "fp32",
                   "--calib", tmp_path / "nowhere")  # fmt: skip
    assert_one_line_error(done, f"--calib {tmp_path / 'nowhere'}", "no such manifest, image folder or glob")
    assert done.stdout == "" and list(tmp_path.iterdir()) == []
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--calib", _calib(camvid))
    assert done.returncode == 0, done.stderr[-1500:]
    assert f"note: --calib {_calib(camvid)} is not used: only --precision int8 calibrates" in done.stdout


def test_int8_needs_opset_13(small_checkpoint, camvid, tmp_path):
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--precision", "int8",
                   "--calib", _calib(camvid), "--opset", "12")  # fmt: skip
    assert_one_line_error(done, "--opset 12", "13")


def test_name_cannot_leave_the_folder(small_checkpoint, tmp_path):
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--name", "../evil")
    assert_one_line_error(done, "--name", "'../evil'")
    assert list(tmp_path.iterdir()) == []


def _read_only_place(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses new files
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("case", ["eval-json-folder", "eval-json-read-only", "eval-json-under-file",
                                  "eval-plots-file", "bench-json-folder", "bench-markdown-folder",
                                  "calib-data-out-file", "import-seed-out-folder"])  # fmt: skip
def test_output_paths_are_checked_before_the_work(small_checkpoint, camvid, tmp_path, case):
    folder, a_file = tmp_path / "folder", tmp_path / "a_file"
    folder.mkdir()
    a_file.write_text("x")
    data = f"camvid:{camvid}"
    args, fragments = {
        "eval-json-folder": (["eval", small_checkpoint, "--data", data, "--json", folder], ["--json", "is a folder"]),
        "eval-json-read-only": (["eval", small_checkpoint, "--data", data, "--json", _read_only_place(tmp_path) / "m.json"],
                                ["--json", "cannot write"]),
        "eval-json-under-file": (["eval", small_checkpoint, "--data", data, "--json", a_file / "m.json"],
                                 ["--json", "is a file, not a folder"]),
        "eval-plots-file": (["eval", small_checkpoint, "--data", data, "--plots", a_file], ["--plots", "is a file"]),
        "bench-json-folder": (["bench", small_checkpoint, "--json", folder], ["--json", "is a folder"]),
        "bench-markdown-folder": (["bench", small_checkpoint, "--json", tmp_path / "b.json", "--markdown", folder],
                                  ["--markdown", "is a folder"]),
        "calib-data-out-file": (["calib-data", "--data", data, "--out", a_file], ["--out", "is a file"]),
        "import-seed-out-folder": (["import-seed", small_checkpoint, "--num-classes", "11", "--out", folder],
                                   ["--out", "is a folder"]),
    }[case]  # fmt: skip
    started = time.monotonic()
    done = run_cli(*args)
    assert_one_line_error(done, *fragments)
    assert time.monotonic() - started < 60 and "images" not in done.stdout, "refused before scoring anything"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ro") == ["a_file", "folder"]


# --- profiles with values of the wrong type ---------------------------------------------------
PROFILES = [
    ('img_size = "abc"\n', "img_size"),
    ("img_size = 5\n", "img_size"),
    ("img_size = [360]\n", "img_size"),
    ('batch = "x"\n', "batch"),
    ("batch = 1.5\n", "batch"),
    ("opset = 3\n", "opset"),
    ("argmax = 1\n", "argmax"),
    ('precisions = "fp32"\n', "precisions"),
    ("[calibration]\nmethod = 5\n", "[calibration] method"),
    ('[calibration]\npercentile = "high"\n', "[calibration] percentile"),
    ("[calibration]\nimages = 0\n", "[calibration] images"),
    ("[tensorrt]\nworkspace_mib = -1\n", "[tensorrt] workspace_mib"),
    ("[tensorrt]\nversion = 10\n", "[tensorrt] version"),
]


@pytest.mark.parametrize("text,key", PROFILES, ids=[t.strip().replace("\n", " ") for t, _ in PROFILES])
def test_profile_values_of_the_wrong_type(small_checkpoint, tmp_path, text, key):
    profile = tmp_path / "bad.toml"
    profile.write_text(text)
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--profile", profile)
    assert_one_line_error(done, key)
    assert not (tmp_path / "e").exists()


# --- outputs never replaced silently or mixed -------------------------------------------------
def test_exist_ok_refuses_to_replace_a_folder_that_is_not_an_export(small_checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", out, "--no-verify"), "--exist-ok")
    done = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--exist-ok")
    assert_one_line_error(done, "--out", "not an edgeseg export")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_out_that_is_a_file(small_checkpoint, tmp_path):
    (tmp_path / "e").write_text("x")
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify"), "--out", "is a file")


@pytest.mark.parametrize("out,fragment", [(".", "current folder"), ("/", "root")])
def test_out_that_the_swap_cannot_replace(small_checkpoint, tmp_path, out, fragment):
    done = subprocess.run([sys.executable, "-m", "edgeseg", "export", str(small_checkpoint), "--out", out, "--no-verify",
                           "--exist-ok"], capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert_one_line_error(done, "--out", fragment)
    assert list(tmp_path.iterdir()) == []


def test_exist_ok_replaces_the_whole_earlier_export(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "e"
    first = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--precision", "fp32,int8",
                    "--calib", _calib(camvid), "--calib-images", "32")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert {"model.int8.onnx", "model.calib.json"} <= {p.name for p in out.iterdir()}
    mode = stat.S_IMODE((out / "model.calib.json").stat().st_mode)
    assert mode == stat.S_IMODE((out / "model.fp32.onnx").stat().st_mode) and mode & stat.S_IROTH, oct(mode)
    second = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--img-size", "64", "96", "--exist-ok")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.fp32.onnx", "report.html"]
    assert json.loads((out / "export.json").read_text())["options"]["img_size"] == [64, 96]
    assert _hidden(tmp_path) == []


def test_second_export_into_the_same_out_is_refused_while_the_first_runs(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "e"
    first = _start("export", small_checkpoint, "--out", out, "--no-verify", "--precision", "int8",
                   "--calib", _calib(camvid), "--calib-images", "64", out=tmp_path / "first.log")  # fmt: skip
    try:
        assert wait_for(lambda: (tmp_path / ".e.lock").exists() or first.poll() is not None, 120)
        second = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--exist-ok")
        assert first.poll() is None, "the first export must still be running for this test to mean anything"
        assert_one_line_error(second, "another export is writing", f"pid {first.pid}", "choose another --out")
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
    assert "model.int8.onnx" in {p.name for p in out.iterdir()}
    assert _hidden(tmp_path) == [], "no lock file, no staging folder left behind"


def _tmp_calibration_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if "edgeseg-calib" in p.name or p.name.startswith("ort.quant")}


def test_sigkill_leaves_staging_that_a_rerun_cleans(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "e"
    before = _tmp_calibration_folders()
    args = ("export", small_checkpoint, "--out", out, "--no-verify", "--precision", "int8", "--calib", _calib(camvid),
            "--calib-images", "64")  # fmt: skip
    victim = _start(*args, out=tmp_path / "victim.log")
    staging = lambda: [p for p in tmp_path.glob(".e.export-*") if any(p.glob(".edgeseg-calib-*"))]  # noqa: E731
    assert wait_for(lambda: bool(staging()) or victim.poll() is not None, 180), "calibration never started"
    victim.kill()
    victim.wait()
    assert staging() and not out.exists(), "SIGKILL mid-calibration leaves only a hidden staging folder"
    assert _tmp_calibration_folders() == before, "calibration temporaries live in the staging folder, not /tmp"
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert _hidden(tmp_path) == [] and (out / "model.int8.onnx").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_a_swap_cut_short_is_undone_by_the_next_export(small_checkpoint, tmp_path):
    out = tmp_path / "e"
    assert run_cli("export", small_checkpoint, "--out", out, "--no-verify").returncode == 0
    os.rename(out, tmp_path / ".e.replaced-999999-deadbeef")  # what dying between the two renames leaves
    (tmp_path / ".e.export-999999-deadbeef").mkdir()  # and the dead export's staging folder
    done = run_cli("export", small_checkpoint, "--out", out, "--no-verify", "--img-size", "64", "96", "--exist-ok")
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout
    assert json.loads((out / "export.json").read_text())["options"]["img_size"] == [64, 96]
    assert _hidden(tmp_path) == []


# --- Ctrl-C ------------------------------------------------------------------------------------
def test_ctrl_c_during_export_says_interrupted_and_leaves_nothing(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "deep" / "e"
    log = tmp_path / "export.log"
    run = _start("export", small_checkpoint, "--out", out, "--no-verify", "--precision", "int8",
                 "--calib", _calib(camvid), "--calib-images", "64", out=log)  # fmt: skip
    assert wait_for(lambda: "calibrating" in log.read_text() or run.poll() is not None, 180)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted"], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.log"], "no --out, no parents, no staging, no lock"


def test_ctrl_c_during_train_says_interrupted_and_leaves_no_empty_out(camvid, tmp_path):
    out = tmp_path / "runs" / "r"
    run = _start("train", "--data", f"camvid:{camvid}", "--out", out, "--img-size", "64", "64", "--epochs", "1",
                 "--batch-size", "2", "--workers", "0", "--train-limit", "400", out=tmp_path / "train.log")  # fmt: skip
    assert wait_for(lambda: out.exists() or run.poll() is not None, 180), "train never made its --out"
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1:] == ["interrupted"] and "Traceback" not in stderr, stderr
    assert not (tmp_path / "runs").exists()


def test_failed_train_removes_the_out_it_made(camvid, tmp_path):
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", tmp_path / "runs" / "r", "--init", tmp_path / "nope.pt",
                   "--img-size", "64", "64", "--epochs", "1", "--train-limit", "2", "--val-limit", "2")  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if not line.startswith("note: ")]  # notes about the data
    assert done.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: ") and "nope.pt" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- one place for each fact ------------------------------------------------------------------
def _export_in_a_subprocess(args: list, preexec_fn=None, wrap: list | None = None) -> subprocess.CompletedProcess:
    command = [*(wrap or []), sys.executable, "-m", "edgeseg", "export", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=preexec_fn)


def test_an_export_past_the_file_size_limit_is_one_line_and_leaves_nothing(small_checkpoint, tmp_path):
    """``ulimit -f`` (EFBIG): works for any user. The FP32 model is 23 MB; the limit lets 5 MB through."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000))

    out = tmp_path / "new" / "e"
    done = _export_in_a_subprocess([small_checkpoint, "--out", out, "--no-verify"], preexec_fn=limit)
    assert_one_line_error(done, f"--out {out}", "file-size limit (ulimit -f)", "nothing was saved")
    assert list(tmp_path.iterdir()) == [], "no staging folder, no partial model, not even the parent it made"


@pytest.mark.skipif(not can_mount_a_private_tmpfs(), reason="needs root and unshare(1) to mount a private 8 MB tmpfs")
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(small_checkpoint, tmp_path):
    """ENOSPC for real: --out lies on an 8 MB tmpfs mounted in a mount namespace of the export's own."""
    disk, listing = tmp_path / "disk", tmp_path / "listing.txt"
    disk.mkdir()
    out = disk / "e"
    script = 'disk=$1; listing=$2; shift 2; mount -t tmpfs -o size=8m tmpfs "$disk" || exit 99; "$@"; code=$?; ls -A "$disk" > "$listing"; exit $code'
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(disk), str(listing)]
    done = _export_in_a_subprocess([small_checkpoint, "--out", out, "--no-verify"], wrap=wrap)
    assert_one_line_error(done, f"--out {out}", "the disk is full (No space left on device)", "nothing was saved")
    assert listing.read_text().split() == [], "nothing is left on the full disk: no staging folder, no lock, no model"


def test_one_default_calibration_method():
    from edgeseg.export.exporter import ExportOptions
    from edgeseg.export.quantize import DEFAULT_METHOD, DEFAULT_PERCENTILE, CalibrationSettings

    assert CalibrationSettings().method == ExportOptions().calib_method == DEFAULT_METHOD
    assert CalibrationSettings().percentile == ExportOptions().percentile == DEFAULT_PERCENTILE


def test_backends_declare_their_options_and_unknown_ones_are_errors(small_checkpoint):
    import importlib

    from edgeseg.core.errors import EdgesegError
    from edgeseg.runtime.backends import _REGISTRY, open_backend

    for name, (module, cls, _, options) in _REGISTRY.items():
        try:
            load = getattr(importlib.import_module(module), cls).load
        except ImportError as err:  # pragma: no cover - a backend whose library is missing here
            pytest.skip(f"{name}: {err}")
        params = inspect.signature(load).parameters
        named = {key for key, p in params.items() if p.kind is not p.VAR_KEYWORD} - {"path", "device"}
        assert named == set(options), name
        assert not [p for p in params.values() if p.kind is p.VAR_KEYWORD], f"{name}.load swallows options with **"
    with pytest.raises(EdgesegError, match="thread"):
        open_backend(small_checkpoint, thread=2)  # a typo of threads
