#!/usr/bin/env bash
# Every GPU check of the project in one run of at most 9 minutes (a 10-minute GPU loan, less the machine's start):
#   1. setup: `source .gpu-wheels/install.sh` where the checkout carries it (a GPU machine without Ray, Optuna and
#      hear21passt: see "Performance on a GPU" in README.md);
#   2. tests/cuda_scenarios.py: the stand-in tests' real-GPU twins, the same end-to-end runs on the real device;
#   3. tests/benchmarks/bench_gpu.py in the time left, with the DCASE24 projection.
# Each step has its own timeout, and a failed step does not stop the next; the exit status is 0 only if all passed.
# Figures, logs and summary.txt go to OUTPUT_DIR. Run from anywhere:
#
#   bash tests/benchmarks/gpu_check.sh [OUTPUT_DIR]        # default ./gpu_check_out
#   GPU_CHECK_DRY=1 bash tests/benchmarks/gpu_check.sh     # on a CPU, to check this script: the benchmark's
#                                                          # --cpu-dry-run; of the twins, only that they start
# PYTHON names the interpreter (default python3).
set -u
cd "$(dirname "$0")/../.."
out=${1:-gpu_check_out}
dry=${GPU_CHECK_DRY:-0}
python=${PYTHON:-python3}
total_s=540
setup_s=120
scenarios_s=150
failures=0
mkdir -p "$out"
: > "$out/summary.txt"

note() { echo "$*" | tee -a "$out/summary.txt"; }
failed() { note "$*"; failures=$((failures + 1)); }

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
note "gpu_check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
     "GPU: ${gpu:-none found}$([ "$dry" = 1 ] && echo ' (dry run: the benchmark on the CPU)')"

# --- 1. setup ---------------------------------------------------------------------------------------------------------
start=$SECONDS
if [ -f .gpu-wheels/install.sh ]; then
  # The install (unpacking Ray) runs under its timeout in a child shell; sourcing it again here, once installed, only
  # sets this shell's environment.
  if timeout -k 5 "$setup_s" bash -c 'source .gpu-wheels/install.sh' > "$out/setup.log" 2>&1; then
    # shellcheck disable=SC1091
    source .gpu-wheels/install.sh
    note "setup: ok ($((SECONDS - start)) s)"
  else
    failed "setup: FAILED (exit $?, $((SECONDS - start)) s; see $out/setup.log)"
  fi
else
  note "setup: no .gpu-wheels/install.sh; this machine's own packages"
fi

# --- 2. the real-GPU twins of the stand-in tests ------------------------------------------------------------------------
start=$SECONDS
if [ ! -f tests/cuda_scenarios.py ]; then
  if [ "$dry" = 1 ]; then
    note "cuda_scenarios: skipped (no tests/cuda_scenarios.py yet)"
  else
    failed "cuda_scenarios: MISSING (no tests/cuda_scenarios.py)"
  fi
elif [ "$dry" = 1 ]; then
  # On a CPU the scenarios take longer than their timeout; a dry run checks that the script imports and starts.
  if timeout -k 10 60 "$python" tests/cuda_scenarios.py --help > "$out/cuda_scenarios.log" 2>&1; then
    note "cuda_scenarios: starts (dry run: --help only; the scenarios themselves run on a GPU)"
  else
    failed "cuda_scenarios: FAILED to start (see $out/cuda_scenarios.log)"
  fi
else
  storage=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-scenarios-XXXXXX")
  timeout -k 10 "$scenarios_s" "$python" tests/cuda_scenarios.py --device cuda --storage "$storage" 2>&1 |
    tee "$out/cuda_scenarios.log"
  code=${PIPESTATUS[0]}
  rm -rf "$storage"
  if [ "$code" = 0 ]; then
    note "cuda_scenarios: ok ($((SECONDS - start)) s)"
  elif [ "$code" = 124 ] || [ "$code" = 137 ]; then
    failed "cuda_scenarios: TIMED OUT after ${scenarios_s} s (see $out/cuda_scenarios.log)"
  else
    failed "cuda_scenarios: FAILED (exit $code, $((SECONDS - start)) s; see $out/cuda_scenarios.log)"
  fi
fi

# --- 3. the benchmark, in what is left of the 9 minutes ------------------------------------------------------------
start=$SECONDS
budget=$((total_s - SECONDS - 25))  # 25 s: the benchmark's timeout margin (15 s) and this script's ending
if [ "$budget" -lt 60 ]; then
  failed "benchmark: skipped (only $budget s of the $total_s s left)"
else
  flags=(--budget-s "$budget" --project dcase24 --out "$out/bench_gpu.json" --logs "$out/bench_logs")
  [ "$dry" = 1 ] && flags+=(--cpu-dry-run)
  timeout -k 10 $((budget + 15)) "$python" tests/benchmarks/bench_gpu.py "${flags[@]}" 2>&1 | tee "$out/bench_gpu.log"
  code=${PIPESTATUS[0]}
  if [ "$code" = 0 ]; then
    note "benchmark: ok ($((SECONDS - start)) s of a $budget s budget; figures in $out/bench_gpu.json)"
  elif [ "$code" = 124 ] || [ "$code" = 137 ]; then
    failed "benchmark: TIMED OUT after $((SECONDS - start)) s (see $out/bench_gpu.log)"
  else
    failed "benchmark: FAILED (exit $code, $((SECONDS - start)) s; see $out/bench_gpu.log)"
  fi
fi

# --- summary -------------------------------------------------------------------------------------------------------
sed -n '/^--- summary/,$p' "$out/bench_gpu.log" 2>/dev/null >> "$out/summary.txt"
if [ "$SECONDS" -lt "$total_s" ]; then verdict=met; else verdict=missed; fi
echo "gpu_check: $SECONDS s in all [target under 9 minutes: $verdict]; $failures step(s) failed" >> "$out/summary.txt"
echo
echo "=== gpu_check summary ($out/summary.txt) ==="
cat "$out/summary.txt"
[ "$failures" = 0 ]
