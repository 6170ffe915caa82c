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
