// The optimizers' CUDA kernels (ops/stubs/optim.h): multi-tensor fused steps (as PyTorch's
// multi_tensor_apply): the parameters'
// lists are cut into chunks of 64K elements, and one launch handles up to 320 chunks of up to
// 24 tensors, so a model's step is a few launches instead of several per parameter.
#include <cmath>

#include "ops/cuda/loops.cuh"
#include "ops/stubs/optim.h"

namespace weft::cuda {

namespace {

using ops::AdamStep;
using ops::SGDStep;

constexpr int kMaxTensors = 24;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;

// Kernel argument (by value, < 4 KB): L pointer lists and where each block works.
template <int L>
struct ListMeta {
  float* ptr[L][kMaxTensors];
  int64_t size[kMaxTensors];
  float s0[kMaxTensors], s1[kMaxTensors];  // per-tensor scalars (Adam's bias corrections)
  unsigned char tensor_of_block[kMaxBlocks];
  int chunk_of_block[kMaxBlocks];
};

// Calls launch(meta, blocks) for the lists, L of them, each of `n` tensors.
template <int L, typename Launch>
void multi_tensor_apply(const std::array<const std::vector<Tensor>*, L>& lists,
                        const std::vector<float>& s0, const std::vector<float>& s1,
                        Launch&& launch) {
  const std::vector<Tensor>& first = *lists[0];
  ListMeta<L> meta{};
  int nt = 0, nb = 0;
  for (size_t t = 0; t < first.size(); ++t) {
    const int64_t n = first[t].numel();
    if (n == 0) continue;
    for (int l = 0; l < L; ++l) meta.ptr[l][nt] = detail::elem_ptr<float>((*lists[l])[t]);
    meta.size[nt] = n;
    meta.s0[nt] = s0.empty() ? 0.0f : s0[t];
    meta.s1[nt] = s1.empty() ? 0.0f : s1[t];
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.tensor_of_block[nb] = (unsigned char)nt;
      meta.chunk_of_block[nb] = (int)c;
      ++nb;
      const bool last = c == chunks - 1;
      if (nb == kMaxBlocks || (last && nt + 1 == kMaxTensors)) {
        launch(meta, nb);
        nb = 0;
        if (last) {
          nt = -1;  // the next tensor starts a fresh list
        } else {    // the rest of this tensor continues in slot 0
          for (int l = 0; l < L; ++l) meta.ptr[l][0] = meta.ptr[l][nt];
          meta.size[0] = meta.size[nt];
          meta.s0[0] = meta.s0[nt];
          meta.s1[0] = meta.s1[nt];
          nt = 0;
        }
      }
    }
    ++nt;
  }
  if (nb > 0) launch(meta, nb);
}

template <int L>
__device__ __forceinline__ void block_range(const ListMeta<L>& m, int& t, int64_t& begin,
                                            int64_t& end) {
  t = m.tensor_of_block[blockIdx.x];
  begin = (int64_t)m.chunk_of_block[blockIdx.x] * kChunk;
  end = min(m.size[t], begin + kChunk);
}

__global__ void sgd_kernel(ListMeta<3> m, SGDStep k) {
  int t;
  int64_t begin, end;
  block_range(m, t, begin, end);
  float* p = m.ptr[0][t];
  const float* gd = m.ptr[1][t];
  float* buf = m.ptr[2][t];
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    float g = gd[j];
    if (k.decay) g = fmaf(k.wd, p[j], g);
    if (k.momentum) {
      // The first step seeds the buffer with the gradient itself, undamped.
      const float b = k.first ? g : fmaf(k.damp1, g, buf[j] * k.mom);
      buf[j] = b;
      g = k.nesterov ? fmaf(k.mom, b, g) : b;
    }
    p[j] = fmaf(k.neg_lr, g, p[j]);
  }
}

