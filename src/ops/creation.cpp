// Tensor factories, random fills and the intra-op thread setting.
#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft {

namespace {
Tensor finish(Tensor t, const TensorOptions& o) {
  if (o.requires_grad) t.requires_grad_(true);
  return t;
}
Generator& gen_or_default(Generator* g) { return g ? *g : default_generator(); }
}  // namespace

Tensor empty(const Shape& shape, TensorOptions o) {
  return finish(make_empty(shape, o.dtype, o.device), o);
}
Tensor full(const Shape& shape, double value, TensorOptions o) {
  Tensor t = make_empty(shape, o.dtype, o.device);
  t.fill_(value);
  return finish(t, o);
}
Tensor zeros(const Shape& shape, TensorOptions o) { return full(shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return full(shape, 1.0, o); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), {t.dtype(), t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), {t.dtype(), t.device()}); }
Tensor scalar_tensor(double v, TensorOptions o) { return full({}, v, o); }

Tensor arange(int64_t end, TensorOptions o) {
  WEFT_CHECK(end >= 0, "arange: end must be non-negative, got ", end);
  Tensor t = make_empty({end}, kInt64, o.device);
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < end; ++i) p[i] = i;
  return o.dtype == kInt64 ? t : t.to(o.dtype);
}

Tensor arange(double start, double end, double step, TensorOptions o) {
  WEFT_CHECK(step != 0 && (end - start) / step >= 0, "arange: bad range [", start, ", ", end,
             ") with step ", step);
  int64_t n = (int64_t)std::ceil((end - start) / step);
  Tensor t = make_empty({n}, kFloat32, o.device);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = (float)(start + i * step);
  return finish(o.dtype == kFloat32 ? t : t.to(o.dtype), o);
}

Tensor tensor(const std::vector<float>& v, const Shape& shape, TensorOptions o) {
  WEFT_CHECK((int64_t)v.size() == shape_numel(shape), "tensor: ", v.size(), " values for shape ",
             shape_str(shape));
  Tensor t = make_empty(shape, kFloat32, o.device);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(float));
  return finish(o.dtype == kFloat32 ? t : t.to(o.dtype), o);
}

Tensor tensor(const std::vector<int64_t>& v, const Shape& shape) {
  WEFT_CHECK((int64_t)v.size() == shape_numel(shape), "tensor: ", v.size(), " values for shape ",
             shape_str(shape));
  Tensor t = make_empty(shape, kInt64);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int64_t));
  return t;
}

Tensor from_blob(const void* data, const Shape& shape, DType dtype) {
  Tensor t = make_empty(shape, dtype);
  if (t.nbytes() > 0) std::memcpy(t.raw_data(), data, t.nbytes());
  return t;
}

Tensor& uniform_(Tensor& t, double low, double high, Generator* gen) {
  WEFT_CHECK(t.dtype() == kFloat32 && t.is_contiguous(),
             "uniform_ needs a contiguous float32 tensor, got ", t.str());
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  float* p = t.data_ptr<float>();
  const float lo = (float)low, span = (float)(high - low);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + span * g.uniform();
  return t;
}

Tensor& normal_(Tensor& t, double mean, double std, Generator* gen) {
  WEFT_CHECK(t.dtype() == kFloat32 && t.is_contiguous(),
             "normal_ needs a contiguous float32 tensor, got ", t.str());
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = (float)(mean + std * g.normal());
  return t;
}

Tensor rand(const Shape& shape, Generator* gen) {
  Tensor t = make_empty(shape);
  return uniform_(t, 0.0, 1.0, gen);
}

Tensor randn(const Shape& shape, Generator* gen) {
  Tensor t = make_empty(shape);
  return normal_(t, 0.0, 1.0, gen);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator* gen) {
  Tensor t = make_empty(shape, kInt64);
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.randint(low, high);
  return t;
}

Tensor randperm(int64_t n, Generator* gen) {
  Tensor t = arange(n);
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[g.randint(0, i + 1)]);
  return t;
}

// weft links OpenBLAS's OpenMP build (openblas_get_parallel() == 2), whose kernels run on the
// calling thread's libgomp team like weft's own: one pool, sized by omp_set_num_threads (which
// OpenBLAS re-reads on every call). Its pthread build (1) keeps a second pool of its own that
// spins against libgomp's; it then gets the same count, and a warning once when n > 1.
void set_num_threads(int n) {
  WEFT_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got ", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  static std::atomic<bool> warned{false};
  if (n > 1 && openblas_get_parallel() != 2 && !warned.exchange(true)) {
    std::fprintf(stderr,
                 "weft: warning: OpenBLAS is not its OpenMP build (openblas_get_parallel() = %d); "
                 "its threads will compete with weft's\n",
                 openblas_get_parallel());
  }
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace weft
