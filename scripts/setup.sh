#!/usr/bin/env bash
# Installs what weft needs from Debian's packages (run as root, or with sudo available).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS=(build-essential cmake g++ clang libclang-rt-14-dev clang-format
      libopenblas-dev libopenblas-openmp-dev libdnnl-dev zlib1g-dev libxxhash-dev libzip-dev nlohmann-json3-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libgloo-dev libopenmpi-dev openmpi-bin iproute2
      dataset-fashion-mnist python3-torch)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