__global__ void adam_kernel(ListMeta<5> m, AdamStep k) {
  int t;
  int64_t begin, end;
  block_range(m, t, begin, end);
  float* pd = m.ptr[0][t];
  const float* gd = m.ptr[1][t];
  float* ea = m.ptr[2][t];
  float* es = m.ptr[3][t];
  float* vmax = m.ptr[4][t];
  const float neg_step_size = m.s0[t], bc2_sqrt = m.s1[t];
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    float g = gd[j];
    float p = pd[j];
    if (k.l2) g = fmaf(k.wd, p, g);
    if (k.decoupled) p = p * k.decay;
    const float mj = fmaf(k.one_minus_b1, g, ea[j] * k.b1);
    const float vj = fmaf(k.one_minus_b2 * g, g, es[j] * k.b2);
    ea[j] = mj;
    es[j] = vj;
    float s = vj;
    if (k.amsgrad) {
      const float vm = vmax[j];  // torch.maximum propagates NaN from either side
      s = (vj > vm || isnan(vj)) ? vj : vm;
      vmax[j] = s;
    }
    const float denom = sqrtf(s) / bc2_sqrt + k.eps;
    pd[j] = p + (neg_step_size * mj) / denom;
  }
}

int device_of(const std::vector<Tensor>& params, const char* who) {
  WEFT_CHECK(!params.empty(), who, ": no parameters");
  const Device d = params[0].device();
  WEFT_CHECK(d.is_cuda(), who, ": parameters on ", d);
  return d.index;
}

void check_list(const std::vector<Tensor>& list, const std::vector<Tensor>& params,
                const char* who) {
  WEFT_CHECK(list.size() == params.size(), who, ": ", list.size(), " tensors for ", params.size(),
             " parameters");
  for (size_t i = 0; i < list.size(); ++i)
    WEFT_CHECK(list[i].device() == params[i].device() && list[i].dtype() == kFloat32 &&
                   list[i].is_contiguous() && list[i].numel() == params[i].numel(),
               who, ": tensor ", i, " (", list[i].str(), " on ", list[i].device(),
               ") does not match its parameter (", params[i].str(), " on ", params[i].device(),
               "); contiguous float32 tensors on the same device are needed");
}

void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& bufs, const SGDStep& k) {
  if (params.empty()) return;
  const int dev = device_of(params, "SGD");
  check_list(params, params, "SGD");
  check_list(grads, params, "SGD");
  // Without momentum the buffer slot is unused: the parameters stand in for it.
  const std::vector<Tensor>& b = k.momentum ? bufs : params;
  check_list(b, params, "SGD");
  detail::DeviceScope scope(dev);
  cudaStream_t stream = detail::stream_of(dev);
  multi_tensor_apply<3>({&params, &grads, &b}, {}, {}, [&](const ListMeta<3>& m, int blocks) {
    sgd_kernel<<<blocks, detail::kThreads, 0, stream>>>(m, k);
    WEFT_CUDA_CHECK_LAUNCH();
  });
}

void adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
               const std::vector<Tensor>& max_exp_avg_sqs, const std::vector<float>& neg_step_size,
               const std::vector<float>& bc2_sqrt, const AdamStep& k) {
  if (params.empty()) return;
  const int dev = device_of(params, "Adam");
  check_list(params, params, "Adam");
  check_list(grads, params, "Adam");
  check_list(exp_avgs, params, "Adam");
  check_list(exp_avg_sqs, params, "Adam");
  const std::vector<Tensor>& vmax = k.amsgrad ? max_exp_avg_sqs : exp_avg_sqs;
  check_list(vmax, params, "Adam");
  WEFT_CHECK(neg_step_size.size() == params.size() && bc2_sqrt.size() == params.size(),
             "Adam: one step size and bias correction per parameter needed");
  detail::DeviceScope scope(dev);
  cudaStream_t stream = detail::stream_of(dev);
  multi_tensor_apply<5>({&params, &grads, &exp_avgs, &exp_avg_sqs, &vmax}, neg_step_size, bc2_sqrt,
                        [&](const ListMeta<5>& m, int blocks) {
                          adam_kernel<<<blocks, detail::kThreads, 0, stream>>>(m, k);
                          WEFT_CUDA_CHECK_LAUNCH();
                        });
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::sgd_step_stub, CUDA, &sgd_step);
WEFT_REGISTER_DISPATCH(ops::adam_step_stub, CUDA, &adam_step);

}  // namespace weft::cuda
