// CPU kernels of the NLL loss and the fused mean-squared error (ops/stubs/loss.h): plain loops,
// sums in double.
#include "ops/stubs/loss.h"

#include <cmath>

#include "weft/ops.h"

namespace weft::cpu {

namespace {

using ops::LossReduction;

Tensor nll_loss(const Tensor& lp, const Tensor& t, int64_t ignore_index, LossReduction r,
                int64_t count) {
  const int64_t N = lp.size(0), C = lp.size(1);
  const int64_t* pt = t.data_ptr<int64_t>();
  Tensor lpc = lp.contiguous();
  const float* pl = lpc.data_ptr<float>();
  Tensor per = make_empty({N}, kFloat32, lp.device());
  float* pp = per.data_ptr<float>();
  for (int64_t i = 0; i < N; ++i) pp[i] = pt[i] == ignore_index ? 0.0f : -pl[i * C + pt[i]];
  if (r == LossReduction::None) return per;
  double s = 0;
  for (int64_t i = 0; i < N; ++i) s += pp[i];
  if (r == LossReduction::Mean) s = count ? s / count : NAN;
  return scalar_tensor(s, {.device = lp.device()});
}

Tensor nll_loss_backward(const Tensor& g, const Tensor& t, int64_t C, int64_t ignore_index,
                         LossReduction r, int64_t count) {
  const int64_t N = t.numel();
  Tensor gc = g.contiguous();
  const float* pg = gc.data_ptr<float>();
  Tensor dx = zeros({N, C});
  float* pd = dx.data_ptr<float>();
  const int64_t* pt = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    if (pt[i] == ignore_index) continue;
    float gi = r == LossReduction::None  ? pg[i]
               : r == LossReduction::Sum ? pg[0]
                                         : pg[0] / (float)count;
    pd[i * C + pt[i]] = -gi;
  }
  return dx;
}

double mse_loss(const Tensor& x, const Tensor& y) {
  const float* px = x.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  const int64_t n = x.numel();
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = (double)px[i] - py[i];
    s += d * d;
  }
  return s;
}

Tensor mse_loss_backward(const Tensor& x, const Tensor& y, float k) {
  Tensor dx = make_empty(x.sizes(), kFloat32, x.device());
  float* pd = dx.data_ptr<float>();
  const float* px = x.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) pd[i] = k * (px[i] - py[i]);
  return dx;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::nll_loss_stub, CPU, &nll_loss);
WEFT_REGISTER_DISPATCH(ops::nll_loss_backward_stub, CPU, &nll_loss_backward);
WEFT_REGISTER_DISPATCH(ops::mse_loss_stub, CPU, &mse_loss);
WEFT_REGISTER_DISPATCH(ops::mse_loss_backward_stub, CPU, &mse_loss_backward);

}  // namespace weft::cpu
