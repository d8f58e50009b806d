// Internal: strided N-operand iteration for CPU kernels. Dimensions that are contiguous for
// every operand are merged first, so a contiguous op becomes one flat inner loop.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "weft/tensor.h"

namespace weft::cpu {

// Calls inner(offsets, n, inner_strides) for each innermost run of `shape`, where offsets
// are element offsets of the run's first element in each operand.
template <size_t N, typename F>
void for_each_run(const Shape& shape, const std::array<const Shape*, N>& strides,
                  const std::array<int64_t, N>& base, F&& inner) {
  // Coalesce: drop size-1 dims, merge dim i into i-1 when contiguous for all operands.
  std::vector<int64_t> sz;
  std::array<std::vector<int64_t>, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sz.empty()) {
      bool merge = true;
      for (size_t k = 0; k < N; ++k)
        if (st[k].back() != (*strides[k])[d] * shape[d]) merge = false;
      if (merge) {
        sz.back() *= shape[d];
        for (size_t k = 0; k < N; ++k) st[k].back() = (*strides[k])[d];
        continue;
      }
    }
    sz.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
  }
  for (int64_t s : shape)
    if (s == 0) return;
  std::array<int64_t, N> inner_st{};
  if (sz.empty()) {
    inner(base, 1, inner_st);
    return;
  }
  const int64_t nd = (int64_t)sz.size();
  const int64_t n = sz[nd - 1];
  for (size_t k = 0; k < N; ++k) inner_st[k] = st[k][nd - 1];
  std::vector<int64_t> idx(nd, 0);
  std::array<int64_t, N> off = base;
  while (true) {
    inner(off, n, inner_st);
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      if (++idx[d] < sz[d]) {
        for (size_t k = 0; k < N; ++k) off[k] += st[k][d];
        break;
      }
      for (size_t k = 0; k < N; ++k) off[k] -= st[k][d] * (sz[d] - 1);
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace weft::cpu
