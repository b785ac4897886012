#!/usr/bin/env bash
# Training cost of a recipe on e5_small: the cpu_small protocol cut to 160 training questions (1 epoch, about 195
# windows trained), Efficient GlobalPointer, 2 threads, no checkpoint:
#   bash experiments/recipes/cost_probe.sh TAG [OVERRIDE ...]   e.g. TAG=fgm-1 trainer.adversarial=fgm
# Prints: tag, windows trained, seconds, windows/s. Run the recipes interleaved (none, fgm, none, fgm, ...) with
# nothing else on the machine, and compare windows/s within one machine only.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -ge 1 ]] || { echo "usage: bash experiments/recipes/cost_probe.sh TAG [OVERRIDE ...]" >&2; exit 2; }
tag=$1; shift
out=${MRC_OUTPUT:-outputs}/recipe_cost/$tag
rm -rf "$out"
mkdir -p "$(dirname "$out")"
OMP_NUM_THREADS=2 WANDB_MODE=disabled .venv/bin/python run.py experiment=cpu_small encoder=e5_small \
  head=efficient_globalpointer data.limit_train=160 'data.eval_splits=[in_domain]' data.limit_eval=20 \
  trainer.epochs=1 logger=none trainer.save_checkpoint=false trainer.resume_every=0 "$@" hydra.run.dir="$out" \
  > "$out.log" 2>&1
.venv/bin/python -c "import json,sys; t=json.load(open(sys.argv[1]))['train']; print('$tag', \
t['windows_trained'], t['seconds'], t['windows_per_s'])" "$out/metrics.json"
