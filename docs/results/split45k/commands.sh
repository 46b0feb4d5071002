#!/bin/bash
# The exact commands behind every figure in docs/results/split45k/ (run from the repository root, one training at a
# time, on a 2-core machine shared with other engineers' jobs: hence nice and one thread).
set -e
S=/work/avf-real            # feature stores and runs live outside the repository
# 1. The standard split and its nested subsets (tools/splits/yt8m_45k.json), converted once.
python tools/make_split.py tools/splits/yt8m_45k.json --data ../shared/data/yt8m-video --out $S --all

# 2. Recipe screen on the nested 12k subset: FC Early Fusion, width 2048, lr 1e-3 cosine, 3 epochs, one option at a time.
screen() { name=$1; shift
  nice -n 10 avf train --model fc_early_fusion --train $S/train_12k --val $S/val --out $S/runs/screen12k/$name \
    --epochs 3 --lr 1e-3 --schedule cosine --width 2048 --threads 1 --force "$@"; }
screen base
screen batch_norm --batch-norm
screen ema --ema 0.999
screen mixup --mixup 0.2
screen label_smoothing --label-smoothing 0.1

# 3. The 45k split.
R=$S/runs/split45k
nice -n 10 avf train --model fc_early_fusion --train $S/train --val $S/val --out $R/fc_early_fusion_bn \
  --epochs 6 --lr 1e-3 --schedule cosine --width 2048 --batch-norm --threads 1
nice -n 10 avf train --model moe --train $S/train --val $S/val --out $R/moe \
  --epochs 3 --lr 1e-2 --schedule cosine --threads 1
nice -n 10 avf train --model context_gating_moe --train $S/train --val $S/val --out $R/context_gating_moe \
  --epochs 3 --lr 1e-3 --schedule cosine --threads 1

# 4. Each 45k checkpoint through avf-compress --int8 (fold, static INT8 QDQ, retention on the validation store).
for m in fc_early_fusion_bn context_gating_moe moe; do
  nice -n 10 avf-compress $R/$m/best.pt --int8 --calib $S/train --calib-size 512 --eval $S/val -o $S/artifacts/$m.int8
done

# 5. Ensembles (mean of probabilities) of the 45k checkpoints, scored on the validation store.
python tools/ensemble_eval.py $R/fc_early_fusion_bn/best.pt $R/context_gating_moe/best.pt --data $S/val --threads 1
python tools/ensemble_eval.py $R/fc_early_fusion_bn/best.pt $R/context_gating_moe/best.pt $R/moe/best.pt --data $S/val --threads 1

# 6. Learning curve (the part the session's CPU time allowed): nested 6k and 12k subsets, 3 epochs, one recipe.
nice -n 10 python tools/learning_curve.py --sizes $S/train_6k,$S/train_12k --val $S/val \
  --models fc_early_fusion,attend_fusion_no_attention,attend_fusion --epochs 3 --lr 1e-3 --batch-norm \
  --identity-attention --baseline-width 2048 --threads 1 --runs $S/runs/curve --out docs/results/split45k/learning_curve
