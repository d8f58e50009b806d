// Internal: intra-op parallelism. Splits [begin, end) into one contiguous range per thread
// of the calling thread's OpenMP team size (set_num_threads), only when the work is big
// enough to repay the fork.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace weft::cpu {

constexpr int64_t kGrainSize = 32768;

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  int nt = omp_get_max_threads();
  if (nt <= 1 || n <= grain || omp_in_parallel()) {
    f(begin, end);
    return;
  }
  nt = (int)std::min<int64_t>(nt, (n + grain - 1) / grain);
#pragma omp parallel num_threads(nt)
  {
    // The team may be smaller than asked for (OMP_DYNAMIC, thread limits): split by its size.
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t chunk = (n + team - 1) / team;
    const int64_t b = begin + tid * chunk, e = std::min(end, b + chunk);
    if (b < e) f(b, e);
  }
}

}  // namespace weft::cpu
