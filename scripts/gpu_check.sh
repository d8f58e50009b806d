#!/usr/bin/env bash
# Everything that needs a GPU, in three phases that each fit one device-tool command (10 min):
#   scripts/gpu_check.sh build   CUDA Release build of the library, tests and benchmarks (build-gpu)
#   scripts/gpu_check.sh test    the Cuda* tests (NCCL ones under weft-run), then the whole suite
#   scripts/gpu_check.sh bench   issue 7's benchmarks beside the machine's PyTorch
# With $OUT set (the device tool sets it), each phase's output is also kept in $OUT/<phase>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:?usage: scripts/gpu_check.sh build|test|bench}"
export JOBS="${JOBS:-$(nproc)}" WEFT_BENCH_BUILD="$PWD/build-gpu"
log=/dev/null
[[ -n "${OUT:-}" ]] && log="$OUT/$phase.log"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  case "$phase" in
    build)
      cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DWEFT_WERROR=ON >/dev/null
      grep -q '^WEFT_WITH_CUDA_BUILT:INTERNAL=ON' build-gpu/CMakeCache.txt ||
        { echo "gpu_check: nvcc not found, the CUDA backend is off" >&2; exit 1; }
      cmake --build build-gpu -j"$JOBS" 2>&1 | grep -E 'error|warning|Built target weft$' || true
      test -x build-gpu/tests/weft_tests ;;
    test)
      build-gpu/tests/weft_tests --gtest_filter='Cuda*' --gtest_brief=1 || true
      (cd build-gpu && ctest -j"$JOBS" --timeout 300 --output-on-failure 2>&1 | tail -40) ;;
    bench)
      bench/compare.sh --device cuda convbn mlp25m
      bench/overhead.sh --device cuda
      bench/parallel.sh --device cuda
      bench/compare.sh --device cuda --amp fp16 convbn mlp25m ;;
    *) echo "gpu_check: unknown phase '$phase' (build, test or bench)" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$log"
