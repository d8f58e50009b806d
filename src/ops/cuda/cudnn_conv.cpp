// The CUDA kernels of conv2d (ops/stubs/conv.h) on cuDNN, float32, bf16 or fp16: forward, backward
// data, backward filter and bias, with the algorithms ranked by cuDNN's heuristics once per shape
// (with their workspace sizes), the first whose workspace the caching allocator can give used. One
// cuDNN handle per (thread, device), bound to the current stream.
#include <cudnn.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/handle_pool.h"
#include "ops/stubs/conv.h"
#include "weft/autograd/graph.h"
#include "weft/cuda.h"

#define WEFT_CUDNN_CHECK(call)                                               \
  do {                                                                       \
    const cudnnStatus_t weft_cudnn_st_ = (call);                             \
    WEFT_CHECK(weft_cudnn_st_ == CUDNN_STATUS_SUCCESS, "cuDNN call ", #call, \
               " failed: ", cudnnGetErrorString(weft_cudnn_st_));            \
  } while (0)

namespace weft::cuda {

namespace {

using ops::ConvGrads;
using ops::ConvParams;

cudnnHandle_t handle_for(int device) {
  cudnnHandle_t h = detail::thread_handle<cudnnHandle_t>(
      device, [](cudnnHandle_t* p) { WEFT_CUDNN_CHECK(cudnnCreate(p)); });
  WEFT_CUDNN_CHECK(cudnnSetStream(h, detail::stream_of(device)));
  return h;
}

// The descriptors of one convolution; destroyed with the object.
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, b = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  Descs(const Shape& xs, const Shape& ws, const Shape& ys, const ConvParams& p, DType dtype) {
    const cudnnDataType_t t = dtype == DType::BFloat16  ? CUDNN_DATA_BFLOAT16
                              : dtype == DType::Float16 ? CUDNN_DATA_HALF
                                                        : CUDNN_DATA_FLOAT;
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&b));
    WEFT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    WEFT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    WEFT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, (int)xs[0], (int)xs[1],
                                                (int)xs[2], (int)xs[3]));
    WEFT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, (int)ys[0], (int)ys[1],
                                                (int)ys[2], (int)ys[3]));
    WEFT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(b, CUDNN_TENSOR_NCHW, t, 1, (int)ys[1], 1, 1));
    WEFT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, (int)ws[0], (int)ws[1],
                                                (int)ws[2], (int)ws[3]));
    WEFT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, (int)p.ph, (int)p.pw, (int)p.sh,
                                                     (int)p.sw, (int)p.dh, (int)p.dw,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    WEFT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, (int)p.groups));
    // FMA math keeps float32 convolutions as exact as PyTorch's with cudnn.allow_tf32 off;
    // tensor cores (TF32) only when asked for. 16-bit data: tensor cores, float32 accumulation
    // (the convolution descriptor's compute type above), as PyTorch's.
    // Each chosen algorithm then runs with the math type cuDNN's heuristics gave it (PyTorch
    // does the same: cuDNN decides tensor-core use by algorithm and math type together).
    const cudnnMathType_t math = t != CUDNN_DATA_FLOAT ? CUDNN_TENSOR_OP_MATH
                                 : allow_tf32()        ? CUDNN_DEFAULT_MATH
                                                       : CUDNN_FMA_MATH;
    WEFT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math));
    fma_only = t == CUDNN_DATA_FLOAT && !allow_tf32();
  }
  ~Descs() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(b);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
  bool fma_only = false;  // float32 without TF32: no tensor-core algorithm may run
};

// An algorithm as cuDNN's heuristics listed it: with its math type and workspace size.
template <typename Algo>
struct Candidate {
  Algo algo;
  cudnnMathType_t math;
  size_t bytes;
};

// One direction's usable algorithms for a geometry in cuDNN's heuristic order (status
// CUDNN_STATUS_SUCCESS only), each with its workspace size. The heuristics' first choice may
// need more workspace than the device has free; `first` is where the next call starts: past the
// ones whose workspace could not be allocated, so that a step does not retry them.
template <typename Algo>
struct Choice {
  std::vector<Candidate<Algo>> candidates;
  std::atomic<size_t> first{0};
};
struct Algos {
  Choice<cudnnConvolutionFwdAlgo_t> fwd;
  Choice<cudnnConvolutionBwdDataAlgo_t> bwd_data;
  Choice<cudnnConvolutionBwdFilterAlgo_t> bwd_filter;
};
using Key = std::tuple<Shape, Shape, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       bool, int, DType>;

