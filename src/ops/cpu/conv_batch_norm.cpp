// CPU kernels of Conv2d -> BatchNorm -> ReLU run as one (ops/stubs/conv_batch_norm.h;
// Note [Conv-BatchNorm-ReLU fusion]). The convolution's output y stays in the channel-blocked
// layout oneDNN's primitives write and read, [N, K/B, Ho, Wo, B] (nChw{B}c), so no reorder copies
// it to NCHW and back. Batch norm's passes run over it B channels to a vector: each channel's
// values go through the lanes, in the order and the arithmetic of the plain kernels
// (ops/cpu/batch_norm.cpp, reduce_lanes.h, batch_norm_math.h), so every result is theirs bit for
// bit. Only the output and the incoming gradient are NCHW: they cross between the layouts as
// B x B tiles transposed in registers, inside the passes that read or write them anyway.
#include "ops/stubs/conv_batch_norm.h"

#include <cstring>
#include <vector>

#include "ops/cpu/batch_norm_math.h"
#include "ops/cpu/conv.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/reduce_lanes.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft::cpu {

namespace {

// B floats, one per channel of a block (GCC's vector extension, as reduce_lanes.h's Lanes16).
template <int B>
struct Vec {
  typedef float type __attribute__((vector_size(B * sizeof(float))));
  typedef int32_t index __attribute__((vector_size(B * sizeof(float))));
};
template <int B>
using V = typename Vec<B>::type;

template <int B>
inline V<B> loadv(const float* p) {
  V<B> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int B>
inline void storev(float* p, const V<B>& v) {
  std::memcpy(p, &v, sizeof(v));
}
// One value per channel of block cb, from a per-channel array.
template <int B>
inline V<B> per_channel(const float* p, int64_t cb) {
  return loadv<B>(p + cb * B);
}

// Transposes the B x B matrix whose rows are r[0..B): log2(B) rounds of interleaving row j with
// row j + B/2. Each round rotates the bits of (row, column) by one, so log2(B) rounds swap them.
template <int B>
inline void transpose(V<B>* r) {
  typename Vec<B>::index lo, hi;
  for (int i = 0; i < B / 2; ++i) {
    lo[2 * i] = i;
    lo[2 * i + 1] = B + i;
    hi[2 * i] = B / 2 + i;
    hi[2 * i + 1] = B + B / 2 + i;
  }
  for (int round = 1; round < B; round *= 2) {
    V<B> t[B];
    for (int j = 0; j < B / 2; ++j) {
      t[2 * j] = __builtin_shuffle(r[j], r[j + B / 2], lo);
      t[2 * j + 1] = __builtin_shuffle(r[j], r[j + B / 2], hi);
    }
    for (int j = 0; j < B; ++j) r[j] = t[j];
  }
}

// The shape of a blocked y: N samples of CB blocks of S positions of B channels.
struct Blocked {
  int64_t N, CB, S;
};
Blocked blocked_of(const Tensor& y) { return {y.size(0), y.size(1), y.size(2) * y.size(3)}; }

// A tile is one (n, cb) block: S positions of B channels, channel ci of position s at
// tile[s * B + ci]. Row ci of the tile is channel ci's row of S values in NCHW.

// lane_sum of each of the tile's rows: lane l adds the positions l mod kLanes, the tail is
// added in double first, then lanes 0..kLanes-1 in order (reduce_lanes.h).
template <int B>
void tile_sum(const float* tile, int64_t S, double* out) {
  V<B> acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= S; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += loadv<B>(tile + (i + l) * B);
  for (int ci = 0; ci < B; ++ci) {
    double s = 0;
    for (int64_t j = i; j < S; ++j) s += tile[j * B + ci];
    for (int l = 0; l < kLanes; ++l) s += acc[l][ci];
    out[ci] = s;
  }
}

// lane_centered_moments of each row about its own shift c[ci].
template <int B>
void tile_centered_moments(const float* tile, int64_t S, const V<B>& c, double* s1, double* s2) {
  V<B> a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= S; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const V<B> d = loadv<B>(tile + (i + l) * B) - c;
      a[l] += d;
      b[l] += d * d;
    }
  for (int ci = 0; ci < B; ++ci) {
    double r1 = 0, r2 = 0;
    for (int64_t j = i; j < S; ++j) {
      const double d = (double)tile[j * B + ci] - c[ci];
      r1 += d;
      r2 += d * d;
    }
    for (int l = 0; l < kLanes; ++l) r1 += a[l][ci];
    for (int l = 0; l < kLanes; ++l) r2 += b[l][ci];
    s1[ci] = r1;
    s2[ci] = r2;
  }
}

// batch_norm_stats' mean and biased variance of y, channel by channel as its long-row path:
// each row's centred moments merged in n order.
template <int B>
std::pair<Tensor, Tensor> block_stats(const Tensor& y) {
  const auto [N, CB, S] = blocked_of(y);
  Tensor mean = empty({CB * B}), var = empty({CB * B});
  float *pm = mean.data_ptr<float>(), *pv = var.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  cpu::parallel_for(0, CB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t cb = b0; cb < b1; ++cb) {
      ChannelMoments m[B];
      for (int64_t n = 0; n < N; ++n) {
        const float* tile = py + (n * CB + cb) * S * B;
        double sum[B], s1[B], s2[B];
        tile_sum<B>(tile, S, sum);
        V<B> shift;
        for (int ci = 0; ci < B; ++ci) shift[ci] = row_shift(sum[ci], S);
        tile_centered_moments<B>(tile, S, shift, s1, s2);
        for (int ci = 0; ci < B; ++ci) m[ci].merge_row(n, S, shift[ci], s1[ci], s2[ci]);
      }
      for (int ci = 0; ci < B; ++ci) m[ci].finish(N * S, &pm[cb * B + ci], &pv[cb * B + ci]);
    }
  });
  return {mean, var};
}

