import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, camvid) -> Path:
    """An untrained 11-class CamVid model at 96x128 input: real weights, seconds to run."""
    import torch

    from edgeseg.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.data import resolve_dataset
    from edgeseg.meta import ModelMeta
    from edgeseg.model import build_model

    spec = resolve_dataset(f"camvid:{camvid}")
    meta = ModelMeta(
        num_classes=spec.num_classes, classes=spec.classes, palette=spec.palette,
        ignore_index=spec.ignore_index, input_size=(96, 128),
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "small.pt"
    return save_checkpoint(checkpoint_dict(build_model(spec.num_classes).eval(), meta), path)


def run_cli(*args: str, timeout: float = 300):
    """``edgeseg ARGS`` in a subprocess, as a user runs it."""
    import subprocess

    command = [sys.executable, "-m", "edgeseg", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_one_line_error(done, *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-1500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
