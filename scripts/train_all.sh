#!/usr/bin/env bash
# Retrain every shipped model on FER2013 (Training rows, selected on PublicTest), one after
# another, each within a stated time budget. Each run checkpoints to checkpoints/NAME/ and
# resumes from there if started again; delete that folder to start a model over. A recipe of
# several stages (separated by ";") trains one checkpoint over several runs: a later stage with
# more epochs resumes the last one with a new cosine cycle over the added epochs.
#
#   scripts/train_all.sh [path/to/fer2013.csv.gz] [model ...]
#
# With model names after the data path, only those are trained (e.g. `... default mini_xception`).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/datasets/fer2013/fer2013.csv.gz}
shift || true

# default: 40 epochs, then a second cosine cycle to 100 epochs; early stopping (patience 15) ended
# that cycle at epoch 82, before its learning rate had annealed, so a third stage finishes it.
declare -A recipe=(
  [default]="--arch fer_vgg --epochs 40 --minutes 110; --arch fer_vgg --epochs 100 --minutes 95; --arch fer_vgg --epochs 100 --minutes 40 --patience 30"
  [mini_xception]="--arch mini_xception --epochs 60 --minutes 8 --lr 5e-3"
  [ds_cnn]="--arch ds_cnn --epochs 60 --minutes 8 --lr 5e-3"
  [simple_cnn]="--arch simple_cnn --epochs 40 --minutes 8 --lr 1e-3"
  [alexnet_small]="--arch alexnet_small --epochs 30 --minutes 8 --lr 1e-3"
  [modified_cnn]="--arch modified_cnn --epochs 40 --minutes 15 --lr 1e-3"
)
order=(default mini_xception ds_cnn simple_cnn alexnet_small modified_cnn)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")

for name in "${names[@]}"; do
  [ -n "${recipe[$name]:-}" ] || { echo "unknown model $name (known: ${order[*]})" >&2; exit 2; }
  IFS=';' read -ra stages <<< "${recipe[$name]}"
  for stage in "${stages[@]}"; do
    echo "== $name: python -m fer_core train $stage --data $data --name $name"
    # shellcheck disable=SC2086
    python -m fer_core train $stage --data "$data" --name "$name"
  done
done
