// CPU kernels of batch normalisation (ops/stubs/batch_norm.h) over contiguous [N, C, S] data.
// Channel statistics accumulate in double. The data (x, dy) may be bf16/fp16: rows of S >=
// kLanes values are widened one at a time into an L1-sized buffer and outputs rounded once as
// they are stored, which gives the float32 kernels' results on widened copies without making the
// copies; short rows do make them.
#include "ops/stubs/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/batch_norm_math.h"
#include "ops/cpu/dtype_convert.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/reduce_lanes.h"
#include "ops/cpu/stream_copy.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft::cpu {

namespace {

struct Layout {
  int64_t n, c, s;
};
// [N, C, S] of a contiguous x (the ops have checked it: at least 2-D, a float dtype).
Layout layout_of(const Tensor& x) {
  int64_t s = 1;
  for (int64_t i = 2; i < x.dim(); ++i) s *= x.size(i);
  return {x.size(0), x.size(1), s};
}
const float* opt_ptr(const Tensor& t) {
  return t.defined() ? t.contiguous().data_ptr<float>() : nullptr;
}

// Row r (of S values) of a contiguous float32 or 16-bit tensor, as float32: a float32 tensor's
// own memory, a 16-bit one's widened into buf.
class FloatRows {
 public:
  FloatRows(const Tensor& t, int64_t S) : base_(t.raw_data()), dtype_(t.dtype()), S_(S) {}
  const float* row(int64_t r, float* buf) const {
    if (dtype_ == kFloat32) return static_cast<const float*>(base_) + r * S_;
    cpu::dispatch_half(
        dtype_, [&]<typename T>() { cpu::widen(static_cast<const T*>(base_) + r * S_, S_, buf); });
    return buf;
  }

 private:
  const void* base_;
  DType dtype_;
  int64_t S_;
};

// Stores o[r*S + i] = f(i) for i < S. A 16-bit output gets the values computed into buf (S
// floats) and then rounded once; large float32 outputs are streamed past the cache
// (stream_output).
template <typename F>
void store_row(const Tensor& out, bool stream, int64_t r, int64_t S, float* buf, F f) {
  if (out.dtype() == kFloat32) {
    float* o = static_cast<float*>(out.raw_data()) + r * S;
    if (stream)
      cpu::stream_store_fn(o, S, f);
    else
      for (int64_t i = 0; i < S; ++i) o[i] = f(i);
    return;
  }
  for (int64_t i = 0; i < S; ++i) buf[i] = f(i);
  cpu::dispatch_half(out.dtype(), [&]<typename T>() {
    cpu::narrow(buf, S, static_cast<T*>(out.raw_data()) + r * S);
  });
}

Tensor as_float32(const Tensor& t) { return t.dtype() == kFloat32 ? t : t.to(kFloat32); }

// Per-channel reductions over [N, C, S]. Rows of S >= kLanes values (conv feature maps) are
// reduced one at a time by the lane kernels, each row while it sits in L1, and the rows of a
// channel are combined in double; short rows (BatchNorm1d: S == 1) are reduced across n with
// one double accumulator per (c, s), vectorised over the contiguous c*S positions.
bool long_rows(int64_t S) { return S >= cpu::kLanes; }
// Outputs of 16 MB and more bypass the cache (half the last-level cache of these machines):
// nothing reads them back before they would have been evicted anyway.
bool stream_output(const Tensor& out) {
  return out.dtype() == kFloat32 && out.nbytes() >= (size_t(16) << 20);
}

// For short rows: calls f(j0, j1) over ranges of the C*S positions, split across threads.
template <typename F>
void over_positions(int64_t N, int64_t CS, F&& f) {
  cpu::parallel_for(0, CS, std::max<int64_t>(64, cpu::kGrainSize / std::max<int64_t>(N, 1)), f);
}

std::pair<Tensor, Tensor> stats(const Tensor& x0) {
  Tensor x = x0.contiguous();
  auto [N, C, S] = layout_of(x);
  if (x.dtype() != kFloat32 && !long_rows(S)) return stats(x.to(kFloat32));
  Tensor mean = empty({C}, {.device = x.device()}), var = empty({C}, {.device = x.device()});
  float* pm = mean.data_ptr<float>();
  float* pv = var.data_ptr<float>();
  const int64_t M = N * S;
  if (long_rows(S)) {
    const FloatRows xs(x, S);
    // Rows are visited in memory order (n outer) with one accumulator pair per channel: a
    // linear walk the prefetcher follows, where channel by channel would jump a whole sample
    // every row. Each channel still merges its rows in n order, so results do not change.
    cpu::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      std::vector<ChannelMoments> moments(c1 - c0);
      std::vector<float> buf(x.dtype() == kFloat32 ? 0 : S);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = c0; c < c1; ++c) {
          // The row's mean and centred sum of squares, merged into the channel's (Chan et al.).
          const float* row = xs.row(n * C + c, buf.data());
          const float shift = row_shift(cpu::lane_sum(row, S), S);
          double s1, s2;
          cpu::lane_centered_moments(row, S, shift, &s1, &s2);
          moments[c - c0].merge_row(n, S, shift, s1, s2);
        }
      for (int64_t c = c0; c < c1; ++c) moments[c - c0].finish(M, &pm[c], &pv[c]);
    });
    return {mean, var};
  }
  const float* px = x.data_ptr<float>();
  const int64_t CS = C * S;
  std::vector<double> acc(CS, 0.0), mu_of(CS);
  double* pa = acc.data();
  over_positions(N, CS, [&](int64_t j0, int64_t j1) {
    for (int64_t n = 0; n < N; ++n) {
      const float* row = px + n * CS;
      for (int64_t j = j0; j < j1; ++j) pa[j] += row[j];
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int64_t s = 0; s < S; ++s) sum += pa[c * S + s];
    const double mu = M ? sum / (double)M : 0.0;
    pm[c] = (float)mu;
    for (int64_t s = 0; s < S; ++s) mu_of[c * S + s] = mu;
  }
  const double* pmu = mu_of.data();
  over_positions(N, CS, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) pa[j] = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* row = px + n * CS;
      for (int64_t j = j0; j < j1; ++j) {
        const double d = row[j] - pmu[j];
        pa[j] += d * d;
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double sq = 0;
    for (int64_t s = 0; s < S; ++s) sq += pa[c * S + s];
    pv[c] = M ? (float)(sq / (double)M) : 0.0f;
  }
  return {mean, var};
}

