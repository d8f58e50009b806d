// CPU kernels of Tensor::copy_ and fill_ (ops/stubs/copy.h): strided copies between any dtypes
// (contiguous runs of one dtype as memcpy, 16-bit floats widened and narrowed in vectorised
// runs), one flat multithreaded memcpy for contiguous same-dtype tensors, and strided fills.
#include "ops/stubs/copy.h"

#include <cstring>

#include "ops/cpu/dtype_convert.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/parallel.h"

namespace weft::cpu {

namespace {

template <typename Dst, typename Src>
void copy_kernel(const Tensor& dst, const Tensor& src) {
  Dst* d = static_cast<Dst*>(dst.impl()->storage->data);
  const Src* s = static_cast<const Src*>(src.impl()->storage->data);
  cpu::for_each_run<2>(dst.sizes(), {&dst.strides(), &src.strides()},
                       {dst.storage_offset(), src.storage_offset()},
                       [&](std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                         Dst* dp = d + o[0];
                         const Src* sp = s + o[1];
                         if (st[0] == 1 && st[1] == 1) {
                           if constexpr (std::is_same_v<Dst, Src>)
                             std::memcpy(dp, sp, n * sizeof(Dst));
                           else if constexpr (std::is_same_v<Dst, float> && cpu::is_half_v<Src>)
                             cpu::widen(sp, n, dp);
                           else if constexpr (cpu::is_half_v<Dst> && std::is_same_v<Src, float>)
                             cpu::narrow(sp, n, dp);
                           else
                             for (int64_t i = 0; i < n; ++i) dp[i] = cpu::convert<Dst>(sp[i]);
                         } else {
                           for (int64_t i = 0; i < n; ++i)
                             dp[i * st[0]] = cpu::convert<Dst>(sp[i * st[1]]);
                         }
                       });
}

// Only host<->CUDA copies can be asynchronous, so non_blocking means nothing here.
void copy(const Tensor& dst, const Tensor& s, bool /*non_blocking*/) {
  DType dt = dst.dtype(), st = s.dtype();
  if (dt == st && dst.is_contiguous() && s.is_contiguous()) {
    // One flat copy, split across the intra-op threads when it is big.
    char* d = static_cast<char*>(dst.raw_data());
    const char* p = static_cast<const char*>(s.raw_data());
    const int64_t bytes = (int64_t)dst.nbytes();
    cpu::parallel_for(0, bytes, (int64_t)1 << 20,
                      [&](int64_t b, int64_t e) { std::memcpy(d + b, p + b, (size_t)(e - b)); });
    return;
  }
  cpu::dispatch_dtype(dt, [&]<typename D>() {
    cpu::dispatch_dtype(st, [&]<typename S>() { copy_kernel<D, S>(dst, s); });
  });
}

void fill(const Tensor& t, double value) {
  auto run = [&](auto v) {
    using T = decltype(v);
    T* d = static_cast<T*>(t.impl()->storage->data);
    cpu::for_each_run<1>(t.sizes(), {&t.strides()}, {t.storage_offset()},
                         [&](std::array<int64_t, 1> o, int64_t n, std::array<int64_t, 1> st) {
                           for (int64_t i = 0; i < n; ++i) d[o[0] + i * st[0]] = v;
                         });
  };
  cpu::dispatch_dtype(t.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, int64_t>)
      run((int64_t)value);
    else
      run(cpu::convert<T>((float)value));
  });
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::copy_stub, CPU, &copy);
WEFT_REGISTER_DISPATCH(ops::fill_stub, CPU, &fill);

}  // namespace weft::cpu