// The usable results among `perf` (n of them), with the workspace size `size_of` reports for
// each under its math type (an algorithm whose size cannot be had is skipped). float32 without
// TF32 keeps FMA math whatever the heuristics say. Leaves d.conv's math type changed.
template <typename Algo, typename Perf, typename SizeOf>
std::vector<Candidate<Algo>> usable(const Descs& d, const Perf* perf, int n, SizeOf size_of,
                                    const char* what) {
  std::vector<Candidate<Algo>> out;
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    const cudnnMathType_t math = d.fma_only ? CUDNN_FMA_MATH : perf[i].mathType;
    if (cudnnSetConvolutionMathType(d.conv, math) != CUDNN_STATUS_SUCCESS) continue;
    size_t bytes = 0;
    if (size_of(perf[i].algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    out.push_back({perf[i].algo, math, bytes});
  }
  WEFT_CHECK(!out.empty(), "cuDNN: no ", what, " algorithm for this convolution (", n,
             " heuristic results, none usable)");
  return out;
}

// The geometry's algorithms, from cuDNN's heuristics on first use, then from the cache (entries
// stay put: std::map nodes are stable and never erased).
Algos& algos_for(cudnnHandle_t h, const Descs& d, const Key& key) {
  static std::mutex mu;
  static auto* cache = new std::map<Key, Algos>();
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      h, d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fp));
  auto fwd = usable<cudnnConvolutionFwdAlgo_t>(
      d, fp, n,
      [&](cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, algo, bytes);
      },
      "forward");
  cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      h, d.w, d.y, d.conv, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp));
  auto bwd_data = usable<cudnnConvolutionBwdDataAlgo_t>(
      d, dp, n,
      [&](cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, algo, bytes);
      },
      "backward-data");
  cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      h, d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp));
  auto bwd_filter = usable<cudnnConvolutionBwdFilterAlgo_t>(
      d, wp, n,
      [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w, algo,
                                                              bytes);
      },
      "backward-filter");
  std::lock_guard<std::mutex> lock(mu);
  // Another thread may have filled the entry meanwhile: then it stays as it is.
  auto [it, added] = cache->try_emplace(key);
  if (added) {
    it->second.fwd.candidates = std::move(fwd);
    it->second.bwd_data.candidates = std::move(bwd_data);
    it->second.bwd_filter.candidates = std::move(bwd_filter);
  }
  return it->second;
}

Key key_of(const Tensor& x, const Tensor& w, const ConvParams& p) {
  return {x.sizes(),    w.sizes(),        p.sh,     p.sw, p.ph, p.pw, p.dh, p.dw, p.groups,
          allow_tf32(), x.device().index, x.dtype()};
}

// A tensor's first element on its device (raw_data() is for host memory).
void* dptr(const Tensor& t) {
  return static_cast<char*>(t.impl()->storage->data) + t.storage_offset() * itemsize(t.dtype());
}

// Device scratch of at least `bytes`, from the caching allocator (freed with the tensor).
Tensor workspace(size_t bytes, Device d) {
  return make_empty({(int64_t)((bytes + 3) / 4)}, kFloat32, d);
}

// An algorithm of `c` and its workspace: the first, from c.first on, whose workspace can be
// allocated; the ones skipped are skipped by later calls too. Its math type is set on `descs`'
// convolution descriptor, for the call that runs it.
template <typename Algo>
struct Picked {
  Algo algo;
  size_t bytes;
  Tensor ws;
};
template <typename Algo>
Picked<Algo> pick(Choice<Algo>& c, const Descs& descs, Device d, const char* what) {
  std::string failure;
  for (size_t i = c.first.load(); i < c.candidates.size(); ++i) {
    const auto [algo, math, bytes] = c.candidates[i];
    try {
      Tensor ws = workspace(bytes, d);
      if (i > c.first.load()) c.first.store(i);
      WEFT_CUDNN_CHECK(cudnnSetConvolutionMathType(descs.conv, math));
      return {algo, bytes, ws};
    } catch (const Error& e) {  // out of memory: the next algorithm may need less
      failure = e.what();
    }
  }
  WEFT_ERROR("CUDA ", what, ": no cuDNN algorithm's workspace could be allocated on ", d, " (",
             c.candidates.size(), " candidates; the last failure: ", failure, ")");
}

void check_conv_args(const Tensor& x, const Tensor& w, const char* what) {
  WEFT_CHECK(x.dtype() == w.dtype() && (x.dtype() == kFloat32 || is_reduced_float(x.dtype())) &&
                 x.is_contiguous() && w.is_contiguous() && x.device() == w.device() &&
                 x.dim() == 4 && w.dim() == 4,
             "CUDA ", what,
             ": expects contiguous 4-D input and weight of one float dtype on one device, got ",
             x.str(), " on ", x.device(), " and ", w.str(), " on ", w.device());
}

