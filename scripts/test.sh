#!/usr/bin/env bash
# Sets up (with the test tools) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# ffmpeg serves the live stream in the video tests (they skip, saying so, without it).
if ! command -v ffmpeg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q ffmpeg >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q ffmpeg >/dev/null 2>&1) \
        || echo "note: could not install ffmpeg; the live-stream test will be skipped"
fi
# Debian's Chromium and its driver, for the browser tests (the live view, the HTML reports): no browser download.
# EDGESEG_REQUIRE_BROWSER=1 turns their skip into a failure, so they always run here (and so in CI).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1) \
        || echo "note: could not install chromium and chromium-driver; the browser tests will fail"
fi
export EDGESEG_REQUIRE_BROWSER="${EDGESEG_REQUIRE_BROWSER:-1}"
# OpenVINO, so the OpenVINO backend's tests run (tests/test_openvino_backend.py skips, saying so, without it).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[openvino]" \
    || echo "note: could not install openvino; the OpenVINO backend tests will be skipped"
# tensorrt-stubs for the type check of the TensorRT modules, into .typecheck/stubs only (never the venv).
# Exit 3 means the package index is unreachable: tests/test_typecheck_trt.py then skips, saying so.
.venv/bin/python scripts/trt_stubs.py || [ $? -eq 3 ]
exec .venv/bin/python -m pytest -q -rs "$@"
