#!/bin/bash
# Issue 22's checks on one lent CUDA GPU, in one call (run from the repository root there):
#   bash tools/gpu_issue22.sh
# Carried beside the working tree (ignored paths): .whl/ (pydantic and the other pure dependencies the GPU image
# lacks) and .gpu/: pick/ (the tune pick compressed with --backend torch-aot, its model.pt2 left behind: a package
# is compiled where it runs), test/ (the held-out feature store), reference_gap (the FP32 checkpoint's GAP on it).
# What it writes to $OUT: gpu_engines.json/.md (tools/bench_gpu_engines.py), pick_bench.json, pick_check.json,
# pick_manifest.json, tune.json (avf tune --profile h200 measured here), run.log, pytest.log.
set -u
export PYTHONUNBUFFERED=1
O=${OUT:-/tmp/out}
mkdir -p "$O"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
exec > >(tee -a "$O/run.log") 2>&1
date; nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ort', onnxruntime.__version__, onnxruntime.get_available_providers())"
python3 -c "import tensorrt" 2>&1 | tail -1
G=.gpu

echo "== 1. side by side: eager, CUDA graphs, torch-aot (the folded paper-size model and the tune pick)"
timeout 200 python3 tools/bench_gpu_engines.py --pick $G/pick --test $G/test --reference-gap "$(cat $G/reference_gap)" \
  --out "$O" --rounds 3 --calls 200

echo "== 2. the avf commands on the pick: build the package here, bench, check, manifest"
rm -rf /tmp/pick && cp -r $G/pick /tmp/pick
timeout 80 python3 -m avf deploy build /tmp/pick --backend torch-aot --device cuda
timeout 30 python3 -m avf bench /tmp/pick --backend torch-aot --device cuda --cuda-graphs --batch 1,64 --duration 1 \
  -o "$O/pick_bench.json"
timeout 40 python3 -m avf deploy check /tmp/pick --data $G/test --backend torch-aot --device cuda \
  -o /tmp/pick/check-torch-aot.json && cp /tmp/pick/check-torch-aot.json "$O/pick_check.json"
timeout 20 python3 -m avf deploy manifest /tmp/pick -p h200 --bench "$O/pick_bench.json" -o /tmp/pick/manifest.json
cp /tmp/pick/manifest.json "$O/pick_manifest.json"

echo "== 3. avf tune --profile h200 on this H200: costs measured (small synthetic model, short budget)"
T=/tmp/tune22
python3 -m avf data synth $T/data --videos 800 --classes 24 --seed 3 > /dev/null
timeout 40 python3 -m avf train -m attend_fusion --train "$T/data/train*.tfrecord" --val "$T/data/validate*.tfrecord" \
  -o $T/run --epochs 3 --width 64 --attention-width 64 --heads 4 --lr 3e-3 --device cuda > /dev/null
timeout 90 python3 -m avf tune $T/run/best.pt --profile h200 --out $T/tune --time-budget 1 --finetune-epochs 1 \
  --train "$T/data/train*.tfrecord" --eval "$T/data/validate*.tfrecord" --calib "$T/data/train*.tfrecord"
cp $T/tune/tune.json "$O/tune.json"

echo "== 4. the GPU tests of the compiled engine"
timeout 50 python3 -m pytest -q -p no:cacheprovider tests/test_torch_aot.py -k cuda_package > "$O/pytest.log" 2>&1
tail -3 "$O/pytest.log"
date
