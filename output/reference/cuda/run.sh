#!/bin/bash
# device checks of session 14: CUDA tests, then the CAM benchmarks on the H200 with the real weights
export PYTHONUNBUFFERED=1
M="CAM GradCAM GradCAM++ LayerCAM ScoreCAM HiResCAM GradCAMElementWise XGradCAM EigenGradCAM ShapleyCAM FinerCAM EigenCAM KPCACAM FEM AblationCAM SmoothGradCAM++ FullGrad ISCAM SSCAM"
B="python3 -m benchmarks.cams --device cuda --images-dir .dev/jpg --backbone-weights /tmp/w.pth"
{
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
python3 -c "import sys,torch,torchvision;print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), torch.backends.cudnn.allow_tf32)"
python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.dev/w.pth.xz'), open('/tmp/w.pth','wb'))"; sha256sum /tmp/w.pth
echo "== pytest"; timeout 150 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_devices.py -rs
echo "== costs"; timeout 150 $B --only costs --num-images 2 --aggregate CAM --repeats 3 --methods $M --output $OUT/costs_cuda.json
echo "== layout"; timeout 60 $B --only layout --num-images 32 --repeats 5 --output $OUT/layout_cuda.json
echo "== cams"; timeout 60 $B --only cams --repeats 5 --output $OUT/cams_cuda.json
echo "== devices"; timeout 200 $B --only devices --num-images 2 --methods $M --output $OUT/devices_cuda.json
date -u
} 2>&1 | tee $OUT/device.log
