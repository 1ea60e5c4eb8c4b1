#!/usr/bin/env bash
# Retrain every shipped model on FER2013 (Training rows, selected on PublicTest), one after
# another, each within a stated time budget. Each run checkpoints to checkpoints/NAME/ and
# resumes from there if started again; delete that folder to start a model over. A recipe of
# several training stages (separated by ";") trains one checkpoint over several runs: a later
# stage with more epochs resumes the last one with a new cosine cycle over the added epochs.
# The default model is an ensemble, so its members are trained before it.
#
#   scripts/train_all.sh [path/to/fer2013.csv.gz] [model ...]
#
# With model names after the data path, only those are trained (e.g. `... fer_vgg_wd default`).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/datasets/fer2013/fer2013.csv.gz}
shift || true

# Each stage is a fer_core command (train or ensemble) run with --data and --name added.
# fer_vgg: 40 epochs, then a second cosine cycle to 100 epochs; early stopping (patience 15) ended
# that cycle at epoch 82, before its learning rate had annealed, so a third stage finishes it.
# fer_vgg_wd: the same network trained apart (another seed, a real weight decay: Keras' AdamW
# scales it by the learning rate). fer_vgg_swa and fer_vgg_wd_swa: each fine-tuned from the one it
# names at a constant learning rate, keeping the mean of its last epochs' weights (stochastic weight
# averaging). fer_vgg_s2: a third fer_vgg trained apart (seed 2) in one 40-epoch cosine cycle.
# fer_vgg_swa_long, fer_vgg_wd_swa_long and fer_vgg_s2_swa_long: the three fine-tuned the same way,
# averaging 15 epochs (seeds 3, 4, 5). default: the mean of those three, its convolution kernels
# stored in int8 (3.7 MB).
# fer_resnet: the residual network, trained as fer_vgg_s2 was (seed 4).
# fer_vgg_wide: fer_vgg with 1.5 times the channels, one cosine cycle over the epochs that fit
# 140 minutes (28 on a 2-core AVX-512 machine).
declare -A recipe=(
  [fer_vgg]="train --arch fer_vgg --epochs 40 --minutes 110; train --arch fer_vgg --epochs 100 --minutes 95; train --arch fer_vgg --epochs 100 --minutes 40 --patience 30"
  [fer_vgg_wd]="train --arch fer_vgg --epochs 65 --minutes 100 --weight-decay 0.05 --seed 1 --patience 65"
  [fer_vgg_swa]="train --arch fer_vgg --init-from fer_vgg --epochs 7 --swa-epochs 6 --schedule constant --lr 3e-4"
  [fer_vgg_swa_long]="train --arch fer_vgg --init-from fer_vgg --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --seed 3"
  [fer_vgg_wd_swa]="train --arch fer_vgg --init-from fer_vgg_wd --epochs 10 --swa-epochs 8 --schedule constant --lr 3e-4 --weight-decay 0.05 --seed 1"
  [fer_vgg_wd_swa_long]="train --arch fer_vgg --init-from fer_vgg_wd --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --weight-decay 0.05 --seed 4"
  [fer_vgg_s2]="train --arch fer_vgg --epochs 40 --patience 100 --seed 2"
  [fer_vgg_s2_swa_long]="train --arch fer_vgg --init-from fer_vgg_s2 --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --seed 5"
  [default]="ensemble fer_vgg_swa_long fer_vgg_wd_swa_long fer_vgg_s2_swa_long --weights int8"
  [fer_resnet]="train --arch fer_resnet --epochs 40 --patience 100 --seed 4"
  [fer_vgg_wide]="train --arch fer_vgg_wide --epochs 40 --patience 100 --seed 6 --minutes 140"
  [mini_xception]="train --arch mini_xception --epochs 60 --minutes 20 --lr 5e-3"
  [ds_cnn]="train --arch ds_cnn --epochs 60 --minutes 8 --lr 5e-3"
  [simple_cnn]="train --arch simple_cnn --epochs 40 --minutes 15 --lr 1e-3"
  [alexnet_small]="train --arch alexnet_small --epochs 30 --minutes 25 --lr 1e-3"
  [modified_cnn]="train --arch modified_cnn --epochs 40 --minutes 15 --lr 1e-3"
)
order=(fer_vgg fer_vgg_wd fer_vgg_swa fer_vgg_swa_long fer_vgg_wd_swa fer_vgg_wd_swa_long fer_vgg_s2 fer_vgg_s2_swa_long default fer_resnet fer_vgg_wide mini_xception ds_cnn simple_cnn alexnet_small modified_cnn)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")

for name in "${names[@]}"; do
  [ -n "${recipe[$name]:-}" ] || { echo "unknown model $name (known: ${order[*]})" >&2; exit 2; }
  IFS=';' read -ra stages <<< "${recipe[$name]}"
  for stage in "${stages[@]}"; do
    echo "== $name: python -m fer_core $stage --data $data --name $name"
    # shellcheck disable=SC2086
    python -m fer_core $stage --data "$data" --name "$name"
  done
done
