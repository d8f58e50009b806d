#!/usr/bin/env bash
# The main job: installs dependencies, builds weft (Release), and trains the default CNN on
# Fashion-MNIST (Debian's dataset-fashion-mnist) with DistributedDataParallel over 2
# processes launched by weft-run. Rank 0 prints progress and per-epoch loss, accuracy and
# throughput; metrics and checkpoints go to ./checkpoints. Extra arguments go to weft-train
# (try --help; --resume continues an interrupted run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target weft-train weft-run
# libgomp's idle threads spin by default, which steals the cores from the other rank.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec build/tools/weft-run --nproc-per-node "${NPROC:-2}" build/tools/weft-train "$@"
