#!/bin/bash
# device checks, third run: channels-last on CUDA too (flowercam/model/vgg.py channels_last)
export PYTHONUNBUFFERED=1
M="CAM GradCAM GradCAM++ LayerCAM ScoreCAM HiResCAM GradCAMElementWise XGradCAM EigenGradCAM ShapleyCAM FinerCAM EigenCAM KPCACAM FEM AblationCAM SmoothGradCAM++ FullGrad"
B="python3 -m benchmarks.cams --device cuda --images-dir .dev/jpg --backbone-weights /tmp/w.pth"
{
date -u
python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.dev/w.pth.xz'), open('/tmp/w.pth','wb'))"
echo "== pytest"; timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_devices.py -rs
echo "== costs"; timeout 90 $B --only costs --num-images 2 --aggregate CAM --repeats 3 --methods $M ISCAM SSCAM --output $OUT/costs_cuda_cl.json
echo "== cams"; timeout 40 $B --only cams --repeats 5 --output $OUT/cams_cuda_cl.json
echo "== devices"; timeout 60 $B --only devices --num-images 2 --methods $M --output $OUT/devices_cuda_cl.json
date -u
} 2>&1 | tee $OUT/device3.log
