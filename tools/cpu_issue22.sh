#!/bin/bash
# Issue 22's CPU bar, end to end, as recorded in docs/results/perf22/README.md ("The CPU bar, met"):
#   bash tools/cpu_issue22.sh STORES WORK [RESULTS]
# STORES holds the standard split's feature stores train/ (validate0000-0079 + 0100-0174), select/ (0080-0089) and
# test/ (0090-0099), as `python tools/make_split.py tools/splits/yt8m_45k.json --data SHARDS --out STORES` writes
# them; WORK receives the checkpoint (WORK/run), the search (WORK/tune) and the logs; RESULTS (default
# WORK/cpu_engines) the side-by-side tables. Each step resumes or is skipped when its output is already there.
# Needs the `openvino` package for the OpenVINO rows (pip install openvino) and an otherwise idle machine: the
# side-by-side script refuses to time above a 1-minute load of 0.6.
set -euo pipefail
STORES=${1:?usage: cpu_issue22.sh STORES WORK [RESULTS]}
WORK=${2:?usage: cpu_issue22.sh STORES WORK [RESULTS]}
RESULTS=${3:-$WORK/cpu_engines}
mkdir -p "$WORK"
if [ ! -f "$WORK/run/best.pt" ]; then  # the checkpoint: avf train's defaults, 6 epochs on the standard split
  avf train --model attend_fusion --train "$STORES/train" --val "$STORES/select" --out "$WORK/run" --epochs 6 \
    --threads 2 2>&1 | tee -a "$WORK/train.log"
fi
# The search: 6 distillation epochs per prune ratio, each candidate held to its retention's 95% lower bound
# (--retention-confidence, avf tune's default) on the selection videos; held-out retention of the pick on test/.
avf tune "$WORK/run/best.pt" --profile x86-cpu -o "$WORK/tune" --min-retention 0.99 --train "$STORES/train" \
  --calib "$STORES/train" --eval "$STORES/select" --test "$STORES/test" --finetune-epochs 6 --threads 2 \
  --time-budget 60 2>&1 | tee "$WORK/tune.log"
# Side by side, one process: PyTorch FP32 eager, ONNX Runtime FP32 / dynamic INT8, OpenVINO, the pick.
python "$(dirname "$0")/bench_cpu_engines.py" --checkpoint "$WORK/run/best.pt" --pick "$WORK/tune/artifact" \
  --test "$STORES/test" --threads 2 --rounds 7 --seconds 2 --settle 120 --max-load 0.6 --results "$RESULTS"
