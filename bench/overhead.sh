#!/usr/bin/env bash
# overhead.sh [--device cpu|cuda] [--steps S] [workloads...]
# What wrapping a model costs: the training step of each workload plain, in
# DistributedDataParallel at world 1 and in DataParallel over one device, for weft and for
# PyTorch in the same run; prints each wrapper's overhead over the plain model (lower is
# better; issue target on the GPU machine: <= 5% for both). Raw JSON lines go to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-/usr/bin/python3}"
device=cpu steps=50
workloads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    -*) echo "overhead.sh: unknown flag $1" >&2; exit 2 ;;
    *) workloads+=("$1"); shift ;;
  esac
done
[[ ${#workloads[@]} -eq 0 ]] && workloads=(convbn mlp25m)
if [[ "$device" == cuda ]]; then build="${WEFT_BENCH_BUILD:-$root/build-bench-cuda}" cuda_flag=ON
else build="${WEFT_BENCH_BUILD:-$root/build-bench}" cuda_flag=OFF; fi
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=$cuda_flag >&2
fi
cmake --build "$build" --target weft_step -j"${JOBS:-2}" >&2
common=(--threads 1 --steps "$steps" --warmup 5 --device "$device")
lines=()
for w in "${workloads[@]}"; do
  for wrap in none ddp dp; do
    lines+=("$("$build/bench/weft_step" --workload "$w" --wrap "$wrap" "${common[@]}")")
    lines+=("$("$python" "$here/torch_step.py" --workload "$w" --wrap "$wrap" "${common[@]}")")
  done
done
printf '%s\n' "${lines[@]}" >&2
printf '%s\n' "${lines[@]}" | "$python" -c '
import json, sys
r = {}
for line in sys.stdin:
    d = json.loads(line)
    r[(d["impl"], d["workload"], d["wrap"])] = d["median_ms"]
print(f"device={sys.argv[1]} (median step ms; overhead = wrapped / plain - 1)")
print("| workload | impl | plain ms | ddp ms | dp ms | ddp overhead | dp overhead |")
print("|---|---|---|---|---|---|---|")
for (impl, w, wrap), plain in sorted(r.items()):
    if wrap != "none":
        continue
    ddp, dp = r[(impl, w, "ddp")], r[(impl, w, "dp")]
    print(f"| {w} | {impl} | {plain:.3f} | {ddp:.3f} | {dp:.3f} | {ddp / plain - 1:+.1%} | {dp / plain - 1:+.1%} |")
' "$device"