// Per channel, the affine map of the output (affine_of) as two arrays.
struct AffineArrays {
  std::vector<float> scale, shift;
  AffineArrays(const Tensor& mean, const Tensor& invstd, const Tensor& weight, const Tensor& bias) {
    const int64_t C = mean.numel();
    Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
    Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
    const float *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
    const float *pw = wc.defined() ? wc.data_ptr<float>() : nullptr,
                *pb = bc.defined() ? bc.data_ptr<float>() : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      const Affine a = affine_of(c, pm, pi, pw, pb);
      scale.push_back(a.scale);
      shift.push_back(a.shift);
    }
  }
};

// out = relu(y * scale + shift), batch_norm_relu_elemt's values, NCHW or (blocked) in y's
// layout. Into NCHW, B positions at a time are computed per channel in vectors and transposed
// into the B rows.
template <int B>
Tensor block_relu_elemt(const Tensor& y, const Tensor& mean, const Tensor& invstd,
                        const Tensor& weight, const Tensor& bias, bool blocked) {
  const auto [N, CB, S] = blocked_of(y);
  Tensor out = blocked ? make_empty(y.sizes()) : make_empty({N, CB * B, y.size(2), y.size(3)});
  const AffineArrays af(mean.contiguous(), invstd.contiguous(), weight, bias);
  const float* py = y.data_ptr<float>();
  float* po = out.data_ptr<float>();
  cpu::parallel_for(0, N * CB, 1, [&](int64_t t0, int64_t t1) {
    const V<B> zero = {};
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t cb = t % CB;
      const V<B> sc = per_channel<B>(af.scale.data(), cb), sh = per_channel<B>(af.shift.data(), cb);
      const float* tile = py + t * S * B;
      // Block cb of sample n: a tile of `out` too, or its rows (n*CB + cb)*B .. + B.
      float* rows = po + t * B * S;
      auto relu_at = [&](int64_t s) {
        const V<B> v = apply(loadv<B>(tile + s * B), sc, sh);
        return v < 0 ? zero : v;
      };
      if (blocked) {
        for (int64_t s = 0; s < S; ++s) storev<B>(rows + s * B, relu_at(s));
        continue;
      }
      int64_t s0 = 0;
      for (; s0 + B <= S; s0 += B) {
        V<B> r[B];
        for (int k = 0; k < B; ++k) r[k] = relu_at(s0 + k);
        transpose<B>(r);
        for (int ci = 0; ci < B; ++ci) storev<B>(rows + ci * S + s0, r[ci]);
      }
      for (; s0 < S; ++s0)
        for (int ci = 0; ci < B; ++ci) {
          const float v = apply(tile[s0 * B + ci], sc[ci], sh[ci]);
          rows[ci * S + s0] = v < 0 ? 0.0f : v;
        }
    }
  });
  return out;
}

