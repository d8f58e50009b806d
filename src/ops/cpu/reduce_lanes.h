// Internal: vectorised row reductions. A row of floats is summed in kLanes independent float
// accumulators (one SIMD register's worth several times over, so the compiler vectorises it
// and the adds pipeline); the lanes are combined in double. Each lane adds n / kLanes values,
// so a row of 1024 costs a float rounding of 32 terms per lane: far below the 1e-5 the
// results are compared at, and the double combination keeps long reductions exact enough.
#pragma once

#include <cstdint>

namespace weft::cpu {

constexpr int kLanes = 32;

// sum(p[0..n))
inline double lane_sum(const float* __restrict p, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += p[i + l];
  double s = 0;
  for (; i < n; ++i) s += p[i];
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

// sum(p - c) and sum((p - c)^2) for a shift c near the row's mean (the centred two-moment
// sums; the variance is (*s2 - *s1 * *s1 / n) / n, free of the one-pass cancellation).
inline void lane_centered_moments(const float* __restrict p, int64_t n, float c, double* s1,
                                  double* s2) {
  float a1[kLanes] = {}, a2[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float d = p[i + l] - c;
      a1[l] += d;
      a2[l] += d * d;
    }
  double r1 = 0, r2 = 0;
  for (; i < n; ++i) {
    const double d = (double)p[i] - c;
    r1 += d;
    r2 += d * d;
  }
  for (int l = 0; l < kLanes; ++l) {
    r1 += a1[l];
    r2 += a2[l];
  }
  *s1 = r1;
  *s2 = r2;
}

// sum(d) and sum(d * (x - c)) over a row of d and x.
inline void lane_sum_dot_centered(const float* __restrict d, const float* __restrict x, int64_t n,
                                  float c, double* s1, double* s2) {
  float a1[kLanes] = {}, a2[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      a1[l] += d[i + l];
      a2[l] += d[i + l] * (x[i + l] - c);
    }
  double r1 = 0, r2 = 0;
  for (; i < n; ++i) {
    r1 += d[i];
    r2 += (double)d[i] * ((double)x[i] - c);
  }
  for (int l = 0; l < kLanes; ++l) {
    r1 += a1[l];
    r2 += a2[l];
  }
  *s1 = r1;
  *s2 = r2;
}

}  // namespace weft::cpu
