#!/usr/bin/env bash
# Retrain every shipped model on FER2013 (Training rows, selected on PublicTest), one after
# another, each within a stated time budget. Each run checkpoints to checkpoints/NAME/ and
# resumes from there if started again; delete that folder to start a model over. A recipe of
# several training stages (separated by ";") trains one checkpoint over several runs: a later
# stage with more epochs resumes the last one with a new cosine cycle over the added epochs.
#
#   scripts/train_all.sh path/to/fer2013.csv.gz [model ...]
#
# The data (a FER2013 CSV, plain or gzipped, or a class-folder tree or zip; see the README) is
# required. With model names after it, only those are trained (e.g. `... mini_xception default`).
#
# Shipped: default, fer_vgg_swa_long, mini_xception, ds_cnn, simple_cnn, alexnet_small, modified_cnn.
# The default is an ensemble, so its members are trained before it, and each member is fine-tuned
# from a network trained first. Those intermediates (fer_vgg, fer_vgg_wd, fer_vgg_s2,
# fer_vgg_wd_swa_long, fer_vgg_s2_swa_long) are trained into the store too but do not ship: the
# default holds copies of its members, so they may be deleted once it is saved.
set -euo pipefail
usage="usage: scripts/train_all.sh path/to/fer2013.csv.gz [model ...]"
case "${1:-}" in
  -h|--help) echo "$usage"; exit 0 ;;
  "") echo "$usage" >&2
      echo "  the FER2013 data comes first: fer2013.csv (or fer2013.csv.gz) from Kaggle; see the README" >&2
      exit 2 ;;
esac
[ -e "$1" ] || { echo "$1: no such file or folder" >&2; echo "$usage" >&2; exit 2; }
# The runs start in the repository (checkpoints/ is there), so the data path is made absolute first.
data=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
cd "$(dirname "$0")/.."

# Each stage is a fer_core command (train or ensemble) run with --data and --name added.
# fer_vgg: 40 epochs, then a second cosine cycle to 100 epochs; early stopping (patience 15) ended
# that cycle at epoch 82, before its learning rate had annealed, so a third stage finishes it.
# fer_vgg_wd: the same network trained apart (another seed, a real weight decay: Keras' AdamW
# scales it by the learning rate). fer_vgg_s2: a third fer_vgg trained apart (seed 2) in one
# 40-epoch cosine cycle. fer_vgg_swa_long, fer_vgg_wd_swa_long and fer_vgg_s2_swa_long: each of the
# three fine-tuned from the one it names at a constant learning rate, keeping the mean of its last
# 15 epochs' weights (stochastic weight averaging; seeds 3, 4, 5). default: the mean of those three,
# its convolution kernels stored in int8 (3.7 MB). The recipes of the networks that no longer ship
# (fer_vgg_swa, fer_vgg_wd_swa, fer_resnet, fer_vgg_wide) are in docs/experiments.md.
declare -A recipe=(
  [fer_vgg]="train --arch fer_vgg --epochs 40 --minutes 110; train --arch fer_vgg --epochs 100 --minutes 95; train --arch fer_vgg --epochs 100 --minutes 40 --patience 30"
  [fer_vgg_wd]="train --arch fer_vgg --epochs 65 --minutes 100 --weight-decay 0.05 --seed 1 --patience 65"
  [fer_vgg_swa_long]="train --arch fer_vgg --init-from fer_vgg --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --seed 3"
  [fer_vgg_wd_swa_long]="train --arch fer_vgg --init-from fer_vgg_wd --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --weight-decay 0.05 --seed 4"
  [fer_vgg_s2]="train --arch fer_vgg --epochs 40 --patience 100 --seed 2"
  [fer_vgg_s2_swa_long]="train --arch fer_vgg --init-from fer_vgg_s2 --epochs 16 --swa-epochs 15 --schedule constant --lr 3e-4 --seed 5"
  [default]="ensemble fer_vgg_swa_long fer_vgg_wd_swa_long fer_vgg_s2_swa_long --weights int8"
  [mini_xception]="train --arch mini_xception --epochs 60 --minutes 20 --lr 5e-3"
  [ds_cnn]="train --arch ds_cnn --epochs 60 --minutes 8 --lr 5e-3"
  [simple_cnn]="train --arch simple_cnn --epochs 40 --minutes 15 --lr 1e-3"
  [alexnet_small]="train --arch alexnet_small --epochs 30 --minutes 25 --lr 1e-3"
  [modified_cnn]="train --arch modified_cnn --epochs 40 --minutes 15 --lr 1e-3"
)
order=(fer_vgg fer_vgg_swa_long fer_vgg_wd fer_vgg_wd_swa_long fer_vgg_s2 fer_vgg_s2_swa_long default mini_xception ds_cnn simple_cnn alexnet_small modified_cnn)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")
for name in "${names[@]}"; do  # every name is checked before hours of training begin
  [ -n "${recipe[$name]:-}" ] || { echo "unknown model $name (known: ${order[*]})" >&2; exit 2; }
done

for name in "${names[@]}"; do
  IFS=';' read -ra stages <<< "${recipe[$name]}"
  for stage in "${stages[@]}"; do
    echo "== $name: python -m fer_core $stage --data $data --name $name"
    # shellcheck disable=SC2086
    python -m fer_core $stage --data "$data" --name "$name"
  done
done