// g, the output's gradient, over one tile: B rows of NCHW (kBlocked false) or a blocked tile.
// Either way the tile starts at offset t * S * B.
template <int B, bool kBlocked>
struct GradTile {
  const float* p;
  int64_t S;
  // Positions s0 .. s0 + B as B vectors of the B channels (NCHW rows: transposed).
  void load(int64_t s0, V<B>* r) const {
    if constexpr (kBlocked) {
      for (int k = 0; k < B; ++k) r[k] = loadv<B>(p + (s0 + k) * B);
    } else {
      for (int ci = 0; ci < B; ++ci) r[ci] = loadv<B>(p + ci * S + s0);
      transpose<B>(r);
    }
  }
  float at(int ci, int64_t s) const { return kBlocked ? p[s * B + ci] : p[ci * S + s]; }
};

// masked_sum_dot_centered over each of the tile's rows: g' = g where y * scale + shift > 0
// (not <= 0, ReLU's rule), else 0; per row sum(g') and sum(g' * (y - mu)) in its lanes.
template <int B, bool kBlocked>
void tile_masked_sums(const float* tile, const GradTile<B, kBlocked>& g, int64_t S, const V<B>& sc,
                      const V<B>& sh, const V<B>& mu, double* s1, double* s2) {
  static_assert(kLanes % B == 0);
  const V<B> zero = {};
  V<B> a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= S; i += kLanes)
    for (int l0 = 0; l0 < kLanes; l0 += B) {
      V<B> gv[B];
      g.load(i + l0, gv);
      for (int k = 0; k < B; ++k) {
        const V<B> x = loadv<B>(tile + (i + l0 + k) * B);
        const V<B> d = apply(x, sc, sh) <= 0 ? zero : gv[k];
        a[l0 + k] += d;
        b[l0 + k] += d * (x - mu);
      }
    }
  for (int ci = 0; ci < B; ++ci) {
    double r1 = 0, r2 = 0;
    for (int64_t j = i; j < S; ++j) {
      const float x = tile[j * B + ci];
      const float d = apply(x, sc[ci], sh[ci]) <= 0 ? 0.0f : g.at(ci, j);
      r1 += d;
      r2 += (double)d * ((double)x - mu[ci]);
    }
    for (int l = 0; l < kLanes; ++l) r1 += a[l][ci];
    for (int l = 0; l < kLanes; ++l) r2 += b[l][ci];
    s1[ci] = r1;
    s2[ci] = r2;
  }
}

