#!/bin/bash
# device checks, second run: the CUDA tests at 96 px; the devices benchmark with cuDNN's TF32 off
export PYTHONUNBUFFERED=1
M="CAM GradCAM GradCAM++ LayerCAM ScoreCAM HiResCAM GradCAMElementWise XGradCAM EigenGradCAM ShapleyCAM FinerCAM EigenCAM KPCACAM FEM AblationCAM SmoothGradCAM++ FullGrad ISCAM SSCAM"
{
date -u
python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.dev/w.pth.xz'), open('/tmp/w.pth','wb'))"
echo "== pytest"; timeout 200 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_devices.py -rs --durations=3
echo "== devices, cudnn TF32 off"
timeout 200 python3 -c "
import runpy, sys, torch
torch.backends.cudnn.allow_tf32 = False
sys.argv = ['cams'] + sys.argv[1:]
runpy.run_module('benchmarks.cams', run_name='__main__')
" --only devices --device cuda --images-dir .dev/jpg --backbone-weights /tmp/w.pth --num-images 2 --methods $M --output $OUT/devices_cuda_notf32.json
date -u
} 2>&1 | tee $OUT/device2.log
