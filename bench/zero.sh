#!/usr/bin/env bash
# zero.sh [--steps S] [--warmup W] [--world N] [--rounds R] [--force] [workload]
# The DistributedDataParallel step with Adam of a workload (default mlp25m) at world N (default
# 2), 1 thread per rank, every rank launched by weft-run: the optimizer whole on every rank
# (ddp) or sharded by ZeroRedundancyOptimizer (zero: the updated shares broadcast, one
# broadcast per rank, weft's default and PyTorch's; zero-allgather: weft's all-gathers of flat
# buffers; zero2: ZeRO-2, gradients reduce-scattered by DDP's buckets), weft (bench/weft_zero)
# and PyTorch 1.13 (bench/torch_zero.py, gloo, glibc told to keep memory as in
# bench/ddp.sh) alternating. Prints a markdown table (bench/README.md, "ZeRO"): median step ms (slowest rank),
# peak RSS and optimizer state per rank; R rounds (default 1) repeat it all and the table takes
# the median over rounds. The raw JSON lines go to stderr. Refuses a busy machine (1-minute
# load average, a 2 s sample of /proc/stat) unless --force, which runs anyway and puts a
# warning above the table.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-/usr/bin/python3}"
ncpu=$(nproc)
steps=20 warmup=3 rounds=1 force=0 world=2 workload=mlp25m
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --world) world="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "zero.sh: unknown flag $1" >&2; exit 2 ;;
    *) workload="$1"; shift ;;
  esac
done
if ((world > ncpu)); then
  echo "zero.sh: world $world needs $world cores (1 thread per rank); this machine has $ncpu" >&2
  exit 2
fi

source "$here/quiet.sh"
max_load="${ZERO_MAX_LOAD:-0.5}" max_busy="${ZERO_MAX_BUSY:-10}"
load1=$(cut -d' ' -f1 /proc/loadavg)

build="${WEFT_BENCH_BUILD:-$root/build-bench}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=OFF >&2
fi
cmake --build "$build" --target weft_zero weft-run -j"${JOBS:-2}" >&2

check_quiet zero.sh "$force" "$load1" "$max_load" "$max_busy"

export OMP_NUM_THREADS=1
launch() {
  timeout -k 10 "${ZERO_TIMEOUT:-900}" \
    "$build/tools/weft-run" --standalone --no-prefix --nproc-per-node "$world" "$@" | grep '^{'
}
record() {
  local out
  if ! out=$("$@"); then
    echo "zero.sh: '$*' failed or timed out (ZERO_TIMEOUT=${ZERO_TIMEOUT:-900} s)" >&2
    exit 1
  fi
  echo "$out" >&2
  lines+=("$out")
}
# PyTorch's ranks, started here on a free port: weft-run holds the store's port for rank 0
# (Note [Store admission]), which PyTorch's TCPStore cannot adopt, and this Debian's torchrun
# fails on Python 3.12.
launch_torch() {
  local port pids=() rc=0
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  for ((r = 0; r < world; ++r)); do
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=$r LOCAL_RANK=$r WORLD_SIZE=$world \
      timeout -k 10 "${ZERO_TIMEOUT:-900}" "$python" "$@" > "$tmp/rank$r.out" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  grep '^{' "$tmp/rank0.out" || rc=1
  return $rc
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tuned() { MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=4294967295 "$@"; }
step=(--workload "$workload" --threads 1 --steps "$steps" --warmup "$warmup")
weft() { launch "$build/bench/weft_zero" --mode "$1" "${step[@]}"; }
torch() { tuned launch_torch "$here/torch_zero.py" --mode "$1" "${step[@]}"; }

lines=()
for r in $(seq "$rounds"); do
  runs=("weft ddp" "torch ddp" "weft zero" "torch zero" "weft zero-allgather" "weft zero2")
  if ((r % 2 == 0)); then runs=("torch ddp" "weft ddp" "torch zero" "weft zero" "weft zero2" "weft zero-allgather"); fi
  for run in "${runs[@]}"; do record $run; done
done

after=$(busy_percent)
if awk -v b="$after" -v mb="$max_busy" 'BEGIN { exit !(b > mb) }'; then
  warning="${warning:+$warning; }machine busy after the run: $after% of $ncpu CPUs busy"
fi
printf '%s\n' "${lines[@]}" | "$python" "$here/zero_report.py" "$warning"