// batch_norm_relu_backward's first pass with y blocked and g NCHW (or blocked): per channel
// sum(g') and sum(g' * (y - mean)) of the masked g', rows merged in n order.
template <int B, bool kBlocked>
std::pair<Tensor, Tensor> block_masked_sums(const Tensor& g, const Tensor& y, const Tensor& mean,
                                            const AffineArrays& af) {
  const auto [N, CB, S] = blocked_of(y);
  Tensor sdy = empty({CB * B}), sdyx = empty({CB * B});
  const float *py = y.data_ptr<float>(), *pg = g.data_ptr<float>(), *pm = mean.data_ptr<float>();
  float *p1 = sdy.data_ptr<float>(), *p2 = sdyx.data_ptr<float>();
  cpu::parallel_for(0, CB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t cb = b0; cb < b1; ++cb) {
      const V<B> sc = per_channel<B>(af.scale.data(), cb), sh = per_channel<B>(af.shift.data(), cb);
      const V<B> mu = per_channel<B>(pm, cb);
      double as[B] = {}, bs[B] = {};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t t = n * CB + cb;
        double ra[B], rb[B];
        tile_masked_sums<B>(py + t * S * B, GradTile<B, kBlocked>{pg + t * S * B, S}, S, sc, sh, mu,
                            ra, rb);
        for (int ci = 0; ci < B; ++ci) {
          as[ci] += ra[ci];
          bs[ci] += rb[ci];
        }
      }
      for (int ci = 0; ci < B; ++ci) {
        p1[cb * B + ci] = (float)as[ci];
        p2[cb * B + ci] = (float)bs[ci];
      }
    }
  });
  return {sdy, sdyx};
}

// batch_norm_relu_backward's two passes with y blocked and g NCHW (or blocked): the sums above,
// then dx into a blocked tensor, the convolution's dy.
template <int B, bool kBlocked>
ops::ConvBatchNormReluGrads block_relu_backward(const Tensor& g, const Tensor& y,
                                                const Tensor& mean0, const Tensor& invstd0,
                                                const Tensor& weight, const Tensor& bias,
                                                int64_t count) {
  const auto [N, CB, S] = blocked_of(y);
  Tensor mean = mean0.contiguous(), invstd = invstd0.contiguous();
  const AffineArrays af(mean, invstd, weight, bias);
  const std::pair<Tensor, Tensor> sums = block_masked_sums<B, kBlocked>(g, y, mean, af);
  const Tensor &sdy = sums.first, &sdyx = sums.second;
  Tensor dy = make_empty(y.sizes());
  const float *py = y.data_ptr<float>(), *pg = g.data_ptr<float>(), *pm = mean.data_ptr<float>();
  const float *p1 = sdy.data_ptr<float>(), *p2 = sdyx.data_ptr<float>();
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  const float *pi = invstd.data_ptr<float>(), *pw = wc.defined() ? wc.data_ptr<float>() : nullptr;
  const double inv_count = count ? 1.0 / (double)count : 0.0;
  const int64_t C = CB * B;
  std::vector<float> dscale(C), dmdy(C), dk(C);
  for (int64_t c = 0; c < C; ++c) {
    const DxCoef d = dx_coef(c, pm, pi, pw, p1, p2, inv_count);
    dscale[c] = d.scale, dmdy[c] = d.mdy, dk[c] = d.k;
  }
  float* pd = dy.data_ptr<float>();
  cpu::parallel_for(0, N * CB, 1, [&](int64_t t0, int64_t t1) {
    const V<B> zero = {};
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t cb = t % CB;
      const V<B> sc = per_channel<B>(af.scale.data(), cb), sh = per_channel<B>(af.shift.data(), cb);
      const V<B> ds = per_channel<B>(dscale.data(), cb), dm = per_channel<B>(dmdy.data(), cb),
                 k = per_channel<B>(dk.data(), cb), mu = per_channel<B>(pm, cb);
      const float* tile = py + t * S * B;
      const GradTile<B, kBlocked> gt{pg + t * S * B, S};
      float* out = pd + t * S * B;
      int64_t s0 = 0;
      for (; s0 + B <= S; s0 += B) {
        V<B> gv[B];
        gt.load(s0, gv);
        for (int j = 0; j < B; ++j) {
          const V<B> x = loadv<B>(tile + (s0 + j) * B);
          const V<B> d = apply(x, sc, sh) <= 0 ? zero : gv[j];
          storev<B>(out + (s0 + j) * B, dx_of(ds, dm, k, mu, d, x));
        }
      }
      for (; s0 < S; ++s0)
        for (int ci = 0; ci < B; ++ci) {
          const float x = tile[s0 * B + ci];
          const float d = apply(x, sc[ci], sh[ci]) <= 0 ? 0.0f : gt.at(ci, s0);
          out[s0 * B + ci] = dx_of(ds[ci], dm[ci], k[ci], mu[ci], d, x);
        }
    }
  });
  return {dy, Tensor(), Tensor(), sdy, sdyx};  // dx: batch norm's, the convolution's dy
}

