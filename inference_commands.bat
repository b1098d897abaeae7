@echo off
rem Regenerate the report's CAM figures from the grid's checkpoints (grid.py wrote output\grid_runs.json):
rem the three report outputs (labelled grid, compact grid, strip) for the report's four chosen models
rem (CAM lr 1e-4, also for LayerCAM; ReCAM minmax 2e-4, sigmoid 5e-5, relu 1e-4), then the comparison
rem figure (the report's Figure 8), all in output\.
rem
rem   inference_commands.bat          seed 0, run from the folder grid.py ran in (the repo root)
rem   inference_commands.bat 3        seed 3
rem
rem Offline: set BACKBONE_WEIGHTS=..\shared\weights\vgg16_imagenet_features.pth
rem Optional: set GRID_RUNS=path\to\grid_runs.json, set PYTHON=path\to\python.exe
setlocal
set "SEED=%~1"
if "%SEED%"=="" set "SEED=0"
if "%GRID_RUNS%"=="" set "GRID_RUNS=output\grid_runs.json"
if not "%PYTHON%"=="" goto :have_python
set "PYTHON=python"
if exist "%~dp0.venv\Scripts\python.exe" set "PYTHON=%~dp0.venv\Scripts\python.exe"
:have_python
set "INFER="%PYTHON%" "%~dp0inference.py" --grid-runs "%GRID_RUNS%" -s %SEED%"

%INFER% --checkpoint CAM-lr0.0001 --method CAM || goto :fail
%INFER% --checkpoint ReCAM-minmax-lr0.0002 --method ReCAM || goto :fail
%INFER% --checkpoint ReCAM-sigmoid-lr5e-05 --method ReCAM || goto :fail
%INFER% --checkpoint ReCAM-relu-lr0.0001 --method ReCAM || goto :fail
%INFER% --checkpoint CAM-lr0.0001 --method LayerCAM || goto :fail
%INFER% --compare CAM-lr0.0001:CAM ReCAM-minmax-lr0.0002:ReCAM ReCAM-sigmoid-lr5e-05:ReCAM ReCAM-relu-lr0.0001:ReCAM CAM-lr0.0001:LayerCAM || goto :fail
echo done: see output\
exit /b 0

:fail
echo inference_commands.bat stopped at the command above
exit /b 1
