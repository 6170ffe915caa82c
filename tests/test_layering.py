"""Torch stays out of the modules a Jetson runtime needs: they import with torch made unimportable.
And the build stage needs no image library: it imports with OpenCV made unimportable."""

import subprocess
import sys


def blocker(module: str) -> str:
    """Python code that makes ``module`` unimportable in the process that runs it."""
    return f"""
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "{module}" or name.startswith("{module}."):
            raise ImportError("{module} is blocked in this test")
sys.meta_path.insert(0, _Blocked())
"""


BLOCK_TORCH = blocker("torch")


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120)


def test_torch_free_modules_import_without_torch():
    done = _run_without_torch(
        "import edgeseg.data, edgeseg.core.metrics, edgeseg.evaluate.scoring, edgeseg.runtime, edgeseg.core.meta, edgeseg.cli\n"
        "import edgeseg.deploy.bench, edgeseg.core.sysinfo, edgeseg.evaluate.fidelity, edgeseg.export.calibration, edgeseg.runtime.trt.manifest\n"
        "import edgeseg.runtime.backends.tensorrt_backend, edgeseg.runtime.backends.onnxruntime_backend\n"
        "from edgeseg.runtime import Segmenter, overlay  # the package's names load on first use\n"
        "import edgeseg.video.live, edgeseg.report, edgeseg.deploy.verify\n"
        "assert 'torch' not in sys.modules\n"
        "import numpy as np\n"
        "from edgeseg.runtime.preprocess import Preprocessor\n"
        "from edgeseg.core.meta import Preprocess\n"
        "p = Preprocessor(Preprocess(), (64, 96))\n"
        "place = p(np.full((30, 90, 3), 200, np.uint8))\n"
        "assert (place.top, place.height, place.width) == (16, 32, 96), place\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_blocker_really_blocks_torch():
    done = _run_without_torch("import torch")
    assert done.returncode != 0 and "blocked" in done.stderr


def test_cli_help_without_torch():
    done = _run_without_torch("sys.argv = ['edgeseg', '--help']\nfrom edgeseg.cli import run\nrun()")
    assert done.returncode == 0 and "train" in done.stdout, done.stderr[-2000:]


BLOCK_CV2 = blocker("cv2")


def test_the_build_stage_imports_no_image_library():
    """Building an engine needs no OpenCV: `edgeseg build` asked for it first, through the runtime package."""
    code = BLOCK_CV2 + (
        "import edgeseg.deploy.build, edgeseg.cli\n"
        "from edgeseg.runtime.backends.tensorrt_backend import gpu_index\n"
        "from edgeseg.runtime.trt import support\n"
        "assert 'cv2' not in sys.modules, 'cv2 imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    blocked = subprocess.run([sys.executable, "-c", BLOCK_CV2 + "import cv2"], capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and "cv2 is blocked" in blocked.stderr


def test_build_without_opencv_asks_for_tensorrt_not_opencv(small_checkpoint, tmp_path):
    """In an environment with no OpenCV at all, `edgeseg build` gets as far as looking for TensorRT."""
    from conftest import run_without, site_without
    from edgeseg.export.exporter import export_onnx

    bundle = export_onnx(small_checkpoint, tmp_path / "bundle", precisions=("fp32", "fp16"), verify=False).onnx_path.parent
    done = run_without(site_without(tmp_path, "cv2", "opencv"), "build", bundle)
    assert done.returncode == 2 and "TensorRT" in done.stderr and "OpenCV" not in done.stderr, done.stderr[-1500:]