// y = x * scale + shift per channel, then (kRelu) PyTorch's relu: NaN and -0 pass through.
template <bool kRelu>
Tensor elemt_impl(const Tensor& x0, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                  const Tensor& bias) {
  Tensor x = x0.contiguous();
  auto [N, C, S] = layout_of(x);
  Tensor out = make_empty(x.sizes(), x.dtype(), x.device());
  const FloatRows xs(x, S);
  Tensor mc = mean.contiguous(), ic = invstd.contiguous();
  const float *pm = mc.data_ptr<float>(), *pi = ic.data_ptr<float>();
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const float* pw = opt_ptr(wc);
  const float* pb = opt_ptr(bc);
  const bool stream = stream_output(out);
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(S, 1)),
                    [&](int64_t r0, int64_t r1) {
                      std::vector<float> buf(x.dtype() == kFloat32 ? 0 : S),
                          obuf(out.dtype() == kFloat32 ? 0 : S);
                      for (int64_t r = r0; r < r1; ++r) {
                        const Affine af = affine_of(r % C, pm, pi, pw, pb);
                        const float* a = xs.row(r, buf.data());
                        store_row(out, stream, r, S, obuf.data(), [&](int64_t i) {
                          const float v = apply(af, a[i]);
                          if constexpr (kRelu) return v < 0 ? 0.0f : v;
                          return v;
                        });
                      }
                      if (stream) cpu::stream_fence();
                    });
  return out;
}

Tensor elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
             const Tensor& bias) {
  return elemt_impl<false>(x, mean, invstd, weight, bias);
}

