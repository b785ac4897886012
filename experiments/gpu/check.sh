#!/usr/bin/env bash
# GPU readiness check: bash experiments/gpu/check.sh OUT_DIR [--dry-run]
#   (a) the tests marked `gpu` (tests/train/test_gpu.py: every head in every precision, save -> load -> predict,
#       exact resume, non-finite loss, DDP with one process on NCCL), then the torch.compile demo run;
#   (b) training speed per precision (experiments/gpu/speed.py): OUT_DIR/speed.json and OUT_DIR/speed.md;
#   (c) the bench (python -m mrc.bench --device cuda): ours vs the HF Trainer peer on roberta_wwm's shape in fp32,
#       trainer.precision=auto's precision and that compiled: windows/s, tokens/s, MFU, peak memory,
#       OUT_DIR/bench_train.json and OUT_DIR/bench_train.md.
# On one GPU this takes a few minutes (budget: under 10; not yet timed on a GPU with (c)). --dry-run runs every path it
# can on the CPU with tiny sizes (fp16 through GradScaler("cpu"), torch.compile in (a) and (b); the bench's fp32 and
# fp16 on the tiny shape) in a few minutes, so CI keeps the script working.
# Logs: OUT_DIR/pytest.log, OUT_DIR/speed.log, OUT_DIR/bench.log; a summary in OUT_DIR/check.json. Exit status:
# non-zero if a part failed.
set -uo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash experiments/gpu/check.sh OUT_DIR [--dry-run]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
cd "$ROOT" || exit 2
export WANDB_MODE=disabled CUBLAS_WORKSPACE_CONFIG=:4096:8

if [[ $DRY == 1 ]]; then
    export MRC_GPU_DRY_RUN=1 MRC_CPU_FP16=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    TESTS=(tests/train/test_gpu.py -m gpu -k "not demo_run or fp16")   # one demo run (the GradScaler path) on the CPU
    SPEED=(--dry-run)
    BENCH=(--device cpu --shape tiny --windows 32 --batch-size 8 --warmup-batches 1 --variants fp32,fp16)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "no CUDA device visible to $PY: run with --dry-run on a CPU" >&2; exit 2; }
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    TESTS=(tests/train/test_gpu.py tests/train/test_loop.py::test_demo_run_with_torch_compile)   # every test in tests/train/test_gpu.py is `gpu`
    SPEED=()
    BENCH=(--device cuda --shape base --variants fp32,auto,auto+compile)
fi

start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" > "$OUT/pytest.log" 2>&1
tests_rc=$?
tail -n 3 "$OUT/pytest.log"
"$PY" experiments/gpu/speed.py --out "$OUT" "${SPEED[@]}" > "$OUT/speed.log" 2>&1
speed_rc=$?
[[ $speed_rc == 0 ]] && cat "$OUT/speed.md" || tail -n 20 "$OUT/speed.log"
"$PY" -m mrc.bench "${BENCH[@]}" --out "$OUT/bench_train.json" > "$OUT/bench.log" 2>&1
bench_rc=$?
[[ $bench_rc == 0 ]] && cat "$OUT/bench_train.md" || tail -n 20 "$OUT/bench.log"
"$PY" - "$OUT" "$tests_rc" "$speed_rc" "$bench_rc" "$DRY" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, tests_rc, speed_rc, bench_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dry, seconds = sys.argv[5] == "1", int(sys.argv[6])
json.dump({"dry_run": dry, "tests_ok": tests_rc == 0, "speed_ok": speed_rc == 0, "bench_ok": bench_rc == 0,
           "seconds": seconds}, open(f"{out}/check.json", "w"), indent=2)
PY
echo "check: tests rc=$tests_rc, speed rc=$speed_rc, bench rc=$bench_rc, $(( $(date +%s) - start )) s; outputs in $OUT"
[[ $tests_rc == 0 && $speed_rc == 0 && $bench_rc == 0 ]]
