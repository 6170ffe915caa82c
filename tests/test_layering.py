"""Torch stays out of the modules a Jetson runtime needs: they import with torch made unimportable."""

import subprocess
import sys

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120)


def test_torch_free_modules_import_without_torch():
    done = _run_without_torch(
        "import edgeseg.data, edgeseg.metrics, edgeseg.evaluate, edgeseg.runtime, edgeseg.meta, edgeseg.cli\n"
        "import edgeseg.bench, edgeseg.sysinfo, edgeseg.fidelity, edgeseg.calibration, edgeseg.engine_manifest\n"
        "import edgeseg.runtime.backends.tensorrt_backend, edgeseg.runtime.backends.onnxruntime_backend\n"
        "import edgeseg.video.live, edgeseg.report, edgeseg.verify\n"
        "assert 'torch' not in sys.modules\n"
        "import numpy as np\n"
        "from edgeseg.runtime.preprocess import Preprocessor\n"
        "from edgeseg.meta import Preprocess\n"
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
