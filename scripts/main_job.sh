#!/usr/bin/env bash
# The main job on the bundled default: the CamVid reference model scored on CamVid val,
# then a few val frames segmented. Sets up .venv first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

CAMVID="${EDGESEG_CAMVID:-../shared/datasets/camvid}"
DATA="camvid:$CAMVID"
MODEL="${EDGESEG_MODEL:-models/camvid/best.pt}"
OUT="${EDGESEG_OUT:-out/main}"
edgeseg=.venv/bin/edgeseg

echo "== 1/2 evaluate $MODEL on CamVid val"
$edgeseg eval "$MODEL" --data "$DATA" --split val --json "$OUT/eval/camvid_val.json"

echo "== 2/2 segment a few CamVid val frames"
rm -rf "$OUT/predict"
$edgeseg predict "$MODEL" "$CAMVID/images/val/0016E5_080[0-4]*.jpg" --out "$OUT/predict"

echo "done: metrics in $OUT/eval, masks and overlays in $OUT/predict"
