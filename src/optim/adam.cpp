// Adam/AdamW step as torch.optim's _single_tensor_adam(w) (foreach=False): moments and the
// update in float, bias corrections in double (Python floats there). The multiply-adds use
// std::fma where PyTorch's vectorized CPU add/addcmul do, to match it bit for bit. The
// options are template parameters, so the element loop is branch-free and vectorises (the
// same operations per element either way), and large tensors are split across threads. Parameters
// on CUDA devices are stepped together by the multi-tensor fused kernel (src/ops/cuda/optim.cu).
#include "weft/optim/adam.h"

#include <cmath>
#include <map>

#include "ops/cpu/parallel.h"
#include "ops/cuda/cuda_ops.h"  // called in builds WITH_CUDA only
#include "weft/ops.h"

namespace weft::optim {

namespace {

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

void validate(const ParamGroupOptions& o, size_t g, const char* who) {
  WEFT_CHECK(std::isfinite(o.lr) && o.lr >= 0, who, ": invalid learning rate ", o.lr, " (group ", g,
             ")");
  WEFT_CHECK(o.eps >= 0, who, ": invalid eps ", o.eps, " (group ", g, ")");
  WEFT_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": invalid beta1 ", o.beta1, " (group ", g, ")");
  WEFT_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": invalid beta2 ", o.beta2, " (group ", g, ")");
  WEFT_CHECK(o.weight_decay >= 0, who, ": invalid weight_decay ", o.weight_decay, " (group ", g,
             ")");
}

ParamGroup make_group(std::vector<Tensor> params, const AdamOptions& a) {
  return ParamGroup{std::move(params), ParamGroupOptions{.lr = a.lr,
                                                         .weight_decay = a.weight_decay,
                                                         .beta1 = a.beta1,
                                                         .beta2 = a.beta2,
                                                         .eps = a.eps,
                                                         .amsgrad = a.amsgrad}};
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer({make_group(std::move(params), options)}) {
  validate(groups_[0].options, 0, "Adam");
}

AdamW::AdamW(std::vector<Tensor> params, AdamOptions options)
    : Adam(std::vector<ParamGroup>{make_group(std::move(params), options)}, true) {
  validate(groups_[0].options, 0, "AdamW");
}

void Adam::step() {
  const char* who = decoupled_ ? "AdamW" : "Adam";
  size_t flat = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroupOptions& o = groups_[gi].options;
    validate(o, gi, who);
    const float b1 = (float)o.beta1, b2 = (float)o.beta2;
    const float one_minus_b1 = (float)(1.0 - o.beta1), one_minus_b2 = (float)(1.0 - o.beta2);
    const float wd = (float)o.weight_decay;
    const float eps = (float)o.eps;
    const float decay = (float)(1.0 - o.lr * o.weight_decay);  // AdamW's p *= 1 - lr*wd
    const bool l2 = !decoupled_ && o.weight_decay != 0;
    const bool decay_p = decoupled_ && o.weight_decay != 0;
#ifdef WEFT_WITH_CUDA
    struct CudaList {
      std::vector<Tensor> p, g, m, v, vmax;
      std::vector<float> neg_step_size, bc2_sqrt;
    };
    std::map<int, CudaList> cuda_lists;  // by device
#endif
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, who);
      p.bump_version();  // updated in place below: graphs that saved it must not reuse it
      ParamState& st = state_of(i);
      auto buffer = [&](const char* name) {
        Tensor* b = st.buffers.find(name);
        if (!b) b = &st.buffers.insert(name, zeros(p.sizes(), {.device = p.device()}));
        return *b;
      };
      const Tensor m_t = buffer("exp_avg"), v_t = buffer("exp_avg_sq");
      const Tensor vmax_t = o.amsgrad ? buffer("max_exp_avg_sq") : Tensor();
      const int64_t t = ++st.step;
      const double bc1 = 1.0 - std::pow(o.beta1, (double)t);
      const double bc2 = 1.0 - std::pow(o.beta2, (double)t);
      const float neg_step_size = (float)(-(o.lr / bc1));
      const float bc2_sqrt = (float)std::sqrt(bc2);
#ifdef WEFT_WITH_CUDA
      if (p.device().is_cuda()) {
        CudaList& l = cuda_lists[p.device().index];
        l.p.push_back(p);
        l.g.push_back(grad);
        l.m.push_back(m_t);
        l.v.push_back(v_t);
        if (vmax_t.defined()) l.vmax.push_back(vmax_t);
        l.neg_step_size.push_back(neg_step_size);
        l.bc2_sqrt.push_back(bc2_sqrt);
        continue;
      }
#endif
      float* m = m_t.data_ptr<float>();
      float* v = v_t.data_ptr<float>();
      float* vmax = vmax_t.defined() ? vmax_t.data_ptr<float>() : nullptr;
      float* pd = p.data_ptr<float>();
      const float* gd = grad.data_ptr<float>();
      const int64_t n = p.numel();
      const AdamScalars k{b1,  b2,    one_minus_b1,  one_minus_b2, wd,
                          eps, decay, neg_step_size, bc2_sqrt};
      const int sel = (l2 ? 4 : 0) | (decay_p ? 2 : 0) | (vmax ? 1 : 0);
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
#ifdef WEFT_WITH_CUDA
    const cuda::AdamStep k{b1,  b2,    one_minus_b1, one_minus_b2, wd,
                           eps, decay, l2,           decay_p,      o.amsgrad};
    for (auto& [dev, l] : cuda_lists)
      cuda::adam_step(l.p, l.g, l.m, l.v, l.vmax, l.neg_step_size, l.bc2_sqrt, k);
#endif
  }
}

}  // namespace weft::optim
