#!/usr/bin/env bash
# Builds the safetensors, IDX, store-protocol and unpickler fuzzers with clang's libFuzzer + ASan + UBSan
# and runs each for the given number of seconds, starting from the seed corpora in fuzz/corpus/
# (copied, so new inputs land in the build dir). Exits non-zero when a fuzzer finds a crash, leak
# or UB report.
# Usage: fuzz/run_fuzz.sh <build-dir> <seconds>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <build-dir> <seconds>" >&2
  exit 2
fi
build=$1
seconds=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CXX=${CXX:-clang++}
mkdir -p "$build"
build=$(cd "$build" && pwd)

flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -I"$root/include" -I"$root/src")

"$CXX" "${flags[@]}" -o "$build/fuzz_safetensors" "$root/fuzz/fuzz_safetensors.cpp" \
  "$root/src/serialize/safetensors_format.cpp" "$root/src/serialize/checksum.cpp" \
  "$root/src/error.cpp" "$root/src/read_file.cpp" -lxxhash
"$CXX" "${flags[@]}" -o "$build/fuzz_idx" "$root/fuzz/fuzz_idx.cpp" \
  "$root/src/data/idx_format.cpp" "$root/src/data/gzip_stream.cpp" "$root/src/error.cpp" "$root/src/read_file.cpp" -lz
"$CXX" "${flags[@]}" -o "$build/fuzz_store_protocol" "$root/fuzz/fuzz_store_protocol.cpp" \
  "$root/src/distributed/store_protocol.cpp" "$root/src/error.cpp" "$root/src/read_file.cpp"
"$CXX" "${flags[@]}" -o "$build/fuzz_unpickler" "$root/fuzz/fuzz_unpickler.cpp" \
  "$root/src/serialize/pickle/unpickler.cpp" "$root/src/serialize/pickle/torch_globals.cpp" \
  "$root/src/error.cpp"

status=0
for name in safetensors idx store_protocol unpickler; do
  corpus="$build/corpus_$name"
  mkdir -p "$corpus" "$build/artifacts_$name"
  seeds=$name
  [[ $name == store_protocol ]] && seeds=store
  cp -n "$root/fuzz/corpus/$seeds/"* "$corpus/" 2>/dev/null || true
  echo "== fuzz_$name for ${seconds}s"
  if ! (cd "$build" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "./fuzz_$name" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts_$name/" "$corpus" \
        >"$build/fuzz_$name.log" 2>&1); then
    echo "fuzz_$name FAILED; log: $build/fuzz_$name.log" >&2
    tail -n 40 "$build/fuzz_$name.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$build/fuzz_$name.log" | tail -n 2
  fi
done
exit $status
