#!/usr/bin/env bash
# fsdp.sh [--steps S] [--warmup W] [--limit-mb M] [--force]
# DDP, ZeRO (ZeroRedundancyOptimizer) and FSDP (FullyShardedDataParallel) side by side with
# bench/weft_fsdp under weft-run, 1 thread per rank, Gloo:
#   1. memory: mlp100m (100.7M parameters, 12 blocks) with Adam at world 2 and 4, per-rank peak
#      tensor bytes (the CPU allocator's high-water mark over the steps) and peak RSS, beside
#      FSDP's bound (parameters + gradients + Adam state) / N + largest unit + activations;
#   2. step time: mlp25m with SGD (momentum) at world 2, median step, and FSDP / DDP;
#   3. a per-rank memory limit (ulimit -v M MiB, default 1600, on every rank) under which DDP's
#      replicated mlp100m training fails and FSDP's at world 4 trains.
# Prints the JSON lines of bench/weft_fsdp and a summary. Refuses a busy machine (1-minute load
# average, a 2 s sample of /proc/stat) unless --force, which runs anyway and says so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
steps=10 warmup=2 force=0 limit_mb=1600
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --limit-mb) limit_mb="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fsdp.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

busy_percent() {
  local a b
  a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '
    { t = 0; for (i = 2; i <= 9; ++i) t += $i; tot[NR] = t; idle[NR] = $5 + $6 }
    END { dt = tot[2] - tot[1]; printf "%.0f", (dt > 0 ? 100 * (dt - idle[2] + idle[1]) / dt : 0) }'
}
load1=$(cut -d' ' -f1 /proc/loadavg)
build="${WEFT_BENCH_BUILD:-$root/build-bench}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=OFF >&2
fi
cmake --build "$build" --target weft_fsdp weft-run -j"${JOBS:-2}" >&2
busy=$(busy_percent)
if awk -v l="$load1" -v b="$busy" 'BEGIN { exit !(l > 0.5 || b > 10) }'; then
  msg="machine busy: 1-minute load $load1, $busy% of $(nproc) CPUs busy"
  if ((!force)); then
    echo "fsdp.sh: refusing to measure on a busy machine ($msg); pass --force to run anyway" >&2
    exit 3
  fi
  echo "fsdp.sh: WARNING: $msg; timings are not worth much (--force)" >&2
fi

export OMP_NUM_THREADS=1
run() {  # run N args...: rank 0's JSON line
  local n="$1"; shift
  timeout -k 10 "${FSDP_TIMEOUT:-1800}" "$build/tools/weft-run" --standalone --no-prefix \
    --nproc-per-node "$n" "$build/bench/weft_fsdp" --steps "$steps" --warmup "$warmup" "$@" |
    grep '^{'
}

echo "## 1. Peak memory per rank, mlp100m, Adam, batch 8"
for n in 2 4; do
  for s in ddp zero fsdp; do run "$n" --strategy "$s" --model mlp100m --optim adam --batch 8; done
done
echo "## 2. Step time, mlp25m, SGD, batch 16, world 2"
for s in ddp zero fsdp; do run 2 --strategy "$s" --model mlp25m --optim sgd --batch 16; done
echo "## 3. Under ulimit -v ${limit_mb} MiB per rank, mlp100m, Adam, world 4"
for s in ddp fsdp; do
  if out=$( (ulimit -v $((limit_mb * 1024)); run 4 --strategy "$s" --model mlp100m --optim adam \
      --batch 8 --steps 2 --warmup 0) 2>&1); then
    echo "$s: trained within the limit: $(echo "$out" | grep '^{')"
  else
    echo "$s: failed under the limit: $(echo "$out" | grep -m1 -iE 'bad_alloc|memory|fatal|error' || true)"
  fi
done
