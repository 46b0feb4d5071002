#!/bin/bash
# Issue 24 on one lent CUDA GPU, from the repository root there, in two calls a few seconds apart (the
# standard split's stores, 118 MB, are over one call's 64 MiB, so they travel in two parts):
#   bash tools/gpu_issue24.sh part1   (carried: .whl/, .gpu24/a/ = the first 60 MB of train/rgb.npy)
#   bash tools/gpu_issue24.sh run     (carried: .gpu24/b/ = the rest of train, and the val store)
# Made on the CPU machine by:
#   python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out STORES --only train,val
#   head -c 60000000 STORES/train/rgb.npy > .gpu24/a/rgb.part1; tail -c +60000001 STORES/train/rgb.npy > .gpu24/b/train/rgb.part2
#   cp STORES/train/{audio,ids,label_indices,label_indptr}.npy STORES/train/manifest.json .gpu24/b/train/
#   sha256sum STORES/train/rgb.npy | cut -c1-64 > .gpu24/b/train/rgb.sha256; cp -r STORES/val .gpu24/b/stores/val
# The stores go to /work/avf-real, the path of every earlier GPU run, so recorded settings compare.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
S=${STORES:-/work/avf-real}
O=${OUT:-/tmp/out}
case "${1:-}" in
part1)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  cp .gpu24/a/rgb.part1 /tmp/rgb.part1 && ls -l /tmp/rgb.part1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc
  python3 -c "import torch, pydantic, torch_pruning; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  ;;
run)
  [ -f /tmp/rgb.part1 ] || { echo "error: /tmp/rgb.part1 missing: this is a fresh machine, run part1 first"; exit 9; }
  mkdir -p $S/train
  cat /tmp/rgb.part1 .gpu24/b/train/rgb.part2 > $S/train/rgb.npy
  cp .gpu24/b/train/*.npy .gpu24/b/train/manifest.json $S/train/
  echo "$(cat .gpu24/b/train/rgb.sha256)  $S/train/rgb.npy" | sha256sum -c || exit 9
  rm -rf $S/val && cp -r .gpu24/b/stores/val $S/val
  python3 tools/make_split.py tools/splits/yt8m_45k.json --data - --out $S --only select,test --from-store val || exit 9
  nvidia-smi --query-gpu=timestamp,power.draw,utilization.gpu,memory.used --format=csv -l 5 > "$O/nvidia_smi.csv" &
  python3 tools/gpu_issue24.py --stores $S --runs $S/runs/issue24 --out "$O" --deadline "${DEADLINE:-550}" ${EXTRA:-} 2>&1 \
    | tee "$O/run.log"
  ;;
*) echo "usage: $0 part1|run"; exit 2 ;;
esac
