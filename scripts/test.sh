#!/usr/bin/env bash
# The test command: installs dependencies, builds with -Wall -Wextra -Werror, runs the test
# suite, a downstream find_package(weft) consumer build against the installed library, an
# ASan+UBSan build of the tests, a TSan build of the threaded parts, and a bounded fuzz run
# of the file and store-message parsers.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
bash scripts/setup.sh

echo "== clang-format"
git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run -Werror

echo "== docs/ARCHITECTURE.md names only paths that exist, and the notes the code cites"
python3 scripts/check_docs.py

echo "== release build and tests"
# The CUDA backend is built where nvcc is found (CUDA tests skip without a GPU); the sanitizer
# builds below leave it out (-DWEFT_CUDA=OFF) to keep CI time down.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DWEFT_WERROR=ON -DCMAKE_INSTALL_PREFIX="$PWD/build/install" >/dev/null
if grep -q '^WEFT_WITH_CUDA_BUILT:INTERNAL=ON' build/CMakeCache.txt; then
  echo "release build: CUDA backend ON (CUDA tests skip without a GPU)"
else
  echo "release build: CUDA backend OFF (CPU only)"
fi
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure -j"$JOBS" --timeout 600)

echo "== install and downstream consumer (find_package(weft))"
cmake --install build >/dev/null
cmake -S tests/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer -j"$JOBS" >/dev/null
LD_LIBRARY_PATH="$PWD/build/install/lib" build/consumer/weft_consumer

echo "== sanitizer build (ASan + UBSan) and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWEFT_SANITIZE=ON -DWEFT_WERROR=ON -DWEFT_BUILD_BENCH=OFF \
  -DWEFT_CUDA=OFF >/dev/null
cmake --build build-asan -j"$JOBS"
(cd build-asan && ASAN_OPTIONS=detect_leaks=0 ctest --output-on-failure -j"$JOBS" --timeout 900)

echo "== thread sanitizer build of the threaded parts"
# OpenMP's runtime is not instrumented, so kernels run single-threaded here; the threads
# under test are weft's own (data loader workers, DataParallel replicas, the multi-device
# backward engine, the store server, the shared-memory collectives with ranks as threads).
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DWEFT_WERROR=ON -DWEFT_BUILD_BENCH=OFF -DWEFT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -O1" -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build build-tsan -j"$JOBS" --target weft_tests
OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" build-tsan/tests/weft_tests \
  --gtest_filter='Store*:TCPStore*:FileStore*:DataLoader*:DataParallel*:Autograd*:Threads*:Autocast*:ShmGroup*' --gtest_brief=1

echo "== bounded fuzz run of the file parsers"
bash fuzz/run_fuzz.sh build-fuzz "${FUZZ_SECONDS:-30}"
echo "all checks passed"
