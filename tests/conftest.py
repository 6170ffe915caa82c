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

    from edgeseg.model.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.data import resolve_dataset
    from edgeseg.core.meta import ModelMeta
    from edgeseg.model.network import build_model

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


@pytest.fixture(scope="session")
def video_model(small_checkpoint, tmp_path_factory) -> Path:
    """The small checkpoint as an FP32 ONNX model, for the video tests."""
    from edgeseg.export.exporter import export_onnx

    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("video_model") / "m", verify=False).onnx_path


CLIP_FRAMES = 12


@pytest.fixture(scope="session")
def camvid_clip(camvid, tmp_path_factory) -> Path:
    """CLIP_FRAMES CamVid val frames as a 10 FPS, 480x360 MJPG .avi."""
    import cv2

    path = tmp_path_factory.mktemp("clip") / "camvid_val.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 360))
    for image_path in sorted((camvid / "images" / "val").glob("*.jpg"))[:CLIP_FRAMES]:
        writer.write(cv2.imread(str(image_path)))
    writer.release()
    return path


def decoded_frames(path, limit: int = 1000) -> list:
    """The frames of a video file, as OpenCV decodes them (at most ``limit``)."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def wait_for(predicate, seconds: float) -> bool:
    """Poll ``predicate`` every 0.1 s until it holds (True) or ``seconds`` pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def error_of(func, *args) -> str:
    """The one-line EdgesegError message ``func(*args)`` raises."""
    from edgeseg.core.errors import EdgesegError

    with pytest.raises(EdgesegError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def site_without(tmp_path: Path, *prefixes: str) -> Path:
    """This environment's site-packages less the entries starting with ``prefixes`` (symlinks, no copies)."""
    import numpy as np

    site = Path(np.__file__).parents[1]  # the site-packages this environment imports from
    target = tmp_path / "site"
    target.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(prefixes) or name.endswith(".pth") or name.startswith("__editable__"):
            continue  # .pth files and the editable finder would bring the whole environment back
        (target / entry.name).symlink_to(entry)
    return target


def run_without(site: Path, *args: str, timeout: float = 120):
    """``edgeseg ARGS`` with site-packages replaced by ``site`` (python -S: no site, only these paths):
    a real environment that lacks what ``site_without`` left out."""
    import subprocess

    env = {"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-S", "-m", "edgeseg", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def can_mount_a_private_tmpfs() -> bool:
    """Whether a tmpfs can be mounted in a mount namespace of its own (root and unshare(1)): a real full disk."""
    import subprocess

    probe = ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def chromium_driver():
    """Headless Chromium (tests/browser.py): skips without it, fails instead under EDGESEG_REQUIRE_BROWSER=1."""
    import browser as chromium

    driver = chromium.start()
    yield driver
    chromium.stop(driver)


@pytest.fixture()
def browser(chromium_driver):
    """The module's Chromium on an empty page, its logs emptied: each test sees only its own pages."""
    import browser as chromium

    chromium.blank(chromium_driver)
    return chromium_driver


@pytest.fixture(scope="session")
def int8_bundle(small_checkpoint, camvid, tmp_path_factory) -> Path:
    """The small checkpoint exported to FP32, FP16 and both INT8 forms with every proof and report.html."""
    from edgeseg.export.calibration import make_calibration_manifest
    from edgeseg.export.exporter import export_onnx

    calib = make_calibration_manifest(f"camvid:{camvid}", "train", 32, tmp_path_factory.mktemp("calib") / "camvid-32")
    out = tmp_path_factory.mktemp("bundle") / "export"
    export_onnx(small_checkpoint, out, data=f"camvid:{camvid}", num_verify=2, fidelity_images=2,
                verify_images=4, precisions=("fp32", "fp16", "int8"), calib=str(calib.parent),
                calib_images=8, trt_version="8.5.2", verify_thresholds=("fp16=0.995", "int8=0.85"))  # fmt: skip
    return out
