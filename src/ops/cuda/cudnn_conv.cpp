// conv2d on cuDNN (nn_ops.h): forward, backward data, backward filter and bias, with the
// algorithm picked by cuDNN's heuristics once per shape and its workspace taken from the
// caching allocator. One cuDNN handle per (thread, device), bound to the current stream.
#include <cudnn.h>

#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "../../cuda/cuda_check.h"
#include "nn_ops.h"
#include "weft/cuda.h"

#define WEFT_CUDNN_CHECK(call)                                               \
  do {                                                                       \
    const cudnnStatus_t weft_cudnn_st_ = (call);                             \
    WEFT_CHECK(weft_cudnn_st_ == CUDNN_STATUS_SUCCESS, "cuDNN call ", #call, \
               " failed: ", cudnnGetErrorString(weft_cudnn_st_));            \
  } while (0)

namespace weft::cuda::nn {

namespace {

cudnnHandle_t handle_for(int device) {
  thread_local std::unordered_map<int, cudnnHandle_t> handles;  // lives as long as the thread
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t h;
    WEFT_CUDNN_CHECK(cudnnCreate(&h));
    it = handles.emplace(device, h).first;
  }
  WEFT_CUDNN_CHECK(cudnnSetStream(it->second, detail::stream_of(device)));
  return it->second;
}

// The descriptors of one convolution; destroyed with the object.
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, b = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  Descs(const Shape& xs, const Shape& ws, const Shape& ys, const ConvParams& p) {
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    WEFT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&b));
    WEFT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    WEFT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    WEFT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)xs[0],
                                                (int)xs[1], (int)xs[2], (int)xs[3]));
    WEFT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)ys[0],
                                                (int)ys[1], (int)ys[2], (int)ys[3]));
    WEFT_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, (int)ys[1], 1, 1));
    WEFT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)ws[0],
                                                (int)ws[1], (int)ws[2], (int)ws[3]));
    WEFT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, (int)p.ph, (int)p.pw, (int)p.sh,
                                                     (int)p.sw, (int)p.dh, (int)p.dw,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    WEFT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, (int)p.groups));
    // FMA math keeps float32 convolutions as exact as PyTorch's with cudnn.allow_tf32 off;
    // tensor cores (TF32) only when asked for.
    WEFT_CUDNN_CHECK(
        cudnnSetConvolutionMathType(conv, allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
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
};

// The algorithms chosen for one geometry (by cuDNN's heuristics, first usable one).
struct Algos {
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
};
using Key = std::tuple<Shape, Shape, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       bool, int>;

Algos algos_for(cudnnHandle_t h, const Descs& d, const Key& key) {
  static std::mutex mu;
  static std::map<Key, Algos> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  Algos a{};
  int n = 0;
  cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      h, d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fp));
  WEFT_CHECK(n > 0 && fp[0].status == CUDNN_STATUS_SUCCESS, "cuDNN: no forward algorithm");
  a.fwd = fp[0].algo;
  cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      h, d.w, d.y, d.conv, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp));
  WEFT_CHECK(n > 0 && dp[0].status == CUDNN_STATUS_SUCCESS, "cuDNN: no backward-data algorithm");
  a.bwd_data = dp[0].algo;
  cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  WEFT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      h, d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp));
  WEFT_CHECK(n > 0 && wp[0].status == CUDNN_STATUS_SUCCESS, "cuDNN: no backward-filter algorithm");
  a.bwd_filter = wp[0].algo;
  std::lock_guard<std::mutex> lock(mu);
  cache.emplace(key, a);
  return a;
}

Key key_of(const Tensor& x, const Tensor& w, const ConvParams& p) {
  return {x.sizes(),    w.sizes(),       p.sh, p.sw, p.ph, p.pw, p.dh, p.dw, p.groups,
          allow_tf32(), x.device().index};
}

// A tensor's first element on its device (raw_data() is for host memory).
void* dptr(const Tensor& t) {
  return static_cast<char*>(t.impl()->storage->data) + t.storage_offset() * itemsize(t.dtype());
}