std::pair<Tensor, Tensor> backward_reduce(const Tensor& dy0, const Tensor& x0, const Tensor& mean) {
  Tensor x = x0.contiguous(), dy = dy0.contiguous();
  auto [N, C, S] = layout_of(x);
  if ((x.dtype() != kFloat32 || dy.dtype() != kFloat32) && !long_rows(S))
    return backward_reduce(as_float32(dy), as_float32(x), mean);
  Tensor sdy = empty({C}, {.device = x.device()}), sdyx = empty({C}, {.device = x.device()});
  Tensor mc = mean.contiguous();
  const float* pm = mc.data_ptr<float>();
  float *p1 = sdy.data_ptr<float>(), *p2 = sdyx.data_ptr<float>();
  if (long_rows(S)) {
    const FloatRows xs(x, S), dys(dy, S);
    // Memory order with per-channel sums, as batch_norm_stats (same summation order).
    cpu::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> as(c1 - c0, 0.0), bs(c1 - c0, 0.0);
      std::vector<float> xbuf(x.dtype() == kFloat32 ? 0 : S), dbuf(dy.dtype() == kFloat32 ? 0 : S);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = c0; c < c1; ++c) {
          double ra, rb;
          cpu::lane_sum_dot_centered(dys.row(n * C + c, dbuf.data()),
                                     xs.row(n * C + c, xbuf.data()), S, pm[c], &ra, &rb);
          as[c - c0] += ra;
          bs[c - c0] += rb;
        }
      for (int64_t c = c0; c < c1; ++c) {
        p1[c] = (float)as[c - c0];
        p2[c] = (float)bs[c - c0];
      }
    });
    return {sdy, sdyx};
  }
  const float *px = x.data_ptr<float>(), *pd = dy.data_ptr<float>();
  const int64_t CS = C * S;
  std::vector<double> acc1(CS, 0.0), acc2(CS, 0.0);
  std::vector<float> mu_of(CS);
  for (int64_t j = 0; j < CS; ++j) mu_of[j] = pm[j / S];
  double *pa = acc1.data(), *pb = acc2.data();
  const float* pmu = mu_of.data();
  over_positions(N, CS, [&](int64_t j0, int64_t j1) {
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = px + n * CS;
      const float* dr = pd + n * CS;
      for (int64_t j = j0; j < j1; ++j) {
        pa[j] += dr[j];
        pb[j] += (double)dr[j] * (double)(xr[j] - pmu[j]);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (int64_t s = 0; s < S; ++s) {
      a += pa[c * S + s];
      b += pb[c * S + s];
    }
    p1[c] = (float)a;
    p2[c] = (float)b;
  }
  return {sdy, sdyx};
}

// The count is the host's: a count held in a tensor is for CUDA inputs (SyncBatchNorm's), and
// reading it here would hide a device read.
Tensor backward_elemt(const Tensor& dy0, const Tensor& x0, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& sum_dy, const Tensor& sum_dy_xmu,
                      const Tensor& device_count, int64_t count) {
  if (device_count.defined())
    WEFT_ERROR("batch_norm_backward_elemt: a count held in a tensor (", device_count.str(),
               ") is for CUDA inputs, got ", x0.str(), " on ", x0.device());
  Tensor x = x0.contiguous(), dy = dy0.contiguous();
  auto [N, C, S] = layout_of(x);
  Tensor dx = make_empty(x.sizes(), x.dtype(), x.device());
  const FloatRows xs(x, S), dys(dy, S);
  Tensor mc = mean.contiguous(), ic = invstd.contiguous(), s1 = sum_dy.contiguous(),
         s2 = sum_dy_xmu.contiguous();
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  const float *pm = mc.data_ptr<float>(), *pi = ic.data_ptr<float>(), *pw = opt_ptr(wc);
  const float *ps1 = s1.data_ptr<float>(), *ps2 = s2.data_ptr<float>();
  const double inv_count = count ? 1.0 / (double)count : 0.0;
  const bool stream = stream_output(dx);
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(S, 1)),
                    [&](int64_t r0, int64_t r1) {
                      std::vector<float> xbuf(x.dtype() == kFloat32 ? 0 : S),
                          dbuf(dy.dtype() == kFloat32 ? 0 : S),
                          obuf(dx.dtype() == kFloat32 ? 0 : S);
                      for (int64_t r = r0; r < r1; ++r) {
                        const DxCoef d = dx_coef(r % C, pm, pi, pw, ps1, ps2, inv_count);
                        const float* xr = xs.row(r, xbuf.data());
                        const float* dr = dys.row(r, dbuf.data());
                        store_row(dx, stream, r, S, obuf.data(),
                                  [&](int64_t i) { return dx_of(d, dr[i], xr[i]); });
                      }
                      if (stream) cpu::stream_fence();
                    });
  return dx;
}

// relu(batch_norm(x)) in one pass (Note [BatchNorm-ReLU fusion]).
Tensor relu_elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& weight,
                  const Tensor& bias) {
  WEFT_CHECK(x.dtype() == kFloat32, "batch_norm_relu expects a float32 input, got ", x.str());
  return elemt_impl<true>(x, mean, invstd, weight, bias);
}

