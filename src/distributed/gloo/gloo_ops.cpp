#include "distributed/gloo/gloo_ops.h"

#include <gloo/allreduce.h>
#include <gloo/math.h>

#include <algorithm>
#include <functional>
#include <type_traits>

#include "distributed/collectives.h"
#include "weft/half.h"

namespace weft::dist::detail {

namespace {

template <typename T, typename Op>
void bitwise(void* c, const void* a, const void* b, size_t n) {
  auto* pc = static_cast<T*>(c);
  auto* pa = static_cast<const T*>(a);
  auto* pb = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) pc[i] = Op{}(pa[i], pb[i]);
}

template <typename T>
gloo::AllreduceOptions::Func reduce_fn(ReduceOp op) {
  using F = void (*)(void*, const void*, const void*, size_t);
  if constexpr (std::is_integral_v<T>) {
    if (op == ReduceOp::BAND) return &bitwise<T, std::bit_and<T>>;
    if (op == ReduceOp::BOR) return &bitwise<T, std::bit_or<T>>;
    if (op == ReduceOp::BXOR) return &bitwise<T, std::bit_xor<T>>;
  }
  switch (op) {
    case ReduceOp::MAX:
      return static_cast<F>(&gloo::max<T>);
    case ReduceOp::MIN:
      return static_cast<F>(&gloo::min<T>);
    case ReduceOp::PRODUCT:
      return static_cast<F>(&gloo::product<T>);
    default:  // SUM, AVG (then divided); bitwise ops never reach a float here
      break;
  }
  return static_cast<F>(&gloo::sum<T>);
}

// Half-precision reductions for the compression hooks: Gloo runs its own algorithm and
// calls this elementwise combiner; fp16 and bf16 values are combined in float and rounded
// back (to nearest even).
float half_to_float(uint16_t h, bool bf16) { return bf16 ? bf16_to_float(h) : fp16_to_float(h); }
uint16_t float_to_half(float f, bool bf16) { return bf16 ? float_to_bf16(f) : float_to_fp16(f); }

template <bool BF16>
void half_reduce(void* c, const void* a, const void* b, size_t n, ReduceOp op) {
  auto* pc = static_cast<uint16_t*>(c);
  auto* pa = static_cast<const uint16_t*>(a);
  auto* pb = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) {
    const float x = half_to_float(pa[i], BF16), y = half_to_float(pb[i], BF16);
    const float r = op == ReduceOp::MAX       ? std::max(x, y)
                    : op == ReduceOp::MIN     ? std::min(x, y)
                    : op == ReduceOp::PRODUCT ? x * y
                                              : x + y;
    pc[i] = float_to_half(r, BF16);
  }
}

template <bool BF16, ReduceOp Op>
void half_reduce_fn(void* c, const void* a, const void* b, size_t n) {
  half_reduce<BF16>(c, a, b, n, Op);
}

template <bool BF16>
gloo::AllreduceOptions::Func half_fn(ReduceOp op) {
  switch (op) {
    case ReduceOp::MAX:
      return &half_reduce_fn<BF16, ReduceOp::MAX>;
    case ReduceOp::MIN:
      return &half_reduce_fn<BF16, ReduceOp::MIN>;
    case ReduceOp::PRODUCT:
      return &half_reduce_fn<BF16, ReduceOp::PRODUCT>;
    default:
      return &half_reduce_fn<BF16, ReduceOp::SUM>;
  }
}

constexpr size_t kSmallAllreduceBytes = 64 * 1024;

}  // namespace

gloo::AllreduceOptions::Func gloo_reduce_fn(DType dtype, ReduceOp op) {
  return dtype == kFloat32 ? reduce_fn<float>(op) : reduce_fn<int64_t>(op);
}

void gloo_allreduce(const std::shared_ptr<gloo::Context>& ctx, const Tensor& t, ReduceOp op,
                    uint32_t tag, Duration timeout) {
  const size_t n = static_cast<size_t>(t.numel());
  if (n == 0) return;
  gloo::AllreduceOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  if (t.dtype() == kFloat32) {
    opts.setOutput(static_cast<float*>(t.raw_data()), n);
    opts.setReduceFunction(reduce_fn<float>(op));
  } else if (t.dtype() == DType::Float16 || t.dtype() == DType::BFloat16) {
    opts.setOutput(static_cast<gloo::float16*>(t.raw_data()), n);  // 2-byte elements
    opts.setReduceFunction(t.dtype() == DType::BFloat16 ? half_fn<true>(op) : half_fn<false>(op));
  } else {
    opts.setOutput(static_cast<int64_t*>(t.raw_data()), n);
    opts.setReduceFunction(reduce_fn<int64_t>(op));
  }
  // Small payloads (SyncBatchNorm's statistics, DDP's last tiny buckets) take Gloo's bcube:
  // one exchange with each peer instead of the ring's 2(n-1) dependent segment steps. At world
  // 2 on loopback, 466 floats took 0.21 ms median / 0.27 ms p90 by bcube against 0.32 / 4.1 ms
  // by ring. Large ones keep the bandwidth-optimal ring.
  if (n * itemsize(t.dtype()) <= kSmallAllreduceBytes)
    opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::BCUBE);
  gloo::allreduce(opts);
  if (op == ReduceOp::AVG) {
    if (t.dtype() == DType::Float16 || t.dtype() == DType::BFloat16) {
      auto* p = static_cast<uint16_t*>(t.raw_data());
      const bool bf = t.dtype() == DType::BFloat16;
      for (size_t i = 0; i < n; ++i)
        p[i] = float_to_half(half_to_float(p[i], bf) / (float)ctx->size, bf);
    } else {
      divide_by(t.raw_data(), t.dtype(), n, ctx->size);
    }
  }
}

}  // namespace weft::dist::detail
