#!/usr/bin/env bash
# The main job: installs dependencies, builds weft (Release), and trains a small CNN on
# Fashion-MNIST (Debian's dataset-fashion-mnist), printing loss and test accuracy per epoch.
# Extra arguments go to the training program (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target train_fashion_mnist
exec build/examples/train_fashion_mnist "$@"
