// Internal: the per-channel arithmetic of batch normalisation that more than one CPU kernel
// runs: the affine map of the output, the input gradient's formula and the merge of rows into a
// channel's moments. Every kernel that computes one of these goes through these functions, so
// that all of them round alike and fused kernels give the unfused ones' bits
// (Note [BatchNorm-ReLU fusion], Note [Conv-BatchNorm-ReLU fusion]).
#pragma once

#include <algorithm>
#include <cstdint>

namespace weft::cpu {

// Channel c's normalisation as one affine map, y = x * scale + shift. Every kernel that
// computes a batch norm output, or recomputes one (the fused ReLU's mask), goes through these
// two functions, so that all of them round alike (Note [BatchNorm-ReLU fusion]).
struct Affine {
  float scale, shift;
};
inline Affine affine_of(int64_t c, const float* pm, const float* pi, const float* pw,
                        const float* pb) {
  const float scale = pi[c] * (pw ? pw[c] : 1.0f);
  return {scale, (pb ? pb[c] : 0.0f) - pm[c] * scale};
}
// x * scale + shift for T = float or a vector of floats, S = float or (per channel) T.
template <typename T, typename S>
inline T apply(T x, S scale, S shift) {
  return x * scale + shift;
}
template <typename T>  // float, or cpu::Lanes16 for 16 of them
inline T apply(const Affine& a, T x) {
  return apply(x, a.scale, a.shift);
}

// Channel c's input gradient, dx = w*invstd * (dy - mean(dy) - (x-mu)*invstd^2*mean(dy*(x-mu))),
// as dx = scale * (dy - mdy - (x - mu) * k). The fused ReLU backward uses it too.
struct DxCoef {
  float scale, mdy, k, mu;
};
inline DxCoef dx_coef(int64_t c, const float* pm, const float* pi, const float* pw,
                      const float* ps1, const float* ps2, double inv_count) {
  const float is = pi[c];
  const float w = pw ? pw[c] : 1.0f;
  return {w * is, (float)(ps1[c] * inv_count), (float)(ps2[c] * inv_count) * is * is, pm[c]};
}
// T = float or a vector of floats, S = float or (per channel) T.
template <typename T, typename S>
inline T dx_of(S scale, S mdy, S k, S mu, T dy, T x) {
  return scale * (dy - mdy - (x - mu) * k);
}
inline float dx_of(const DxCoef& d, float dy, float x) {
  return dx_of(d.scale, d.mdy, d.k, d.mu, dy, x);
}

// A row's shift for its centred moments: its mean from lane_sum's sum, as a float.
inline float row_shift(double sum, int64_t S) { return (float)(sum / (double)S); }

// A channel's mean and sum of squared deviations, merged row by row in row order (Chan et
// al.): row n of S values brings its centred sums s1 = sum(x - shift), s2 = sum((x - shift)^2).
struct ChannelMoments {
  double mu = 0, m2 = 0;
  void merge_row(int64_t n, int64_t S, float shift, double s1, double s2) {
    const double row_mean = shift + s1 / (double)S;
    const double row_m2 = s2 - s1 * s1 / (double)S;
    const double before = (double)(n * S), after = before + (double)S;
    const double delta = row_mean - mu;
    mu += delta * (double)S / after;
    m2 += row_m2 + delta * delta * before * (double)S / after;
  }
  // The mean and biased variance over M values.
  void finish(int64_t M, float* mean, float* var) const {
    *mean = (float)mu;
    *var = M ? (float)(std::max(m2, 0.0) / (double)M) : 0.0f;
  }
};

}  // namespace weft::cpu
