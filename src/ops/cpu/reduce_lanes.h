// Internal: vectorised row reductions. A row of floats is summed in kLanes independent float
// accumulators (one SIMD register's worth several times over, so the compiler vectorises it
// and the adds pipeline); the lanes are combined in double. Each lane adds n / kLanes values,
// so a row of 1024 costs a float rounding of 32 terms per lane: far below the 1e-5 the
// results are compared at, and the double combination keeps long reductions exact enough.
#pragma once

#include <cstdint>
#include <cstring>

namespace weft::cpu {

constexpr int kLanes = 32;

// The accumulators are two 16-float vectors (GCC's vector extension) rather than a float[32]:
// GCC keeps such an array in memory, so every add waited for a store and a reload of its
// accumulator; these stay in registers. Lane l is element l % 16 of vector l / 16, and the
// lanes are added in order 0..31, so the sums are those of the plain arrays.
using Lanes16 = float __attribute__((vector_size(64)));
inline Lanes16 load16(const float* p) {
  Lanes16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void add_lanes(double* s, const Lanes16& a0, const Lanes16& a1) {
  for (int l = 0; l < 16; ++l) *s += a0[l];
  for (int l = 0; l < 16; ++l) *s += a1[l];
}

// sum(p[0..n))
inline double lane_sum(const float* __restrict p, int64_t n) {
  Lanes16 a0 = {}, a1 = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    a0 += load16(p + i);
    a1 += load16(p + i + 16);
  }
  double s = 0;
  for (; i < n; ++i) s += p[i];
  add_lanes(&s, a0, a1);
  return s;
}

// sum(p - c) and sum((p - c)^2) for a shift c near the row's mean (the centred two-moment
// sums; the variance is (*s2 - *s1 * *s1 / n) / n, free of the one-pass cancellation).
inline void lane_centered_moments(const float* __restrict p, int64_t n, float c, double* s1,
                                  double* s2) {
  Lanes16 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Lanes16 d0 = load16(p + i) - c, d1 = load16(p + i + 16) - c;
    a0 += d0;
    a1 += d1;
    b0 += d0 * d0;
    b1 += d1 * d1;
  }
  double r1 = 0, r2 = 0;
  for (; i < n; ++i) {
    const double d = (double)p[i] - c;
    r1 += d;
    r2 += d * d;
  }
  add_lanes(&r1, a0, a1);
  add_lanes(&r2, b0, b1);
  *s1 = r1;
  *s2 = r2;
}

// sum(d) and sum(d * (x - c)) over a row of d and x.
inline void lane_sum_dot_centered(const float* __restrict d, const float* __restrict x, int64_t n,
                                  float c, double* s1, double* s2) {
  Lanes16 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Lanes16 d0 = load16(d + i), d1 = load16(d + i + 16);
    a0 += d0;
    a1 += d1;
    b0 += d0 * (load16(x + i) - c);
    b1 += d1 * (load16(x + i + 16) - c);
  }
  double r1 = 0, r2 = 0;
  for (; i < n; ++i) {
    r1 += d[i];
    r2 += (double)d[i] * ((double)x[i] - c);
  }
  add_lanes(&r1, a0, a1);
  add_lanes(&r2, b0, b1);
  *s1 = r1;
  *s2 = r2;
}

}  // namespace weft::cpu