// The block of a channel-blocked x, 0 for NCHW.
int x_block(const Tensor& x) { return x.dim() == 5 ? (int)x.size(4) : 0; }

// t between NCHW and blocked (ops/stubs/conv_batch_norm.h): tiles transposed as in the passes.
template <int B>
Tensor relayout(const Tensor& t, bool to_blocked) {
  const int64_t N = t.size(0), CB = to_blocked ? t.size(1) / B : t.size(1),
                S = t.size(2) * t.size(3);
  Tensor out = to_blocked ? make_empty({N, CB, t.size(2), t.size(3), B})
                          : make_empty({N, CB * B, t.size(2), t.size(3)});
  const float* pt = t.data_ptr<float>();
  float* po = out.data_ptr<float>();
  cpu::parallel_for(0, N * CB, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0; i < t1; ++i) {
      // Tile i's B rows and its blocked tile start at the same offset.
      const float* src = pt + i * S * B;
      float* dst = po + i * S * B;
      const int64_t rs = to_blocked ? S : 1, bs = to_blocked ? 1 : S;  // strides (ci, s) in / out
      const int64_t rp = to_blocked ? 1 : B, bp = to_blocked ? B : 1;
      int64_t s0 = 0;
      for (; s0 + B <= S; s0 += B) {
        V<B> r[B];
        for (int k = 0; k < B; ++k) r[k] = loadv<B>(src + (to_blocked ? k * S + s0 : (s0 + k) * B));
        transpose<B>(r);
        for (int k = 0; k < B; ++k) storev<B>(dst + (to_blocked ? (s0 + k) * B : k * S + s0), r[k]);
      }
      for (; s0 < S; ++s0)
        for (int ci = 0; ci < B; ++ci) dst[ci * bs + s0 * bp] = src[ci * rs + s0 * rp];
    }
  });
  return out;
}

Tensor layout(const Tensor& t0, int64_t block) {
  Tensor t = t0.contiguous();
  const int64_t B = block ? block : (t.dim() == 5 ? t.size(4) : 0);
  WEFT_CHECK(t.dtype() == kFloat32 && (B == 8 || B == 16) && t.dim() == (block ? 4 : 5) &&
                 (!block || t.size(1) % block == 0),
             "conv2d_batch_norm_layout: expected a float32 ",
             block ? "NCHW tensor whose channels the block divides" : "channel-blocked tensor",
             " and a block of 8 or 16, got ", t.str(), " and block ", block);
  return B == 16 ? relayout<16>(t, block != 0) : relayout<8>(t, block != 0);
}

// The block the convolution's output would be kept in, or 0 where the fusion does not run:
// float32, rows long enough for the lane kernels (the plain kernels' long-row path), and a
// oneDNN primitive writing a channel-blocked layout.
int block_for(const Tensor& x, const Tensor& w, const Tensor& b, const ops::ConvParams& p) {
  if (x.dtype() != kFloat32 || w.dtype() != kFloat32 || (b.defined() && b.dtype() != kFloat32))
    return 0;
  const ConvGeom g = conv_geom(x, w, p);
  if (g.Ho * g.Wo < kLanes) return 0;
  return onednn_conv_output_block(g, b.defined());
}

bool takes(const Tensor& x, const Tensor& w, const Tensor& b, const ops::ConvParams& p) {
  return block_for(x, w, b, p) != 0;
}

