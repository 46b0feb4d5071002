#!/bin/bash
# The exact commands behind docs/results/split45k/gpu/ (issue 13 on one NVIDIA H200, 2026-11-26).
# The GPU machine had PyTorch 2.11.0+cu130 but neither the TFRecords nor pydantic/google-crc32c/torch-pruning:
# the 45k feature stores (train, val; float16, 117 MB) were copied there in two parts, the missing
# wheels installed with pip --no-index, and the nested subsets cut from the train store.
set -e
S=/work/avf-real            # the same paths as on the CPU machine, so the runs' recorded settings match

# 0. On the CPU machine: the standard split (tools/splits/yt8m_45k.json).
python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out $S

# 1. On the GPU machine: nested subsets cut from the train store (row for row what converting their shards gives).
python3 tools/make_split.py tools/splits/yt8m_45k.json --data - --out $S --only train_23k,train_12k,train_6k --from-store train

# 2. Main plan: four lanes side by side for 270 s (+40 s grace): recipe candidates (bar), the learning curve
#    (curve_a, curve_b) and the other Table 1/3 models (table). See tools/gpu_45k.py for every command.
nvidia-smi --query-gpu=timestamp,power.draw,utilization.gpu,memory.used --format=csv -l 5 > nvidia_smi_during_training.csv &
python3 tools/gpu_45k.py --stores $S --deadline 270 --grace 40 --threads 4

# 3. GPU benchmarks of an Attend-Fusion checkpoint (batch 1 and 64, NVML energy and memory): docs/results/gpu/.
#    The checkpoint was the train_12k point of the learning curve (the shell's collation listed it first);
#    its cost is that of every Attend-Fusion checkpoint (same architecture and shapes).
C=$S/runs/gpu45k/curve/attend_fusion/train_12k/best.pt
python3 -m avf bench $C --device cuda --precision fp32 --batch 1,64 --duration 2 -o attend_fusion_fp32.json
python3 -m avf bench $C --device cuda --precision fp16 --batch 1,64 --duration 2 -o attend_fusion_fp16.json
python3 -m avf bench $C --device cuda --precision fp16 --cuda-graphs --batch 1,64 --duration 2 -o attend_fusion_fp16_graphs.json

# 4. Distillation (the runs that reached 0.75), on the same machine right after; run there as the inline shell
#    below, which `python3 tools/gpu_45k.py --stores $S --plan distill --threads 2` now repeats.
G=$S/runs/gpu45k; R=$G/bar2
T="--distill-from $G/bar/fc_early_fusion_bn_w2048/best.pt --distill-from $G/bar/context_gating_moe/best.pt
   --distill-from $G/bar/fc_early_fusion_bn_w8192/best.pt --distill-from $G/curve/attend_fusion_no_attention/train/best.pt
   --distill-from $G/curve/fc_late_fusion/train/best.pt"
A="python3 -m avf train --train $S/train --val $S/val --schedule cosine --threads 2 --lr 1e-3 --batch-norm"
python3 tools/ensemble_eval.py $G/bar/fc_early_fusion_bn_w2048/best.pt $G/bar/context_gating_moe/best.pt \
  $G/bar/fc_early_fusion_bn_w8192/best.pt $G/curve/attend_fusion_no_attention/train/best.pt \
  $G/curve/fc_late_fusion/train/best.pt --data $S/val --threads 2 > $R/ensemble5.log &
$A --out $R/s_ef_w05 -m fc_early_fusion --width 2048 --epochs 20 $T --distill-weight 0.5 &
$A --out $R/s_ef_w08 -m fc_early_fusion --width 2048 --epochs 20 $T --distill-weight 0.8 &
$A --out $R/s_cg_w05 -m context_gating_moe --epochs 15 $T --distill-weight 0.5 &
$A --out $R/h_ef_d05_25 -m fc_early_fusion --width 2048 --epochs 25 --dropout 0.5 &
$A --out $R/h_ef_mix_20 -m fc_early_fusion --width 2048 --epochs 20 --mixup 0.2 &
$A --out $R/h_cg_20 -m context_gating_moe --epochs 20 &
$A --out $R/s_ef4096_w07 -m fc_early_fusion --width 4096 --dropout 0.5 --epochs 20 $T --distill-weight 0.7 &
wait

# 5. Seeds 1 and 2 of the best student (both at once): `tools/gpu_45k.py --plan seeds --threads 4`.
for s in 1 2; do
  python3 -m avf train --train $S/train --val $S/val --schedule cosine --threads 4 --lr 1e-3 --batch-norm \
    -m fc_early_fusion --width 4096 --dropout 0.5 --epochs 20 --distill-weight 0.7 $T --seed $s \
    --out $G/bar3/s_ef4096_w07_seed$s &
done
wait

# 6. Back on the CPU machine, from the runs' metrics.json files (no training):
python tools/learning_curve.py --no-train --sizes $S/train_6k,$S/train_12k,$S/train_23k,$S/train --val $S/val \
  --models fc_visual,fc_early_fusion,fc_late_fusion,attend_fusion,attend_fusion_no_attention,context_gating_moe \
  --epochs 10 --lr 1e-3 --batch-norm --identity-attention --baseline-width 2048 --runs $G/curve \
  --out docs/results/split45k/gpu/learning_curve
# (the six curve models' 45k runs are linked into $G/table first: ln -s ../curve/MODEL/train $G/table/MODEL)
python tools/reproduce_table.py --no-train --train $S/train --val $S/val \
  --models fc_audio,fc_visual,fc_early_fusion,fc_late_fusion,fc_residual_early_fusion,fc_residual_gated_early_fusion,fc_attention,residual_attention_early_fusion,audio_visual_attention,self_cross_modal_attention,attend_fusion,attend_fusion_audio_only,attend_fusion_visual_only,attend_fusion_no_attention,moe,context_gating_moe \
  --epochs 10 --lr 1e-3 --batch-norm --identity-attention --baseline-width 2048 --runs $G/table \
  --out docs/results/split45k/gpu/table --dataset-name "the 45k-video split (real YouTube-8M)" \
  --note "Trained on one NVIDIA H200 (torch 2.11.0+cu130, bf16 autocast), four trainings at a time sharing the GPU and its 16 host cores (tools/gpu_45k.py): seconds per epoch are shared figures"
