#!/usr/bin/env bash
# The main job on the bundled default: the CamVid reference model scored on CamVid val, a few val
# frames segmented, then the model exported to FP32/FP16/INT8 ONNX with its parity and fidelity proofs. Sets up .venv first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

CAMVID="${EDGESEG_CAMVID:-../shared/datasets/camvid}"
DATA="camvid:$CAMVID"
MODEL="${EDGESEG_MODEL:-models/reference/best.pt}"
OUT="${EDGESEG_OUT:-out/main}"
edgeseg=.venv/bin/edgeseg

CALIB="${EDGESEG_CALIB:-calib_data/camvid-train-256}"

echo "== 1/4 evaluate $MODEL on CamVid val"
$edgeseg eval "$MODEL" --data "$DATA" --split val --json "$OUT/eval/camvid_val.json"

echo "== 2/4 segment a few CamVid val frames"
rm -rf "$OUT/predict"
$edgeseg predict "$MODEL" "$CAMVID/images/val/0016E5_080[0-4]*.jpg" --out "$OUT/predict"

echo "== 3/4 export FP32, FP16 and INT8 ONNX + TensorRT calibration cache, with the parity and fidelity proofs"
$edgeseg export "$MODEL" --out "$OUT/export" --data "$DATA" --precision fp32,fp16,int8 --calib "$CALIB" --exist-ok

echo "== 4/4 benchmark the exported models against PyTorch (360x480, 2 threads, CamVid val frames)"
$edgeseg bench "$OUT/export/model.fp32.onnx" "$OUT/export/model.int8.onnx" "$OUT/export/model.int8.qdq.onnx" "$MODEL" \
    --threads 2 --iters 20 --warmup 3 --data "$DATA" --json "$OUT/bench/bench.json"

echo "done: metrics in $OUT/eval, masks and overlays in $OUT/predict, models and reports (parity.json, fidelity.json, export.json) in $OUT/export, latency in $OUT/bench"
