// ProcessGroupGloo's collectives beyond allreduce/broadcast/allgather (gloo_ops.h): each is one
// Gloo algorithm over the group's context, run on its communication thread. Tensors are float32
// or int64 (checked at the call), so every element type below is one of the two.
#include <gloo/algorithm.h>
#include <gloo/allgather.h>
#include <gloo/alltoallv.h>
#include <gloo/gather.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/reduce_scatter.h>
#include <gloo/scatter.h>

#include <climits>
#include <cstring>
#include <functional>

#include "distributed/gloo/gloo_ops.h"

namespace weft::dist::detail {

namespace {

// Calls fn with a null pointer of the tensor's element type (float or int64_t).
template <typename Fn>
void with_type(DType dtype, Fn&& fn) {
  if (dtype == kFloat32) {
    fn(static_cast<float*>(nullptr));
  } else {
    fn(static_cast<int64_t*>(nullptr));
  }
}

void finish_avg(const Tensor& t, ReduceOp op, int size) {
  if (op == ReduceOp::AVG) divide_by(t.raw_data(), t.dtype(), static_cast<size_t>(t.numel()), size);
}

template <typename T, typename Op>
void bitwise2(T* x, const T* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = Op{}(x[i], y[i]);
}

// The legacy algorithms' combiner (x op= y) for op on T.
template <typename T>
const gloo::ReductionFunction<T>* legacy_fn(ReduceOp op) {
  if constexpr (std::is_integral_v<T>) {
    static const gloo::ReductionFunction<T> band(gloo::CUSTOM, &bitwise2<T, std::bit_and<T>>);
    static const gloo::ReductionFunction<T> bor(gloo::CUSTOM, &bitwise2<T, std::bit_or<T>>);
    static const gloo::ReductionFunction<T> bxor(gloo::CUSTOM, &bitwise2<T, std::bit_xor<T>>);
    if (op == ReduceOp::BAND) return &band;
    if (op == ReduceOp::BOR) return &bor;
    if (op == ReduceOp::BXOR) return &bxor;
  }
  switch (op) {
    case ReduceOp::MAX:
      return gloo::ReductionFunction<T>::max;
    case ReduceOp::MIN:
      return gloo::ReductionFunction<T>::min;
    case ReduceOp::PRODUCT:
      return gloo::ReductionFunction<T>::product;
    default:
      return gloo::ReductionFunction<T>::sum;
  }
}

}  // namespace

void gloo_reduce(const Ctx& ctx, const Tensor& t, int root, ReduceOp op, uint32_t tag,
                 Duration timeout) {
  const size_t n = static_cast<size_t>(t.numel());
  if (n == 0) return;
  gloo::ReduceOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  opts.setRoot(root);
  with_type(t.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    opts.setOutput(static_cast<T*>(t.raw_data()), n);
  });
  opts.setReduceFunction(gloo_reduce_fn(t.dtype(), op));
  gloo::reduce(opts);
  if (ctx->rank == root) finish_avg(t, op, ctx->size);
}

void gloo_gather(const Ctx& ctx, const std::vector<Tensor>& outputs, const Tensor& input, int root,
                 uint32_t tag, Duration timeout) {
  const size_t n = static_cast<size_t>(input.numel()), bytes = input.nbytes();
  if (n == 0) return;
  std::vector<uint8_t> all(ctx->rank == root ? bytes * static_cast<size_t>(ctx->size) : 0);
  gloo::GatherOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  opts.setRoot(root);
  with_type(input.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    opts.setInput(static_cast<T*>(input.raw_data()), n);
    if (ctx->rank == root) opts.setOutput(reinterpret_cast<T*>(all.data()), n * ctx->size);
  });
  gloo::gather(opts);
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::memcpy(outputs[i].raw_data(), all.data() + i * bytes, bytes);
  }
}

void gloo_scatter(const Ctx& ctx, const Tensor& output, const std::vector<Tensor>& inputs, int root,
                  uint32_t tag, Duration timeout) {
  const size_t n = static_cast<size_t>(output.numel());
  if (n == 0) return;
  gloo::ScatterOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  opts.setRoot(root);
  with_type(output.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    if (ctx->rank == root) {
      std::vector<T*> ptrs;
      for (const Tensor& x : inputs) ptrs.push_back(static_cast<T*>(x.raw_data()));
      opts.setInputs(ptrs, n);
    }
    opts.setOutput(static_cast<T*>(output.raw_data()), n);
  });
  gloo::scatter(opts);
}

void gloo_allgather_into(const Ctx& ctx, const Tensor& output, const Tensor& input, uint32_t tag,
                         Duration timeout) {
  const size_t n = static_cast<size_t>(input.numel());
  if (n == 0) return;
  gloo::AllgatherOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  with_type(input.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    opts.setInput(static_cast<T*>(input.raw_data()), n);
    opts.setOutput(static_cast<T*>(output.raw_data()), n * ctx->size);
  });
  gloo::allgather(opts);
}

void gloo_reduce_scatter(const Ctx& ctx, const Tensor& output, const Tensor& input, ReduceOp op) {
  const int64_t n = output.numel();
  if (n == 0) return;
  WEFT_CHECK_DIST(input.numel() <= INT_MAX, "reduce_scatter: ", input.numel(),
                  " elements exceed Gloo's int counts");
  with_type(input.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    // The algorithm reduces in place and leaves this rank's block at the start of the buffer.
    std::vector<T> buf(static_cast<size_t>(input.numel()));
    std::memcpy(buf.data(), input.raw_data(), input.nbytes());
    gloo::ReduceScatterHalvingDoubling<T> algo(
        ctx, std::vector<T*>{buf.data()}, static_cast<int>(input.numel()),
        std::vector<int>(static_cast<size_t>(ctx->size), static_cast<int>(n)), legacy_fn<T>(op));
    algo.run();
    std::memcpy(output.raw_data(), buf.data(), output.nbytes());
  });
  finish_avg(output, op, ctx->size);
}

void gloo_alltoallv(const Ctx& ctx, const Tensor& output, const Tensor& input,
                    const AlltoallCounts& counts, uint32_t tag, Duration timeout) {
  gloo::AlltoallvOptions opts(ctx);
  opts.setTag(tag);
  opts.setTimeout(timeout);
  // Gloo needs a buffer even where a rank sends or receives nothing; one element stands in.
  int64_t dummy[2] = {0, 0};
  with_type(input.dtype(), [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    T* in = input.numel() ? static_cast<T*>(input.raw_data()) : reinterpret_cast<T*>(&dummy[0]);
    T* out = output.numel() ? static_cast<T*>(output.raw_data()) : reinterpret_cast<T*>(&dummy[1]);
    opts.setInput(in, counts.send);
    opts.setOutput(out, counts.recv);
  });
  gloo::alltoallv(opts);
}

}  // namespace weft::dist::detail
