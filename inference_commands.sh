#!/usr/bin/env bash
# Regenerate the report's CAM figures from the grid's checkpoints (grid.py wrote output/grid_runs.json):
# the three report outputs (labelled grid, compact grid, strip) for the report's four chosen models
# (CAM lr 1e-4, also for LayerCAM; ReCAM minmax 2e-4, sigmoid 5e-5, relu 1e-4), then the comparison
# figure (the report's Figure 8), all in output/.
#
#   bash inference_commands.sh              # seed 0, run from the folder grid.py ran in (the repo root)
#   bash inference_commands.sh 3 --colormap jet --device cuda     # seed 3, extra flags for every call
#
# Offline: export BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_features.pth (or pass
# --backbone-weights). GRID_RUNS=path/to/grid_runs.json overrides output/grid_runs.json.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python}"
[ -x "$HERE/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$HERE/.venv/bin/python"
SEED="${1:-0}"
COMMON=(--grid-runs "${GRID_RUNS:-output/grid_runs.json}" -s "$SEED" "${@:2}")
# the report's four chosen models: CAM lr 1e-4 (also for LayerCAM), ReCAM minmax 2e-4,
# ReCAM sigmoid 5e-5, ReCAM relu 1e-4
PAIRS=(CAM-lr0.0001:CAM ReCAM-minmax-lr0.0002:ReCAM ReCAM-sigmoid-lr5e-05:ReCAM
       ReCAM-relu-lr0.0001:ReCAM CAM-lr0.0001:LayerCAM)

for pair in "${PAIRS[@]}"; do  # configuration:method -> labelled grid, compact grid, strip
    "$PY" "$HERE/inference.py" --checkpoint "${pair%%:*}" --method "${pair##*:}" "${COMMON[@]}"
done
"$PY" "$HERE/inference.py" --compare "${PAIRS[@]}" "${COMMON[@]}"
