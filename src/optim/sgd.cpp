// SGD step as torch.optim.SGD (foreach=False). Element loops over the float data; the
// multiply-adds use std::fma because PyTorch's vectorized CPU add(alpha=) does, so that
// results match it bit for bit on machines with FMA (weft is built with -march=native). The
// options are template parameters, so each loop is branch-free and vectorises (element-wise
// fmas, no reductions: vectorised or not, every element gets the same operations), and large
// tensors are split across threads. Parameters on CUDA devices are stepped together by the
// multi-tensor fused kernel (src/ops/cuda/optim.cu), the same update per element.
#include "weft/optim/sgd.h"

#include <array>
#include <cmath>
#include <map>

#include "ops/cpu/parallel.h"
#include "ops/cuda/cuda_ops.h"  // called in builds WITH_CUDA only
#include "weft/ops.h"

namespace weft::optim {

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

void validate(const ParamGroupOptions& o, size_t g) {
  WEFT_CHECK(std::isfinite(o.lr) && o.lr >= 0, "SGD: invalid learning rate ", o.lr, " (group ", g,
             ")");
  WEFT_CHECK(o.momentum >= 0, "SGD: invalid momentum ", o.momentum, " (group ", g, ")");
  WEFT_CHECK(o.weight_decay >= 0, "SGD: invalid weight_decay ", o.weight_decay, " (group ", g, ")");
  WEFT_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
             "SGD: nesterov momentum requires a momentum > 0 and zero dampening (group ", g,
             " has momentum ", o.momentum, ", dampening ", o.dampening, ")");
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer({ParamGroup{std::move(params), ParamGroupOptions{
                                                   .lr = options.lr,
                                                   .momentum = options.momentum,
                                                   .dampening = options.dampening,
                                                   .nesterov = options.nesterov,
                                                   .weight_decay = options.weight_decay,
                                               }}}) {
  validate(groups_[0].options, 0);
}

void SGD::step() {
  size_t flat = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroupOptions& o = groups_[gi].options;
    // Groups may be added or edited after construction (schedulers, add_param_group).
    validate(o, gi);
    // PyTorch casts each Python-float scalar to float before the kernel; the same here.
    const float wd = (float)o.weight_decay;
    const float mom = (float)o.momentum;
    const float damp1 = (float)(1.0 - o.dampening);
    const float neg_lr = (float)(-o.lr);
#ifdef WEFT_WITH_CUDA
    // CUDA parameters by (device, first step or not): one fused launch series per list.
    std::map<std::pair<int, bool>, std::array<std::vector<Tensor>, 3>> cuda_lists;
#endif
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, "SGD");
      p.bump_version();  // updated in place below: graphs that saved it must not reuse it
      Tensor buf_t;
      bool first = false;
      if (o.momentum != 0) {
        ParamState& st = state_of(i);
        Tensor* b = st.buffers.find("momentum_buffer");
        if (!b) {
          b = &st.buffers.insert("momentum_buffer", zeros(p.sizes(), {.device = p.device()}));
          first = true;
        }
        buf_t = *b;
      }
#ifdef WEFT_WITH_CUDA
      if (p.device().is_cuda()) {
        auto& l = cuda_lists[{p.device().index, first}];
        l[0].push_back(p);
        l[1].push_back(grad);
        if (buf_t.defined()) l[2].push_back(buf_t);
        continue;
      }
#endif
      sgd_dispatch(o.weight_decay != 0, buf_t.defined(), first, o.nesterov, p.data_ptr<float>(),
                   grad.data_ptr<float>(), buf_t.defined() ? buf_t.data_ptr<float>() : nullptr,
                   p.numel(), {wd, mom, damp1, neg_lr});
    }
#ifdef WEFT_WITH_CUDA
    for (auto& [key, l] : cuda_lists) {
      const cuda::SGDStep k{
          wd, mom, damp1, neg_lr, o.weight_decay != 0, o.momentum != 0, key.second, o.nesterov};
      cuda::sgd_step(l[0], l[1], l[2], k);
    }
#endif
  }
}

}  // namespace weft::optim
