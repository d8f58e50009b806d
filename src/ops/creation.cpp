// Tensor factories, random fills and the intra-op thread setting. Factories that fill from host
// values build the tensor in host memory and move it; random numbers are always drawn from the
// CPU generator and copied to the device, so that one seed gives the same numbers on every device
// and a checkpoint's single generator state resumes any run exactly.
#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

namespace {
Tensor finish(Tensor t, const TensorOptions& o) {
  if (o.requires_grad) t.requires_grad_(true);
  return t;
}
Generator& gen_or_default(Generator* g) { return g ? *g : default_generator(); }
// Where a tensor for `d` is filled on the host: d itself for CPU devices, else the CPU.
Device host_for(Device d) { return d.is_cuda() ? Device::CPU() : d; }
Tensor moved_to(const Tensor& t, Device d) { return t.device() == d ? t : t.to(d); }
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
  Tensor t = make_empty({end}, kInt64, host_for(o.device));
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < end; ++i) p[i] = i;
  t = moved_to(t, o.device);
  return o.dtype == kInt64 ? t : t.to(o.dtype);
}

Tensor arange(double start, double end, double step, TensorOptions o) {
  WEFT_CHECK(step != 0 && (end - start) / step >= 0, "arange: bad range [", start, ", ", end,
             ") with step ", step);
  int64_t n = (int64_t)std::ceil((end - start) / step);
  Tensor t = make_empty({n}, kFloat32, host_for(o.device));
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = (float)(start + i * step);
  t = moved_to(t, o.device);
  return finish(o.dtype == kFloat32 ? t : t.to(o.dtype), o);
}

Tensor tensor(const std::vector<float>& v, const Shape& shape, TensorOptions o) {
  WEFT_CHECK((int64_t)v.size() == shape_numel(shape), "tensor: ", v.size(), " values for shape ",
             shape_str(shape));
  Tensor t = make_empty(shape, kFloat32, host_for(o.device));
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(float));
  t = moved_to(t, o.device);
  return finish(o.dtype == kFloat32 ? t : t.to(o.dtype), o);
}

Tensor tensor(const std::vector<int64_t>& v, const Shape& shape) {
  WEFT_CHECK((int64_t)v.size() == shape_numel(shape), "tensor: ", v.size(), " values for shape ",
             shape_str(shape));
  Tensor t = make_empty(shape, kInt64, host_for(current_device()));
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int64_t));
  return moved_to(t, current_device());
}

Tensor from_blob(const void* data, const Shape& shape, DType dtype) {
  Tensor t = make_empty(shape, dtype, host_for(current_device()));
  if (t.nbytes() > 0) std::memcpy(t.raw_data(), data, t.nbytes());
  return moved_to(t, current_device());
}

Tensor& uniform_(Tensor& t, double low, double high, Generator* gen) {
  if (t.device().is_cuda()) {
    Tensor h = make_empty(t.sizes(), t.dtype(), Device::CPU());
    t.copy_(uniform_(h, low, high, gen));
    return t;
  }
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
  if (t.device().is_cuda()) {
    Tensor h = make_empty(t.sizes(), t.dtype(), Device::CPU());
    t.copy_(normal_(h, mean, std, gen));
    return t;
  }
  WEFT_CHECK(t.dtype() == kFloat32 && t.is_contiguous(),
             "normal_ needs a contiguous float32 tensor, got ", t.str());
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = (float)(mean + std * g.normal());
  return t;
}

Tensor rand(const Shape& shape, Generator* gen) {
  Tensor t = make_empty(shape, kFloat32, host_for(current_device()));
  return moved_to(uniform_(t, 0.0, 1.0, gen), current_device());
}

Tensor randn(const Shape& shape, Generator* gen) {
  Tensor t = make_empty(shape, kFloat32, host_for(current_device()));
  return moved_to(normal_(t, 0.0, 1.0, gen), current_device());
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator* gen) {
  const Device dev = current_device();
  Tensor t = make_empty(shape, kInt64, host_for(dev));
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.randint(low, high);
  return moved_to(t, dev);
}

Tensor randperm(int64_t n, Generator* gen) {
  const Device dev = current_device();
  Tensor t = arange(n, {.dtype = kInt64, .device = host_for(dev)});
  Generator& g = gen_or_default(gen);
  std::lock_guard<std::mutex> lock(g.mutex());
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[g.randint(0, i + 1)]);
  return moved_to(t, dev);
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
