#!/bin/bash
# Issue 22 on the lent GPU, second call: the first (tools/gpu_issue22.sh) lost its side-by-side to a segfault after
# compiling the folded model in-process (87 s) and its avf commands to a --cuda-graphs refusal since fixed. This one
# compiles once, with avf-deploy build (its own process), and times that package beside the PyTorch baselines;
# every step is its own process, with Python's fault handler on, so one crash loses one step.
set -u
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
O=${OUT:-/tmp/out}
mkdir -p "$O"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
exec > >(tee -a "$O/run.log") 2>&1
G=.gpu; P=/tmp/pick
rm -rf $P && cp -r $G/pick $P
echo "== build"; date
timeout 130 python3 -m avf deploy build $P --backend torch-aot --device cuda
echo "== side by side"; date
timeout 75 python3 tools/bench_gpu_engines.py --pick $P --package $P/model.pt2 --test $G/test \
  --reference-gap "$(cat $G/reference_gap)" --out "$O" --rounds 3 --calls 150
echo "== avf bench (plain, CUDA graphs)"; date
timeout 30 python3 -m avf bench $P --backend torch-aot --device cuda --batch 1,64 --duration 1 -o "$O/pick_bench.json"
timeout 30 python3 -m avf bench $P --backend torch-aot --device cuda --cuda-graphs --batch 1,64 --duration 1 \
  -o "$O/pick_bench_graphs.json"
echo "== check"; date
timeout 30 python3 -m avf deploy check $P --data $G/test --backend torch-aot --device cuda -o $P/check-torch-aot.json \
  && cp $P/check-torch-aot.json "$O/pick_check.json"
B="$O/pick_bench_graphs.json"; [ -f "$B" ] || B="$O/pick_bench.json"
timeout 15 python3 -m avf deploy manifest $P -p h200 --bench "$B" -o $P/manifest.json && cp $P/manifest.json "$O/pick_manifest.json"
date
