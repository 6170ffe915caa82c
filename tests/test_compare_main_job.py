"""scripts/compare_main_job.py, the before/after check of the main job's proofs, run as a user runs it."""

import json
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "compare_main_job.py"
FILES = ("export/export.json", "export/parity.json", "export/fidelity.json", "eval/camvid.json",
         "verify/fp16.json", "verify/int8.json")  # fmt: skip


def _run_folder(folder, miou=0.3728, seconds=10.0, sha="ab"):
    for name in FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"models": [{"miou": miou, "per_class": [0.9, 0.1]}], "seconds": {"total": seconds},
                                    "files": {"int8": {"sha256": sha}}}))  # fmt: skip
    return folder


def _compare(before, after):
    return subprocess.run([sys.executable, str(SCRIPT), str(before), str(after)], capture_output=True, text=True, timeout=60)


def test_timings_aside_equal_runs_pass_and_a_changed_figure_fails_by_name(tmp_path):
    before = _run_folder(tmp_path / "before")
    same = _compare(before, _run_folder(tmp_path / "slower", seconds=99.0))
    assert same.returncode == 0 and same.stdout.count("0 differ, 0 hashes differ") == len(FILES), same.stdout
    changed = _compare(before, _run_folder(tmp_path / "changed", miou=0.3722))
    assert changed.returncode == 1
    assert "/models[0]/miou: 0.3728 -> 0.3722" in changed.stdout


def test_a_changed_file_hash_is_reported_but_is_not_a_changed_figure(tmp_path):
    done = _compare(_run_folder(tmp_path / "a"), _run_folder(tmp_path / "b", sha="cd"))
    assert done.returncode == 0
    assert "/files/int8/sha256: 'ab' -> 'cd'" in done.stdout and "0 differ, 1 hashes differ" in done.stdout
