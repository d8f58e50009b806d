#!/usr/bin/env bash
# Everything that needs a GPU, in phases that each fit one device-tool command (10 min):
#   scripts/gpu_check.sh probe   what the machine has: compilers, CUDA, weft's build dependencies
#   scripts/gpu_check.sh build   CUDA Release build of the library, tests and benchmarks (build-gpu)
#   scripts/gpu_check.sh test    the Cuda* tests (NCCL ones under weft-run), then the whole suite
#   scripts/gpu_check.sh bench   issue 7's benchmarks beside the machine's PyTorch
#   scripts/gpu_check.sh all     build, the Cuda* tests and the benchmarks in one go (a machine
#                                stays warm only briefly, so build-gpu rarely survives to a
#                                second command: test and bench rebuild it when it is missing)
# With $OUT set (the device tool sets it), each phase's output is also kept in $OUT/<phase>.log
# and the full build log in $OUT/build-full.log. Uses the python3 on PATH (the GPU machine's
# holds PyTorch) unless $PYTHON says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:?usage: scripts/gpu_check.sh probe|build|test|bench|all}"
export JOBS="${JOBS:-$(nproc)}" WEFT_BENCH_BUILD="$PWD/build-gpu"
export PYTHON="${PYTHON:-$(command -v python3)}" PATH="/usr/local/cuda/bin:$PATH"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out="${OUT:-build-gpu}"
mkdir -p "$out"
log="$out/$phase.log"

probe() {
  command -v nvcc g++ cmake make ninja "$PYTHON" || true
  g++ --version | head -1 || true
  nvcc --version | tail -1 || true
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' || true
  for h in cblas.h oneapi/dnnl/dnnl.hpp nlohmann/json.hpp gloo/config.h mpi.h gtest/gtest.h zlib.h; do
    ls /usr/include/"$h" /usr/include/*/"$h" 2>/dev/null | head -1 || echo "missing header: $h"
  done
  ldconfig -p | grep -E 'openblas|dnnl|gloo|libmpi\.|cudnn|nccl|cublas\.so' || true
}

build() {
  SECONDS=0
  # No -Werror here: this compiler is not CI's, and a new warning must not cost the machine.
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; echo "gpu_check: configure failed"; return 1; }
  grep -q '^WEFT_WITH_CUDA_BUILT:INTERNAL=ON' build-gpu/CMakeCache.txt ||
    { echo "gpu_check: nvcc not found, the CUDA backend is off"; return 1; }
  local rc=0
  cmake --build build-gpu -j"$JOBS" >"$out/build-full.log" 2>&1 || rc=$?
  grep -E -A4 'error|warning' "$out/build-full.log" | head -200 || true
  echo "gpu_check: build rc=$rc in ${SECONDS}s"
  return "$rc"
}

ensure_build() {
  [[ -x build-gpu/tests/weft_tests ]] && return 0
  echo "gpu_check: no build-gpu on this machine: building first"
  build
}

cuda_tests() {
  SECONDS=0
  build-gpu/tests/weft_tests --gtest_filter='Cuda*' --gtest_brief=1 2>&1 | tee "$out/cuda-tests.log" || true
  echo "gpu_check: Cuda* tests in ${SECONDS}s"
}

bench() {
  "$PYTHON" -c 'import torch; assert torch.cuda.is_available(); print("torch", torch.__version__)'
  # Each benchmark on its own: one failing must not hide the others' figures.
  local step
  for step in "bench/compare.sh --device cuda convbn mlp25m" "bench/overhead.sh --device cuda" \
    "bench/parallel.sh --device cuda" "bench/compare.sh --device cuda --amp fp16 convbn mlp25m"; do
    echo "== $step"
    $step || echo "gpu_check: FAILED (rc=$?): $step"
  done
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  case "$phase" in
    probe) probe ;;
    build) build ;;
    test)
      ensure_build
      cuda_tests
      (cd build-gpu && ctest -j"$JOBS" --timeout 300 --output-on-failure >"$out/ctest.log" 2>&1) ||
        true
      tail -40 "$out/ctest.log" ;;
    bench)
      ensure_build
      bench ;;
    all)
      build
      cuda_tests
      bench ;;
    *) echo "gpu_check: unknown phase '$phase' (probe, build, test, bench or all)" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$log"
