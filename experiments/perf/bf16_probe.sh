#!/usr/bin/env bash
# Training speed of one precision on e5_small, the cpu_small protocol cut to 160 training questions (1 epoch,
# 287 windows of which 195 are trained with null_window_keep 0.15), GlobalPointer, 2 threads:
#   bash experiments/perf/bf16_probe.sh HEAD PRECISION TAG   (PRECISION: fp32 | matmul | autocast)
# Prints: head precision tag windows trained seconds windows/s precision-recorded peak-RSS-MiB.
# Run the precisions interleaved (fp32, matmul, autocast, fp32, ...) with nothing else on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
head=$1 prec=$2 tag=$3
case $prec in
  fp32) opts="trainer.cpu_bf16=false" ;;
  matmul) opts="trainer.cpu_bf16=true trainer.cpu_bf16_via=matmul" ;;
  autocast) opts="trainer.cpu_bf16=true trainer.cpu_bf16_via=autocast" ;;
  *) echo "precision: fp32, matmul or autocast" >&2; exit 2 ;;
esac
out=${MRC_OUTPUT:-outputs}/bf16_probe/$head-$prec-$tag
rm -rf "$out"
mkdir -p "$(dirname "$out")"
OMP_NUM_THREADS=2 WANDB_MODE=disabled .venv/bin/python run.py experiment=cpu_small encoder=e5_small head=$head \
  data.limit_train=160 'data.eval_splits=[in_domain]' data.limit_eval=20 trainer.epochs=1 logger=none \
  trainer.save_checkpoint=false trainer.resume_every=0 $opts hydra.run.dir="$out" > "$out.log" 2>&1
.venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); t=m['train']; print('$head $prec $tag', \
t['windows_trained'], t['seconds'], t['windows_per_s'], t.get('precision'), m['peak_rss_mb'])" "$out/metrics.json"