// float32: TF32 only when weft::cuda::allow_tf32() (PyTorch's conv numerics otherwise); 16-bit:
// tensor cores with float32 accumulation. Never declines an input.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b0, const ConvParams& p) {
  check_conv_args(x, w, "conv2d");
  const Tensor b = b0.defined() ? b0.contiguous() : Tensor();
  const int dev = x.device().index;
  detail::DeviceScope scope(dev);
  cudnnHandle_t h = handle_for(dev);
  const int64_t Ho = (x.size(2) + 2 * p.ph - p.dh * (w.size(2) - 1) - 1) / p.sh + 1;
  const int64_t Wo = (x.size(3) + 2 * p.pw - p.dw * (w.size(3) - 1) - 1) / p.sw + 1;
  Tensor y = make_empty({x.size(0), w.size(0), Ho, Wo}, x.dtype(), x.device());
  if (y.numel() == 0) return y;
  if (x.numel() == 0 || w.numel() == 0) {  // no input channels (cuDNN refuses): the bias alone
    y.zero_();
    if (!b.defined()) return y;
    NoGradGuard ng;
    return y + b.view({1, b.size(0), 1, 1});
  }
  Descs d(x.sizes(), w.sizes(), y.sizes(), p, x.dtype());
  Algos& a = algos_for(h, d, key_of(x, w, p));
  const auto fwd = pick(a.fwd, d, x.device(), "conv2d");
  const float one = 1.0f, zero = 0.0f;
  WEFT_CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, dptr(x), d.w, dptr(w), d.conv, fwd.algo,
                                           dptr(fwd.ws), fwd.bytes, &zero, d.y, dptr(y)));
  if (b.defined()) {
    WEFT_CHECK(b.dtype() == x.dtype() && b.is_contiguous() && b.device() == x.device(),
               "CUDA conv2d: bias ", b.str(), " must be contiguous ", x.dtype(), " on ",
               x.device());
    // 16-bit outputs: the bias added as PyTorch adds it there (output.add_(bias), in float,
    // rounded); cuDNN's AddTensor is not documented for bf16.
    if (is_reduced_float(y.dtype())) {
      NoGradGuard ng;  // the caller records the convolution's one backward node
      return y + b.view({1, b.size(0), 1, 1});
    }
    WEFT_CUDNN_CHECK(cudnnAddTensor(h, &one, d.b, dptr(b), &one, d.y, dptr(y)));
  }
  return y;
}

ConvGrads conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy0, const ConvParams& p,
                          bool want_dx, bool want_dw, bool want_db) {
  check_conv_args(x, w, "conv2d backward");
  // The descriptors are declared in x's dtype: a gradient of another one would be misread.
  Tensor dy = (dy0.dtype() == x.dtype() ? dy0 : dy0.to(x.dtype())).contiguous();
  const int dev = x.device().index;
  detail::DeviceScope scope(dev);
  ConvGrads g;
  if (x.numel() == 0 || w.numel() == 0 || dy.numel() == 0) {
    // An empty batch (or no channels), which cuDNN refuses: nothing flows, the gradients are 0.
    auto zeros_of = [&](const Shape& s) { return make_empty(s, x.dtype(), x.device()).zero_(); };
    if (want_dx) g.dx = zeros_of(x.sizes());
    if (want_dw) g.dw = zeros_of(w.sizes());
    if (want_db) g.db = zeros_of({w.size(0)});
    return g;
  }
  cudnnHandle_t h = handle_for(dev);
  Descs d(x.sizes(), w.sizes(), dy.sizes(), p, x.dtype());
  Algos& a = algos_for(h, d, key_of(x, w, p));
  const float one = 1.0f, zero = 0.0f;
  if (want_dx) {
    g.dx = make_empty(x.sizes(), x.dtype(), x.device());
    const auto bd = pick(a.bwd_data, d, x.device(), "conv2d backward (data)");
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, dptr(w), d.y, dptr(dy), d.conv,
                                                  bd.algo, dptr(bd.ws), bd.bytes, &zero, d.x,
                                                  dptr(g.dx)));
  }
  if (want_dw) {
    g.dw = make_empty(w.sizes(), w.dtype(), w.device());
    const auto bf = pick(a.bwd_filter, d, x.device(), "conv2d backward (filter)");
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, dptr(x), d.y, dptr(dy), d.conv,
                                                    bf.algo, dptr(bf.ws), bf.bytes, &zero, d.w,
                                                    dptr(g.dw)));
  }
  if (want_db && is_reduced_float(dy.dtype())) {
    g.db = dy.sum({0, 2, 3});  // float32 accumulation, rounded once; as for the bias above
  } else if (want_db) {
    g.db = make_empty({dy.size(1)}, x.dtype(), x.device());
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, &one, d.y, dptr(dy), &zero, d.b, dptr(g.db)));
  }
  return g;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::conv2d_stub, CUDA, &conv2d);
WEFT_REGISTER_DISPATCH(ops::conv2d_backward_stub, CUDA, &conv2d_backward);

}  // namespace weft::cuda
