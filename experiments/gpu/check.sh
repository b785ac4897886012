#!/usr/bin/env bash
# GPU readiness check: bash experiments/gpu/check.sh OUT_DIR [--dry-run]
#   (a) the tests marked `gpu` (tests/test_gpu.py: every head in every precision, save -> load -> predict,
#       exact resume, non-finite loss, DDP with one process on NCCL), then the torch.compile demo run;
#   (b) training speed per precision (experiments/gpu/speed.py): OUT_DIR/speed.json and OUT_DIR/speed.md.
# On one GPU this takes a few minutes (budget: under 8). --dry-run runs every path it can on the CPU with tiny
# sizes (fp16 through GradScaler("cpu"), torch.compile) in about a minute, so CI keeps the script working.
# Logs: OUT_DIR/pytest.log, OUT_DIR/speed.log; a summary in OUT_DIR/check.json. Exit status: non-zero if a part failed.
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
    TESTS=(tests/test_gpu.py -m gpu -k "not demo_run or fp16")   # one demo run (the GradScaler path) on the CPU
    SPEED=(--dry-run)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "no CUDA device visible to $PY: run with --dry-run on a CPU" >&2; exit 2; }
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    TESTS=(tests/test_gpu.py tests/test_train.py::test_demo_run_with_torch_compile)   # every test in test_gpu.py is `gpu`
    SPEED=()
fi

start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" > "$OUT/pytest.log" 2>&1
tests_rc=$?
tail -n 3 "$OUT/pytest.log"
"$PY" experiments/gpu/speed.py --out "$OUT" "${SPEED[@]}" > "$OUT/speed.log" 2>&1
speed_rc=$?
[[ $speed_rc == 0 ]] && cat "$OUT/speed.md" || tail -n 20 "$OUT/speed.log"
"$PY" - "$OUT" "$tests_rc" "$speed_rc" "$DRY" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, tests_rc, speed_rc, dry, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
json.dump({"dry_run": dry, "tests_ok": tests_rc == 0, "speed_ok": speed_rc == 0, "seconds": seconds},
          open(f"{out}/check.json", "w"), indent=2)
PY
echo "check: tests rc=$tests_rc, speed rc=$speed_rc, $(( $(date +%s) - start )) s; outputs in $OUT"
[[ $tests_rc == 0 && $speed_rc == 0 ]]