// g' = g where the batch norm output x * scale + shift is not <= 0 (ReLU's rule), else 0. A
// function of its own, with restrict pointers, so that the loop vectorises.
void mask_row(const Affine af, const float* __restrict g, const float* __restrict x, int64_t S,
              float* __restrict out) {
  for (int64_t i = 0; i < S; ++i) {
    const float gi = g[i];  // read whatever the mask: a plain load, not a masked one
    out[i] = apply(af, x[i]) <= 0 ? 0.0f : gi;
  }
}

// cpu::lane_sum_dot_centered(g', x) with g' = mask_row's, without writing g' out: the same
// lanes in the same order, so the same sums.
void masked_sum_dot_centered(const Affine af, const float* __restrict g, const float* __restrict x,
                             int64_t n, float c, double* s1, double* s2) {
  using cpu::Lanes16, cpu::load16;
  const Lanes16 zero = {};
  Lanes16 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  int64_t i = 0;
  for (; i + cpu::kLanes <= n; i += cpu::kLanes) {
    const Lanes16 x0 = load16(x + i), x1 = load16(x + i + 16);
    const Lanes16 d0 = apply(af, x0) <= 0 ? zero : load16(g + i);
    const Lanes16 d1 = apply(af, x1) <= 0 ? zero : load16(g + i + 16);
    a0 += d0;
    a1 += d1;
    b0 += d0 * (x0 - c);
    b1 += d1 * (x1 - c);
  }
  double r1 = 0, r2 = 0;
  for (; i < n; ++i) {
    const float d = apply(af, x[i]) <= 0 ? 0.0f : g[i];
    r1 += d;
    r2 += (double)d * ((double)x[i] - c);
  }
  cpu::add_lanes(&r1, a0, a1);
  cpu::add_lanes(&r2, b0, b1);
  *s1 = r1;
  *s2 = r2;
}

// relu(batch_norm(x))'s backward (Note [BatchNorm-ReLU fusion]): g is masked where the
// recomputed batch norm output is <= 0 (ReLU's rule), and batch norm's backward runs on the
// masked g' with backward_reduce's lane sums and backward_elemt's formula. For conv-sized rows
// g' is never written out: both passes apply the mask inside their own loop, each reading g and
// x once (a pass that first masked a row into a buffer cost more than the composition).
ops::BatchNormReluGrads relu_backward(const Tensor& g0, const Tensor& x0, const Tensor& mean,
                                      const Tensor& invstd, const Tensor& weight,
                                      const Tensor& bias, int64_t count) {
  Tensor x = x0.contiguous(), g = g0.contiguous();
  WEFT_CHECK(x.dtype() == kFloat32 && g.dtype() == kFloat32 && g.sizes() == x.sizes(),
             "batch_norm_relu_backward expects a float32 input and gradient of one shape, got ",
             x.str(), " and ", g.str());
  auto [N, C, S] = layout_of(x);
  Tensor mc = mean.contiguous(), ic = invstd.contiguous();
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const float *pm = mc.data_ptr<float>(), *pi = ic.data_ptr<float>();
  const float *pw = opt_ptr(wc), *pb = opt_ptr(bc);
  const float *pg = g.data_ptr<float>(), *px = x.data_ptr<float>();
  auto masked = [&](int64_t r, float* out) {  // row r of g'
    mask_row(affine_of(r % C, pm, pi, pw, pb), pg + r * S, px + r * S, S, out);
  };
  if (!long_rows(S)) {  // BatchNorm1d's rows: g' made whole, then the unfused kernels
    Tensor gm = make_empty(x.sizes());
    for (int64_t r = 0; r < N * C; ++r) masked(r, gm.data_ptr<float>() + r * S);
    auto [sdy, sdyx] = backward_reduce(gm, x, mean);
    return {backward_elemt(gm, x, mean, invstd, weight, sdy, sdyx, Tensor(), count), sdy, sdyx};
  }
  Tensor sdy = empty({C}), sdyx = empty({C}), dx = make_empty(x.sizes());
  float *p1 = sdy.data_ptr<float>(), *p2 = sdyx.data_ptr<float>();
  const double inv_count = count ? 1.0 / (double)count : 0.0;
  const bool stream = stream_output(dx);
  cpu::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {  // backward_reduce's order
    std::vector<double> as(c1 - c0, 0.0), bs(c1 - c0, 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r = n * C + c;
        double ra, rb;
        masked_sum_dot_centered(affine_of(c, pm, pi, pw, pb), pg + r * S, px + r * S, S, pm[c], &ra,
                                &rb);
        as[c - c0] += ra;
        bs[c - c0] += rb;
      }
    for (int64_t c = c0; c < c1; ++c) {
      p1[c] = (float)as[c - c0];
      p2[c] = (float)bs[c - c0];
    }
  });
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / S),
                    [&](int64_t r0, int64_t r1) {
                      for (int64_t r = r0; r < r1; ++r) {
                        const Affine af = affine_of(r % C, pm, pi, pw, pb);
                        const DxCoef d = dx_coef(r % C, pm, pi, pw, p1, p2, inv_count);
                        const float *gr = pg + r * S, *xr = px + r * S;
                        store_row(dx, stream, r, S, nullptr, [&](int64_t i) {
                          const float gi = gr[i], xi = xr[i];
                          return dx_of(d, apply(af, xi) <= 0 ? 0.0f : gi, xi);
                        });
                      }
                      if (stream) cpu::stream_fence();
                    });
  return {dx, sdy, sdyx};
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                          const Tensor& var, const Tensor& device_count, int64_t count,
                          double momentum) {
  if (device_count.defined())
    WEFT_ERROR("update_running_stats: a count held in a tensor (", device_count.str(),
               ") is for CUDA statistics, got ", mean.str(), " on ", mean.device());
  NoGradGuard ng;
  const float m = (float)momentum;
  const double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
  float* rm = running_mean.data_ptr<float>();
  float* rv = running_var.data_ptr<float>();
  Tensor mc = mean.contiguous(), vc = var.contiguous();
  const float *pm = mc.data_ptr<float>(), *pv = vc.data_ptr<float>();
  for (int64_t c = 0; c < running_mean.numel(); ++c) {
    rm[c] = (1 - m) * rm[c] + m * pm[c];
    rv[c] = (1 - m) * rv[c] + m * (float)(pv[c] * unbias);
  }
}

