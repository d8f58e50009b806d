// CPU kernels of the optimizers' steps (ops/stubs/optim.h), as torch.optim's single-tensor SGD
// and Adam/AdamW (foreach=False): element loops over the float data, the multiply-adds with
// std::fma where PyTorch's vectorized CPU add/addcmul use them, so that results match it bit for
// bit on machines with FMA (weft is built with -march=native); bias corrections in double
// (Python floats there). The options are template parameters, so each loop is branch-free and
// vectorises (the same operations per element either way), and large tensors are split across
// threads.
#include "ops/stubs/optim.h"

#include <cmath>

#include "ops/cpu/parallel.h"

namespace weft::cpu {

namespace {

struct SGDScalars {
  float wd, mom, damp1, neg_lr;
};

template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(float* __restrict pd, const float* __restrict gd, float* __restrict buf, int64_t n,
               SGDScalars k) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float g = gd[j];
    if constexpr (kDecay) g = std::fma(k.wd, pd[j], g);
    if constexpr (kMomentum) {
      // The first step seeds the buffer with the gradient itself, undamped.
      float b;
      if constexpr (kFirst)
        b = g;
      else
        b = std::fma(k.damp1, g, buf[j] * k.mom);
      buf[j] = b;
      if constexpr (kNesterov)
        g = std::fma(k.mom, b, g);
      else
        g = b;
    }
    pd[j] = std::fma(k.neg_lr, g, pd[j]);
  }
}

template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_update(float* pd, const float* gd, float* buf, int64_t n, SGDScalars k) {
  cpu::parallel_for(0, n, 4 * cpu::kGrainSize, [&](int64_t b, int64_t e) {
    sgd_range<kDecay, kMomentum, kFirst, kNesterov>(pd + b, gd + b, buf ? buf + b : nullptr, e - b,
                                                    k);
  });
}

void sgd_dispatch(bool decay, bool momentum, bool first, bool nesterov, float* pd, const float* gd,
                  float* buf, int64_t n, SGDScalars k) {
  if (!momentum) {
    if (decay)
      sgd_update<true, false, false, false>(pd, gd, buf, n, k);
    else
      sgd_update<false, false, false, false>(pd, gd, buf, n, k);
    return;
  }
  const int sel = (decay ? 4 : 0) | (first ? 2 : 0) | (nesterov ? 1 : 0);
  switch (sel) {
    case 0:
      sgd_update<false, true, false, false>(pd, gd, buf, n, k);
      break;
    case 1:
      sgd_update<false, true, false, true>(pd, gd, buf, n, k);
      break;
    case 2:
      sgd_update<false, true, true, false>(pd, gd, buf, n, k);
      break;
    case 3:
      sgd_update<false, true, true, true>(pd, gd, buf, n, k);
      break;
    case 4:
      sgd_update<true, true, false, false>(pd, gd, buf, n, k);
      break;
    case 5:
      sgd_update<true, true, false, true>(pd, gd, buf, n, k);
      break;
    case 6:
      sgd_update<true, true, true, false>(pd, gd, buf, n, k);
      break;
    default:
      sgd_update<true, true, true, true>(pd, gd, buf, n, k);
      break;
  }
}

void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& bufs, const ops::SGDStep& k) {
  for (size_t i = 0; i < params.size(); ++i)
    sgd_dispatch(k.decay, k.momentum, k.first, k.nesterov, params[i].data_ptr<float>(),
                 grads[i].data_ptr<float>(), k.momentum ? bufs[i].data_ptr<float>() : nullptr,
                 params[i].numel(), {k.wd, k.mom, k.damp1, k.neg_lr});
}

struct AdamScalars {
  float b1, b2, one_minus_b1, one_minus_b2, wd, eps, decay, neg_step_size, bc2_sqrt;
};

template <bool kL2, bool kDecay, bool kAmsgrad>
void adam_range(float* __restrict pd, const float* __restrict gd, float* __restrict m,
                float* __restrict v, float* __restrict vmax, int64_t n, AdamScalars k) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float g = gd[j];
    float p = pd[j];
    if constexpr (kL2) g = std::fma(k.wd, p, g);
    if constexpr (kDecay) p = p * k.decay;
    const float mj = std::fma(k.one_minus_b1, g, m[j] * k.b1);
    const float vj = std::fma(k.one_minus_b2 * g, g, v[j] * k.b2);
    m[j] = mj;
    v[j] = vj;
    float s = vj;
    if constexpr (kAmsgrad) {
      // torch.maximum propagates NaN from either side.
      const float vm = vmax[j];
      s = (vj > vm || std::isnan(vj)) ? vj : vm;
      vmax[j] = s;
    }
    const float denom = std::sqrt(s) / k.bc2_sqrt + k.eps;
    pd[j] = p + (k.neg_step_size * mj) / denom;
  }
}

template <bool kL2, bool kDecay, bool kAmsgrad>
void adam_update(float* pd, const float* gd, float* m, float* v, float* vmax, int64_t n,
                 const AdamScalars& k) {
  cpu::parallel_for(0, n, 2 * cpu::kGrainSize, [&](int64_t b, int64_t e) {
    adam_range<kL2, kDecay, kAmsgrad>(pd + b, gd + b, m + b, v + b, vmax ? vmax + b : nullptr,
                                      e - b, k);
  });
}

void adam_dispatch(bool l2, bool decay, float* pd, const float* gd, float* m, float* v, float* vmax,
                   int64_t n, const AdamScalars& k) {
  const int sel = (l2 ? 4 : 0) | (decay ? 2 : 0) | (vmax ? 1 : 0);
  switch (sel) {
    case 0:
      adam_update<false, false, false>(pd, gd, m, v, vmax, n, k);
      break;
    case 1:
      adam_update<false, false, true>(pd, gd, m, v, vmax, n, k);
      break;
    case 2:
      adam_update<false, true, false>(pd, gd, m, v, vmax, n, k);
      break;
    case 3:
      adam_update<false, true, true>(pd, gd, m, v, vmax, n, k);
      break;
    case 4:
      adam_update<true, false, false>(pd, gd, m, v, vmax, n, k);
      break;
    case 5:
      adam_update<true, false, true>(pd, gd, m, v, vmax, n, k);
      break;
    case 6:
      adam_update<true, true, false>(pd, gd, m, v, vmax, n, k);
      break;
    default:
      adam_update<true, true, true>(pd, gd, m, v, vmax, n, k);
      break;
  }
}

void adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
               const std::vector<Tensor>& max_exp_avg_sqs, const std::vector<float>& neg_step_size,
               const std::vector<float>& bc2_sqrt, const ops::AdamStep& k) {
  for (size_t i = 0; i < params.size(); ++i) {
    const AdamScalars s{k.b1,  k.b2,    k.one_minus_b1,   k.one_minus_b2, k.wd,
                        k.eps, k.decay, neg_step_size[i], bc2_sqrt[i]};
    adam_dispatch(k.l2, k.decoupled, params[i].data_ptr<float>(), grads[i].data_ptr<float>(),
                  exp_avgs[i].data_ptr<float>(), exp_avg_sqs[i].data_ptr<float>(),
                  k.amsgrad ? max_exp_avg_sqs[i].data_ptr<float>() : nullptr, params[i].numel(), s);
  }
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::sgd_step_stub, CPU, &sgd_step);
WEFT_REGISTER_DISPATCH(ops::adam_step_stub, CPU, &adam_step);

}  // namespace weft::cpu
