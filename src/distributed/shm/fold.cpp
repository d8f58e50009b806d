#include "distributed/shm/fold.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "distributed/collectives.h"
#include "weft/half.h"

namespace weft::dist::shm {

namespace {

// Elements folded per block: the accumulator stays in L1 while every source streams through.
constexpr size_t kBlock = 1024;

// int64 sums and products wrap (two's complement) rather than overflow, which C++ leaves
// undefined: computed in uint64.
struct Sum {
  float operator()(float a, float b) const { return a + b; }
  int64_t operator()(int64_t a, int64_t b) const {
    return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  }
};
struct Product {
  float operator()(float a, float b) const { return a * b; }
  int64_t operator()(int64_t a, int64_t b) const {
    return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  }
};
struct Max {
  template <typename T>
  T operator()(T a, T b) const {
    return std::max(a, b);
  }
};
struct Min {
  template <typename T>
  T operator()(T a, T b) const {
    return std::min(a, b);
  }
};

// Storage type T, computed in Acc: float32 and int64 as they are, fp16/bf16 in float.
template <typename T, typename Acc, typename Load, typename Store, typename Op>
void fold_as(void* out_, const void* const* srcs_, int n, size_t count, Load load, Store store,
             Op op) {
  T* out = static_cast<T*>(out_);
  Acc acc[kBlock];
  for (size_t b = 0; b < count; b += kBlock) {
    const size_t m = std::min(kBlock, count - b);
    const T* s0 = static_cast<const T*>(srcs_[0]) + b;
    for (size_t i = 0; i < m; ++i) acc[i] = load(s0[i]);
    for (int k = 1; k < n; ++k) {
      const T* s = static_cast<const T*>(srcs_[k]) + b;
      for (size_t i = 0; i < m; ++i) acc[i] = op(acc[i], load(s[i]));
    }
    for (size_t i = 0; i < m; ++i) out[b + i] = store(acc[i]);
  }
}

template <typename Op>
void fold_op(void* out, const void* const* srcs, int n, size_t count, DType dtype, Op op) {
  const auto same = [](auto x) { return x; };
  switch (dtype) {
    case DType::Float32:
      return fold_as<float, float>(out, srcs, n, count, same, same, op);
    case DType::Int64:
      return fold_as<int64_t, int64_t>(out, srcs, n, count, same, same, op);
    case DType::BFloat16:
      return fold_as<uint16_t, float>(
          out, srcs, n, count, [](uint16_t h) { return bf16_to_float(h); },
          [](float f) { return float_to_bf16(f); }, op);
    case DType::Float16:
      return fold_as<uint16_t, float>(
          out, srcs, n, count, [](uint16_t h) { return fp16_to_float(h); },
          [](float f) { return float_to_fp16(f); }, op);
  }
}

}  // namespace

void fold(void* out, const void* const* srcs, int n, size_t count, DType dtype, ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM:
    case ReduceOp::AVG:
      return fold_op(out, srcs, n, count, dtype, Sum{});
    case ReduceOp::PRODUCT:
      return fold_op(out, srcs, n, count, dtype, Product{});
    case ReduceOp::MAX:
      return fold_op(out, srcs, n, count, dtype, Max{});
    case ReduceOp::MIN:
      return fold_op(out, srcs, n, count, dtype, Min{});
    case ReduceOp::BAND:
    case ReduceOp::BOR:
    case ReduceOp::BXOR:
      break;  // the groups send bitwise reductions through Gloo instead
  }
  WEFT_CHECK(false, "shared-memory fold: ReduceOp ", to_string(op), " is not supported");
}

void average(void* data, size_t count, DType dtype, int divisor) {
  if (is_reduced_float(dtype)) {
    auto* p = static_cast<uint16_t*>(data);
    const float d = static_cast<float>(divisor);
    if (dtype == DType::BFloat16) {
      for (size_t i = 0; i < count; ++i) p[i] = float_to_bf16(bf16_to_float(p[i]) / d);
    } else {
      for (size_t i = 0; i < count; ++i) p[i] = float_to_fp16(fp16_to_float(p[i]) / d);
    }
    return;
  }
  detail::divide_by(data, dtype, count, divisor);
}

}  // namespace weft::dist::shm