// On the host, the count a host integer.
ops::BatchNormGathered gather_stats(const Tensor& rows) {
  const int64_t R = rows.size(0), C = (rows.size(1) - 2) / 2;
  // Chan et al.: combine (n_i, mean_i, M2_i) pairwise-stably, in double.
  std::vector<double> mu(C, 0.0), m2(C, 0.0);
  double n = 0;
  const float* all = rows.data_ptr<float>();
  for (int64_t r = 0; r < R; ++r) {
    const float* p = all + r * (2 + 2 * C);
    const double ni = (double)(((int64_t)p[0] << 24) + (int64_t)p[1]);
    if (ni == 0) continue;
    const double total = n + ni;
    for (int64_t c = 0; c < C; ++c) {
      const double mi = p[2 + c], vi = p[2 + C + c];
      const double delta = mi - mu[c];
      mu[c] += delta * ni / total;
      m2[c] += vi * ni + delta * delta * n * ni / total;
    }
    n = total;
  }
  Tensor mean = empty({C}), var = empty({C});
  float* om = mean.data_ptr<float>();
  float* ov = var.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    om[c] = (float)mu[c];
    ov[c] = n > 0 ? (float)(m2[c] / n) : 0.0f;
  }
  return {mean, var, (int64_t)n, Tensor()};
}

// x and dy in bf16/fp16 with float32 per-channel tensors (autocast's case) as they are.
bool reduced_native(DType) { return true; }

}  // namespace

WEFT_REGISTER_DISPATCH(ops::batch_norm_stats_stub, CPU, &stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_elemt_stub, CPU, &elemt);
WEFT_REGISTER_DISPATCH(ops::batch_norm_backward_reduce_stub, CPU, &backward_reduce);
WEFT_REGISTER_DISPATCH(ops::batch_norm_backward_elemt_stub, CPU, &backward_elemt);
WEFT_REGISTER_DISPATCH(ops::batch_norm_relu_elemt_stub, CPU, &relu_elemt);
WEFT_REGISTER_DISPATCH(ops::batch_norm_relu_backward_stub, CPU, &relu_backward);
WEFT_REGISTER_DISPATCH(ops::update_running_stats_stub, CPU, &update_running_stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_gather_stats_stub, CPU, &gather_stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_reduced_native_stub, CPU, &reduced_native);

}  // namespace weft::cpu
