#!/usr/bin/env bash
# fsdp.sh [--steps S] [--warmup W] [--limit-mb M] [--memory-only] [--force]
# DDP, ZeRO (ZeroRedundancyOptimizer) and FSDP (FullyShardedDataParallel) side by side with
# bench/weft_fsdp under weft-run, 1 thread per rank, Gloo:
#   1. memory: mlp100m (100.7M parameters, 12 blocks) with Adam at world 2 and 4, per-rank peak
#      tensor bytes (the CPU allocator's high-water mark over the steps) and peak RSS, beside
#      FSDP's bound (parameters + gradients + Adam state) / N + largest unit + activations; FSDP
#      twice: with its defaults, and with backward_prefetch and overlap_reduce_scatter off
#      ("fsdp-lean": less memory, less overlap);
#   2. step time: mlp25m with SGD (momentum) at world 2, median step, and FSDP / DDP;
#   3. a per-rank memory limit (ulimit -v M MiB, default 1600, on every rank) under which DDP's
#      replicated mlp100m training fails and FSDP's at world 4 trains.
# --memory-only runs part 1 alone. Prints the JSON lines of bench/weft_fsdp and a summary.
# Refuses a busy machine (1-minute load average, a 2 s sample of /proc/stat) unless --force,
# which runs anyway and says so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
steps=10 warmup=2 force=0 limit_mb=1600 memory_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --limit-mb) limit_mb="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --memory-only) memory_only=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "fsdp.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

source "$here/quiet.sh"
max_load="${FSDP_MAX_LOAD:-0.5}" max_busy="${FSDP_MAX_BUSY:-10}"
load1=$(cut -d' ' -f1 /proc/loadavg)
build="${WEFT_BENCH_BUILD:-$root/build-bench}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=OFF >&2
fi
cmake --build "$build" --target weft_fsdp weft-run -j"${JOBS:-2}" >&2
check_quiet fsdp.sh "$force" "$load1" "$max_load" "$max_busy"

export OMP_NUM_THREADS=1
run() {  # run N args...: rank 0's JSON line
  local n="$1"; shift
  timeout -k 10 "${FSDP_TIMEOUT:-1800}" "$build/tools/weft-run" --standalone --no-prefix \
    --nproc-per-node "$n" "$build/bench/weft_fsdp" --steps "$steps" --warmup "$warmup" "$@" |
    grep '^{'
}

field() {  # field NAME JSON
  sed -E "s/.*\"$1\":\"?([^,\"}]*).*/\1/" <<<"$2"
}
echo "## 1. Peak memory per rank, mlp100m, Adam, batch 8"
summary=()
for n in 2 4; do
  for s in ddp zero fsdp fsdp-lean; do
    if [[ "$s" == fsdp-lean ]]; then
      line=$(run "$n" --strategy fsdp --overlap 0 --model mlp100m --optim adam --batch 8)
    else
      line=$(run "$n" --strategy "$s" --model mlp100m --optim adam --batch 8)
    fi
    echo "$line"
    peak=$(field peak_tensor_mb "$line") bound=$(field fsdp_bound_mb "$line")
    verdict=$(awk -v p="$peak" -v b="$bound" 'BEGIN { print (p <= b ? "within" : "ABOVE") }')
    summary+=("$(printf '%-9s world %d: peak %8.1f MB per rank, FSDP bound %6.1f MB (%s)' \
      "$s" "$n" "$peak" "$bound" "$verdict")")
  done
done
printf '%s\n' "${summary[@]}"
if [[ "$memory_only" == 1 ]]; then exit 0; fi
echo "## 2. Step time, mlp25m, SGD, batch 16, world 2"
declare -A ms
for s in ddp zero fsdp; do
  line=$(run 2 --strategy "$s" --model mlp25m --optim sgd --batch 16)
  echo "$line"
  ms[$s]=$(field median_ms "$line")
done
awk -v d="${ms[ddp]}" -v z="${ms[zero]}" -v f="${ms[fsdp]}" 'BEGIN {
  printf "median step: ddp %.1f ms, zero %.1f ms (%.2fx ddp), fsdp %.1f ms (%.2fx ddp; target <= 1.3x)\n",
    d, z, z / d, f, f / d }'
if [[ -n "$warning" ]]; then echo "fsdp.sh: WARNING: $warning (--force): timings not worth much"; fi
echo "## 3. Under ulimit -v ${limit_mb} MiB per rank, mlp100m, Adam, world 4"
for s in ddp fsdp; do
  if out=$( (ulimit -v $((limit_mb * 1024)); run 4 --strategy "$s" --model mlp100m --optim adam \
      --batch 8 --steps 2 --warmup 0) 2>&1); then
    echo "$s: trained within the limit: $(echo "$out" | grep '^{')"
  else
    echo "$s: failed under the limit: $(echo "$out" | grep -m1 -iE 'bad_alloc|memory|fatal|error' || true)"
  fi
done
