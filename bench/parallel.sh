#!/usr/bin/env bash
# DataParallel, ChannelShuffle and SyncBatchNorm benchmarks, with PyTorch's ChannelShuffle
# beside weft's. Usage: bench/parallel.sh   (builds bench/weft_parallel into build-bench)
#        bench/parallel.sh --device cuda   (the GPU machine: ChannelShuffle on GPU 0 against a
#                                           device-to-device copy, weft's and PyTorch's)
#        bench/parallel.sh bn              (only SyncBatchNorm vs BatchNorm2d; BN_RUNS=6 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--device" && "${2:-}" == "cuda" ]]; then
  build="${WEFT_BENCH_BUILD:-build-bench-cuda}"
  [[ -f "$build/CMakeCache.txt" ]] ||
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j"${JOBS:-8}" --target weft_parallel >/dev/null
  "$build/bench/weft_parallel" shuffle --device cuda
  "${PYTHON:-/usr/bin/python3}" - <<'PY'
import torch
x = torch.randn(64, 232, 28, 28, device="cuda")
def med(f):
    f(); torch.cuda.synchronize(); ts = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[10]
gb = 2 * x.numel() * 4 / 1e9
c = med(lambda: x.clone()); s = med(lambda: torch.nn.functional.channel_shuffle(x, 4))
cl = x.contiguous(memory_format=torch.channels_last)
s2 = med(lambda: torch.nn.functional.channel_shuffle(cl, 4))
print('{"bench":"torch_channel_shuffle","device":"cuda","copy_gbps":%.1f,"shuffle_gbps":%.1f,"ratio":%.3f,"channels_last_ratio":%.3f}' % (gb / c * 1e3, gb / s * 1e3, c / s, c / s2))
PY
  exit 0
fi
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF -DWEFT_CUDA=OFF >/dev/null
cmake --build build-bench -j2 --target weft_parallel weft-run >/dev/null
export OMP_WAIT_POLICY=passive
B=build-bench/bench/weft_parallel
if [[ "${1:-}" != bn ]]; then
for t in 1 2; do
  $B shuffle --threads $t
  /usr/bin/python3 - "$t" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
x = torch.randn(64, 232, 28, 28)
def med(f):
    f(); f(); ts = []
    for _ in range(20):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[10]
gb = 2 * x.numel() * 4 / 1e9
c = med(lambda: x.clone()); s = med(lambda: torch.nn.functional.channel_shuffle(x, 4))
print('{"bench":"torch_channel_shuffle","threads":%s,"copy_gbps":%.1f,"shuffle_gbps":%.1f,"ratio":%.3f}' % (sys.argv[1], gb / c, gb / s, c / s))
PY
done
$B dp --devices 2
fi
# SyncBatchNorm at world 2 against plain BatchNorm2d alone, alternating so that both see the
# same machine; two independent plain processes at once show what sharing the memory costs.
plain=() sync=() pair=()
for _ in $(seq "${BN_RUNS:-6}"); do
  plain+=("$($B bn --threads 1)")
  sync+=("$(build-bench/tools/weft-run --nproc-per-node 2 --master-port 29611 --no-prefix \
    $B bn --threads 1)")
  pair+=("$( ($B bn --threads 1 & $B bn --threads 1; wait) | head -1)")
done
printf '%s\n' "${plain[@]}" "${sync[@]}"
printf '%s\n' "${plain[@]}" "${sync[@]}" "${pair[@]}" | /usr/bin/python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
n = len(rows) // 3
med = lambda rs: statistics.median(r["median_ms"] for r in rs)
bn, sbn, two = med(rows[:n]), med(rows[n:2 * n]), med(rows[2 * n:])
print(json.dumps({"bench": "sync_batchnorm_vs_batchnorm2d", "runs": n, "batchnorm2d_ms": round(bn, 2),
                  "sync_batchnorm_world2_ms": round(sbn, 2), "ratio": round(sbn / bn, 3),
                  "two_independent_batchnorm2d_ms": round(two, 2), "floor_ratio": round(two / bn, 3)}))'
