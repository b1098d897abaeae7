#!/usr/bin/env bash
# The main job on its defaults, in any new shell on a fresh clone: set up .venv (once), prepare
# Flower-17 (from ../shared when it is there, else downloaded), train the report's CAM head,
# evaluate every saved epoch, write a report page of its maps on 12 masked images, draw the CAMs
# of 12 seeded validation images. Most of the time is the one-off feature cache (about 26 min on
# 2 quiet cores).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
PY=.venv/bin/python
SHARED=${FLOWERCAM_SHARED:-../shared}
if [ -z "${BACKBONE_WEIGHTS:-}" ] && [ -f "$SHARED/weights/vgg16_imagenet_features.pth" ]; then
    export BACKBONE_WEIGHTS="$SHARED/weights/vgg16_imagenet_features.pth"  # else: downloaded
fi
SOURCE=()
[ -d "$SHARED/flowers17" ] && SOURCE=(--source "$SHARED/flowers17")
"$PY" augment.py "${SOURCE[@]}"
"$PY" main.py
RUN=$(ls -td model/TS*/ | head -1)  # the run main.py just made
"$PY" evaluate.py -d "$RUN"
"$PY" evaluate.py -d "$RUN" --cam-metrics --masked-only --limit 12 --figures localization
"$PY" inference.py -m "$RUN"
echo "done: open ${RUN}report.html (the maps, their figures, the gallery) and output/*.png"
