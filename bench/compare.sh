#!/usr/bin/env bash
# compare.sh [--threads N] [--steps S] [--warmup W] [--device cpu|cuda] [--amp none|bf16|fp16]
#            [workloads...]
# Builds bench/weft_step (Release, in $WEFT_BENCH_BUILD or build-bench/) if needed, then for each
# workload runs weft, PyTorch as installed, and PyTorch with glibc told to keep memory
# (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, see DESIGN.md), and prints a table of median
# step times, ratios (weft / PyTorch; lower is better) and peak RSS. Raw JSON lines go to stderr.
# --device cuda (the GPU machine): a CUDA build in build-bench-cuda, batch 256, GPU 0.
# --amp: forward and loss under autocast in both (PyTorch 1.13's CPU autocast takes bf16 only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-/usr/bin/python3}"
threads=1 steps=50 warmup=5 device=cpu amp=none
workloads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --amp) amp="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "compare.sh: unknown flag $1" >&2; exit 2 ;;
    *) workloads+=("$1"); shift ;;
  esac
done
[[ ${#workloads[@]} -eq 0 ]] && workloads=(linear convbn mlp25m)

if [[ "$device" == cuda ]]; then
  build="${WEFT_BENCH_BUILD:-$root/build-bench-cuda}" cuda_flag=ON
else
  build="${WEFT_BENCH_BUILD:-$root/build-bench}" cuda_flag=OFF
fi
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_BENCH=ON \
    -DWEFT_CUDA=$cuda_flag >&2
fi
cmake --build "$build" --target weft_step -j"${JOBS:-2}" >&2
weft_step="$build/bench/weft_step"

common=(--threads "$threads" --steps "$steps" --warmup "$warmup" --device "$device" --amp "$amp")
results=()
for w in "${workloads[@]}"; do
  r1=$("$weft_step" --workload "$w" "${common[@]}")
  r2=$("$python" "$here/torch_step.py" --workload "$w" "${common[@]}")
  r3=$(MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=4294967295 \
       "$python" "$here/torch_step.py" --workload "$w" "${common[@]}")
  printf '%s\n%s\n%s\n' "$r1" "$r2" "$r3" >&2
  results+=("$r1|$r2|$r3")
done

printf '%s\n' "${results[@]}" | "$python" -c '
import json, sys
print(f"device={sys.argv[3]} amp={sys.argv[4]} threads={sys.argv[1]} steps={sys.argv[2]} (median step ms; ratio = weft/torch, lower is better)")
hdr = ("workload", "weft ms", "torch ms", "tuned ms", "weft/torch", "weft/tuned",
       "weft MB", "torch MB", "tuned MB")
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join("---" for _ in hdr) + "|")
for line in sys.stdin:
    a, b, c = (json.loads(s) for s in line.strip().split("|"))
    row = [a["workload"]] + ["%.3f" % r["median_ms"] for r in (a, b, c)]
    row += ["%.3f" % (a["median_ms"] / r["median_ms"]) for r in (b, c)]
    row += ["%.0f" % r["peak_rss_mb"] for r in (a, b, c)]
    print("| " + " | ".join(row) + " |")
' "$threads" "$steps" "$device" "$amp"