ops::ConvBatchNormForward forward(const Tensor& x, const Tensor& w, const Tensor& b0,
                                  const ops::ConvParams& p) {
  const int B = block_for(x, w, b0, p);
  WEFT_CHECK(B != 0, "conv2d_batch_norm: the CPU kernels do not take input ", x.str(),
             " with weight ", w.str());
  const ConvGeom g = conv_geom(x, w, p);
  Tensor b = b0.defined() ? b0.contiguous() : Tensor();
  Tensor y = make_empty({g.N, g.K / B, g.Ho, g.Wo, B});
  // A forward that autograd will differentiate for the weight keeps its reordered input.
  const bool keep = GradMode::is_enabled() && w.requires_grad();
  WEFT_CHECK(onednn_conv_forward(g, x.data_ptr<float>(), w.data_ptr<float>(),
                                 b.defined() ? b.data_ptr<float>() : nullptr, y.raw_data(),
                                 keep ? &x : nullptr, B, x_block(x)),
             "conv2d_batch_norm: oneDNN refused input ", x.str(), " after offering it");
  auto [mean, var] = B == 16 ? block_stats<16>(y) : block_stats<8>(y);
  return {y, mean, var};
}

Tensor relu_elemt(const Tensor& y, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                  const Tensor& bias, bool blocked) {
  return y.size(4) == 16 ? block_relu_elemt<16>(y, mean, invstd, weight, bias, blocked)
                         : block_relu_elemt<8>(y, mean, invstd, weight, bias, blocked);
}

ops::ConvBatchNormReluGrads relu_backward(const Tensor& g0, const Tensor& x, const Tensor& w,
                                          const Tensor& y, const Tensor& mean, const Tensor& invstd,
                                          const Tensor& weight, const Tensor& bias,
                                          const ops::ConvParams& p, int64_t count, bool gx, bool gw,
                                          bool gb) {
  Tensor g = g0.contiguous();
  const int B = (int)y.size(4);
  WEFT_CHECK(g.dtype() == kFloat32 && g.numel() == y.numel(),
             "conv2d_batch_norm_relu_backward expects a float32 gradient of the output's ",
             y.numel(), " elements, got ", g.str());
  const bool blocked = g.dim() == 5;
  ops::ConvBatchNormReluGrads r =
      B == 16 ? (blocked ? block_relu_backward<16, true>(g, y, mean, invstd, weight, bias, count)
                         : block_relu_backward<16, false>(g, y, mean, invstd, weight, bias, count))
              : (blocked ? block_relu_backward<8, true>(g, y, mean, invstd, weight, bias, count)
                         : block_relu_backward<8, false>(g, y, mean, invstd, weight, bias, count));
  Tensor dy = std::move(r.dx);
  if (!gx && !gw) return r;
  const ConvGeom geom = conv_geom(x, w, p);
  if (gx) r.dx = make_empty(x.sizes());
  if (gw) r.dw = make_empty(w.sizes());
  if (gw && gb) r.db = make_empty({geom.K});
  auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  WEFT_CHECK(onednn_conv_backward(geom, x.data_ptr<float>(), w.data_ptr<float>(), dy.raw_data(),
                                  ptr(r.dx), ptr(r.dw), ptr(r.db), &x, B, x_block(x)),
             "conv2d_batch_norm_relu_backward: oneDNN has no backward for input ", x.str(),
             " and weight ", w.str());
  return r;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::conv2d_batch_norm_takes_stub, CPU, &takes);
WEFT_REGISTER_DISPATCH(ops::conv2d_batch_norm_stub, CPU, &forward);
WEFT_REGISTER_DISPATCH(ops::conv2d_batch_norm_relu_elemt_stub, CPU, &relu_elemt);
WEFT_REGISTER_DISPATCH(ops::conv2d_batch_norm_relu_backward_stub, CPU, &relu_backward);
WEFT_REGISTER_DISPATCH(ops::conv2d_batch_norm_layout_stub, CPU, &layout);

}  // namespace weft::cpu