// Device scratch of at least `bytes`, from the caching allocator (freed with the tensor).
Tensor workspace(size_t bytes, Device d) {
  return make_empty({(int64_t)((bytes + 3) / 4)}, kFloat32, d);
}

void check_conv_args(const Tensor& x, const Tensor& w, const char* what) {
  WEFT_CHECK(x.dtype() == kFloat32 && w.dtype() == kFloat32 && x.is_contiguous() &&
                 w.is_contiguous() && x.device() == w.device() && x.dim() == 4 && w.dim() == 4,
             "CUDA ", what, ": expects contiguous float32 4-D input and weight on one device, got ",
             x.str(), " on ", x.device(), " and ", w.str(), " on ", w.device());
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p) {
  check_conv_args(x, w, "conv2d");
  const int dev = x.device().index;
  detail::DeviceScope scope(dev);
  cudnnHandle_t h = handle_for(dev);
  const int64_t Ho = (x.size(2) + 2 * p.ph - p.dh * (w.size(2) - 1) - 1) / p.sh + 1;
  const int64_t Wo = (x.size(3) + 2 * p.pw - p.dw * (w.size(3) - 1) - 1) / p.sw + 1;
  Tensor y = make_empty({x.size(0), w.size(0), Ho, Wo}, kFloat32, x.device());
  if (y.numel() == 0) return y;
  Descs d(x.sizes(), w.sizes(), y.sizes(), p);
  const Algos a = algos_for(h, d, key_of(x, w, p));
  size_t ws_bytes = 0;
  WEFT_CUDNN_CHECK(
      cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, a.fwd, &ws_bytes));
  Tensor ws = workspace(ws_bytes, x.device());
  const float one = 1.0f, zero = 0.0f;
  WEFT_CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, dptr(x), d.w, dptr(w), d.conv, a.fwd,
                                           dptr(ws), ws_bytes, &zero, d.y, dptr(y)));
  if (b.defined()) {
    WEFT_CHECK(b.dtype() == kFloat32 && b.is_contiguous() && b.device() == x.device(),
               "CUDA conv2d: bias ", b.str(), " must be contiguous float32 on ", x.device());
    WEFT_CUDNN_CHECK(cudnnAddTensor(h, &one, d.b, dptr(b), &one, d.y, dptr(y)));
  }
  return y;
}

ConvGrads conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy0, const ConvParams& p,
                          bool want_dx, bool want_dw, bool want_db) {
  check_conv_args(x, w, "conv2d backward");
  Tensor dy = dy0.contiguous();
  const int dev = x.device().index;
  detail::DeviceScope scope(dev);
  cudnnHandle_t h = handle_for(dev);
  Descs d(x.sizes(), w.sizes(), dy.sizes(), p);
  const Algos a = algos_for(h, d, key_of(x, w, p));
  const float one = 1.0f, zero = 0.0f;
  ConvGrads g;
  if (want_dx) {
    g.dx = make_empty(x.sizes(), kFloat32, x.device());
    size_t bytes = 0;
    WEFT_CUDNN_CHECK(
        cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, a.bwd_data, &bytes));
    Tensor ws = workspace(bytes, x.device());
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, dptr(w), d.y, dptr(dy), d.conv,
                                                  a.bwd_data, dptr(ws), bytes, &zero, d.x,
                                                  dptr(g.dx)));
  }
  if (want_dw) {
    g.dw = make_empty(w.sizes(), kFloat32, w.device());
    size_t bytes = 0;
    WEFT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w,
                                                                    a.bwd_filter, &bytes));
    Tensor ws = workspace(bytes, x.device());
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, dptr(x), d.y, dptr(dy), d.conv,
                                                    a.bwd_filter, dptr(ws), bytes, &zero, d.w,
                                                    dptr(g.dw)));
  }
  if (want_db) {
    g.db = make_empty({dy.size(1)}, kFloat32, x.device());
    WEFT_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, &one, d.y, dptr(dy), &zero, d.b, dptr(g.db)));
  }
  return g;
}

}  // namespace weft::cuda::nn
