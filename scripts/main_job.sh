#!/usr/bin/env bash
# The main job on the bundled default: the CamVid reference model scored on CamVid val,
# then a few val frames segmented. Sets up .venv first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

CAMVID="${EDGESEG_CAMVID:-../shared/datasets/camvid}"
DATA="camvid:$CAMVID"
MODEL="${EDGESEG_MODEL:-models/reference/best.pt}"
OUT="${EDGESEG_OUT:-out/main}"
edgeseg=.venv/bin/edgeseg

echo "== 1/3 evaluate $MODEL on CamVid val"
$edgeseg eval "$MODEL" --data "$DATA" --split val --json "$OUT/eval/camvid_val.json"

echo "== 2/3 segment a few CamVid val frames"
rm -rf "$OUT/predict"
$edgeseg predict "$MODEL" "$CAMVID/images/val/0016E5_080[0-4]*.jpg" --out "$OUT/predict"

echo "== 3/3 export to ONNX (FP32) with the parity proof, then score the ONNX model on CamVid val"
$edgeseg export "$MODEL" --out "$OUT/export" --data "$DATA" --exist-ok
$edgeseg eval "$OUT/export/model.fp32.onnx" --data "$DATA" --split val --json "$OUT/eval_onnx/camvid_val.json"

echo "done: metrics in $OUT/eval and $OUT/eval_onnx, masks and overlays in $OUT/predict, ONNX and parity.json in $OUT/export"
