#!/bin/bash
# The base model's data levers at equal steps (2,500 x batch 16 = 40,000 images), deep fusion only, one thread each,
# two runs side by side on the two cores; then each member on 100 test prompts x 4 seeds and the relation probe.
#   bench/base_levers.sh train AB   # runs A (the shipped recipe) and B (streamed data, curriculum, converse captions)
#   bench/base_levers.sh train CD   # C (B + object weight 4) and D (C + timestep mean 0.5): at commit 70059a6, which
#                                   # has the object weight (measured harmful and removed, docs/base_model.md)
#   bench/base_levers.sh eval A B   # bench/results/base_levers/lever_<run>.json and relation_probe_lever_<run>.json
# Each run also writes its own 100 x 1 evaluation to runs/lever_<run>/eval_test.json.
set -e
cd "$(dirname "$0")/.."
common="--config recipes/configs/pretrain_shapes.yaml --conditionings deep_fusion --parallel 1 --threads 1 --max-steps 2500 --eval-every 0 --checkpoint-every 500 --eval-prompts 100 --eval-seeds 1"
stream="--streaming --curriculum-steps 1250 --converse-captions 0.5"
declare -A options=([A]="" [B]="$stream" [C]="$stream --object-weight 4" [D]="$stream --object-weight 4 --timestep-mean 0.5")
[[ "$1" = train && "$2" = CD ]] && ! .venv/bin/itercomp pretrain --help | grep -q -- --object-weight &&
  { echo "runs C and D need --object-weight: check out commit 70059a6" >&2; exit 2; }
train() { OMP_NUM_THREADS=1 .venv/bin/itercomp pretrain $common --output-dir runs/lever_$1 ${options[$1]} > runs/lever_$1.log 2>&1; }
evaluate() {
  OMP_NUM_THREADS=1 .venv/bin/python bench/base_model.py --weights runs/lever_$1/members --members base --run runs/lever_$1 \
    --prompts 100 --seeds 4 --threads 1 --out bench/results/base_levers/lever_$1.json --sheet runs/lever_$1/samples.png
  OMP_NUM_THREADS=1 .venv/bin/python bench/relation_probe.py --member runs/lever_$1/members/base --threads 1 \
    --out bench/results/base_levers/relation_probe_lever_$1.json
}
mkdir -p runs bench/results/base_levers
case "$1" in
  train) train "${2:0:1}" & train "${2:1:1}" & wait ;;
  eval) shift; for run in "$@"; do evaluate "$run"; done ;;
  *) echo "usage: bench/base_levers.sh train AB|CD | eval RUN..." >&2; exit 2 ;;
esac
