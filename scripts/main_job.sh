#!/usr/bin/env bash
# The main job on the bundled default: the CamVid reference model scored on drive 0006R0, which it never trained on
# (the `heldout` split), and on CamVid val; a few held-out frames segmented; the model exported to FP32/FP16/INT8 ONNX
# with its parity and fidelity proofs on the held-out drive; verify, bench, and a video of the held-out drive.
# Sets up .venv first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

CAMVID="${EDGESEG_CAMVID:-../shared/datasets/camvid}"
DATA="camvid:$CAMVID"
MODEL="${EDGESEG_MODEL:-models/reference/best.pt}"
OUT="${EDGESEG_OUT:-out/main}"
edgeseg=.venv/bin/edgeseg

CALIB="${EDGESEG_CALIB:-calib_data/camvid-train-heldout-256}"  # no frame of drive 0006R0
SPLIT="${EDGESEG_SPLIT:-heldout}"  # drive 0006R0: the reference never trained on it

echo "== 1/6 evaluate $MODEL on the held-out drive and on CamVid val (a drive training also saw)"
$edgeseg eval "$MODEL" --data "$DATA" --split "$SPLIT,val" --json "$OUT/eval/camvid.json" --exist-ok

echo "== 2/6 segment a few frames of the held-out drive"
rm -rf "$OUT/predict"
$edgeseg predict "$MODEL" "$CAMVID/images/train/0006R0_f021*.jpg" --out "$OUT/predict"

echo "== 3/6 export FP32, FP16 and INT8 ONNX + TensorRT calibration cache, with the parity and fidelity proofs"
$edgeseg export "$MODEL" --out "$OUT/export" --data "$DATA" --precision fp32,fp16,int8 --calib "$CALIB" \
    --split "$SPLIT" --exist-ok

echo "== 4/6 verify the FP16 and INT8 models against the PyTorch reference labels in the bundle (as on the device)"
for precision in fp16 int8; do
    $edgeseg verify "$OUT/export/model.$precision.onnx" --threads 2 --json "$OUT/verify/$precision.json" --exist-ok
done

echo "== 5/6 benchmark the exported models against PyTorch (360x480, 2 threads, CamVid val frames)"
$edgeseg bench "$OUT/export/model.fp32.onnx" "$OUT/export/model.int8.onnx" "$OUT/export/model.int8.qdq.onnx" "$MODEL" \
    --threads 2 --iters 20 --warmup 3 --data "$DATA" --json "$OUT/bench/bench.json" --exist-ok

echo "== 6/6 live-video pipeline: the INT8 model over a 480x360 clip of the held-out drive 0006R0, into an mp4"
.venv/bin/python scripts/make_clip.py --camvid "$CAMVID" --folder train --sequence 0006R0 --frames 101 \
    --out "$OUT/video/camvid_heldout_clip.mp4"
$edgeseg run "$OUT/export/model.int8.onnx" --source "$OUT/video/camvid_heldout_clip.mp4" --out "$OUT/video/camvid_heldout_int8.mp4" \
    --no-show --threads 2 --json "$OUT/video/run.json" --exist-ok

echo "done: metrics in $OUT/eval, masks and overlays in $OUT/predict, models and reports (parity.json, fidelity.json, export.json) in $OUT/export, latency in $OUT/bench"
echo "      segmented video: $OUT/video/camvid_heldout_int8.mp4 (statistics in $OUT/video/run.json)"
