#!/usr/bin/env bash
# ddp.sh [--steps S] [--warmup W] [--worlds "1 2"] [--rounds R] [--iters N] [--force]
#        [workloads...]
# The DistributedDataParallel step of each workload (default linear convbn mlp25m) at each world
# size (default 1 2, and 4 where the machine has at least 4 cores), a fixed per-rank batch and 1
# thread per rank: weft (bench/weft_ddp) and PyTorch (bench/torch_ddp.py, gloo, glibc told to
# keep memory) alternating, every rank launched by weft-run, and at world > 1 weft again with
# WEFT_SHM=0 (all-reduce on Gloo alone, without the shared-memory path), and mlp25m at world 2
# with bf16_compress_hook and PowerSGD (rank 1), and N world-1 runs at once (the machine's own
# ceiling on scaling, no DDP); then the raw all-reduce of 84 MB and 80 KB at
# world 2 (N iterations, default 50), weft with and without WEFT_SHM=0. R rounds (default 1)
# repeat it all; the tables take the median over rounds. Prints markdown tables
# (bench/README.md, "DDP at world N"); the raw JSON lines go to stderr. Refuses a busy machine
# (1-minute load average, a 2 s sample of /proc/stat) unless --force, which runs anyway and
# puts a warning above the tables.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-/usr/bin/python3}"
ncpu=$(nproc)
steps=50 warmup=5 rounds=1 iters=50 force=0 worlds="1 2"
((ncpu >= 4)) && worlds="1 2 4"
workloads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --worlds) worlds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "ddp.sh: unknown flag $1" >&2; exit 2 ;;
    *) workloads+=("$1"); shift ;;
  esac
done
[[ ${#workloads[@]} -eq 0 ]] && workloads=(linear convbn mlp25m)
for n in $worlds; do
  if ((n > ncpu)); then
    echo "ddp.sh: world $n needs $n cores (1 thread per rank); this machine has $ncpu" >&2
    exit 2
  fi
done

# The load average before the build (which would raise it), the CPU sample after it (just before
# timing): either above its limit means someone else is using the machine.
source "$here/quiet.sh"
max_load="${DDP_MAX_LOAD:-0.5}" max_busy="${DDP_MAX_BUSY:-10}"
load1=$(cut -d' ' -f1 /proc/loadavg)

build="${WEFT_BENCH_BUILD:-$root/build-bench}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=OFF >&2
fi
cmake --build "$build" --target weft_ddp weft_allreduce weft-run -j"${JOBS:-2}" >&2

check_quiet ddp.sh "$force" "$load1" "$max_load" "$max_busy"

# Every rank of both libraries: 1 thread, launched by weft-run on a free port; only rank 0
# prints (its JSON lines are the only stdout lines starting with "{").
export OMP_NUM_THREADS=1
# A run that hangs is stopped after DDP_TIMEOUT seconds (weft-run passes SIGTERM to its ranks).
launch() {
  local n="$1"; shift
  timeout -k 10 "${DDP_TIMEOUT:-900}" \
    "$build/tools/weft-run" --standalone --no-prefix --nproc-per-node "$n" "$@" | grep '^{'
}
# One run's JSON line(s), echoed to stderr and kept; a failed run stops the script.
record() {
  local out
  if ! out=$("$@"); then
    echo "ddp.sh: '$*' failed or timed out (DDP_TIMEOUT=${DDP_TIMEOUT:-900} s)" >&2
    exit 1
  fi
  echo "$out" >&2
  lines+=("$out")
}
tuned() { MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=4294967295 "$@"; }
noshm() { WEFT_SHM=0 "$@"; }  # weft's rows "weft-noshm": the Gloo group without shared memory
step=(--threads 1 --steps "$steps" --warmup "$warmup")
weft_ddp() { launch "$2" "$build/bench/weft_ddp" --workload "$1" "${step[@]}" "${@:3}"; }
torch_ddp() { tuned launch "$2" "$python" "$here/torch_ddp.py" --workload "$1" "${step[@]}"; }
ar=(--iters "$iters" --warmup 5)
weft_ar() { launch 2 "$build/bench/weft_allreduce" "${ar[@]}"; }
weft_ddp_noshm() { noshm weft_ddp "$@"; }
# The machine's own ceiling on scaling: N world-1 runs at once, sharing nothing but the machine
# (its cores, caches and memory bandwidth). DDP at world N cannot step faster than they do; one
# line for them, "weft-apart" at world N: the slowest one's median (as weft_ddp reports ranks).
weft_apart() {
  local w="$1" n="$2" dir pids=()
  dir=$(mktemp -d)
  for k in $(seq "$n"); do weft_ddp "$w" 1 > "$dir/$k" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  cat "$dir"/* | "$python" -c 'import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
out = dict(runs[0], impl="weft-apart", world=len(runs))
out["median_ms"] = max(r["median_ms"] for r in runs)
print(json.dumps(out))'
  rm -rf "$dir"
}
weft_ar_noshm() { noshm weft_ar; }
torch_ar() { tuned launch 2 "$python" "$here/torch_allreduce.py" "${ar[@]}"; }

# weft and PyTorch alternate cell by cell; which goes first swaps from round to round.
lines=()
for r in $(seq "$rounds"); do
  for w in "${workloads[@]}"; do
    for n in $worlds; do
      if ((r % 2)); then pair=(weft_ddp torch_ddp); else pair=(torch_ddp weft_ddp); fi
      for f in "${pair[@]}"; do record "$f" "$w" "$n"; done
      if ((n > 1)); then
        record weft_ddp_noshm "$w" "$n"
        record weft_apart "$w" "$n"
      fi
      # The communication hooks where they matter: the large model at world 2.
      if [[ $w == mlp25m && $n == 2 ]]; then
        for h in bf16 powersgd; do record weft_ddp "$w" "$n" --hook "$h"; done
      fi
    done
  done
  if ((ncpu >= 2)); then
    if ((r % 2)); then pair=(weft_ar torch_ar); else pair=(torch_ar weft_ar); fi
    for f in "${pair[@]}"; do record "$f"; done
    record weft_ar_noshm
  fi
done

after=$(busy_percent)
if awk -v b="$after" -v mb="$max_busy" 'BEGIN { exit !(b > mb) }'; then
  warning="${warning:+$warning; }machine busy after the run: $after% of $ncpu CPUs busy"
fi
printf '%s\n' "${lines[@]}" |
  "$python" "$here/ddp_report.py" --steps "$steps" --rounds "$rounds" --iters "$iters" \
    --warning "$warning"
