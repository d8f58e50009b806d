#include "weft/nn/batchnorm.h"

#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn {

BatchNormImplBase::BatchNormImplBase(std::string type_name, int64_t num_features,
                                     BatchNormOptions options, int min_dim, int max_dim)
    : Module(std::move(type_name)),
      num_features(num_features),
      options(options),
      min_dim_(min_dim),
      max_dim_(max_dim) {
  WEFT_CHECK(num_features > 0, type_name_, ": num_features must be positive, got ", num_features);
  reset_state();
}

void BatchNormImplBase::reset_state() {
  if (options.affine) {
    weight = register_parameter("weight", ones({num_features}));
    bias = register_parameter("bias", zeros({num_features}));
  }
  if (options.track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({num_features}));
    running_var = register_buffer("running_var", ones({num_features}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {.dtype = kInt64}));
  }
}

void BatchNormImplBase::reset_running_stats() {
  if (!options.track_running_stats) return;
  NoGradGuard ng;
  running_mean.zero_();
  running_var.fill_(1.0);
  num_batches_tracked.zero_();
}

void BatchNormImplBase::check_input_dim(const Tensor& input) const {
  WEFT_CHECK(input.dim() >= min_dim_ && input.dim() <= max_dim_, type_name_, ": expected ",
             min_dim_ == max_dim_
                 ? std::to_string(min_dim_) + "D"
                 : std::to_string(min_dim_) + "D or " + std::to_string(max_dim_) + "D",
             " input, got ", input.str());
  WEFT_CHECK(input.size(1) == num_features, type_name_, ": expected ", num_features,
             " channels (dim 1), got input ", shape_str(input.sizes()));
}

double BatchNormImplBase::next_momentum_factor() {
  double factor = options.momentum.value_or(0.0);
  if (training_ && options.track_running_stats) {
    if (num_batches_tracked.device().is_cpu()) {
      num_batches_tracked.data_ptr<int64_t>()[0] += 1;
    } else {
      // Counted on the device: a round trip through the host would make every training step
      // wait for the GPU (CUDA has no in-place int64 add, hence the copy).
      NoGradGuard ng;
      Device d = num_batches_tracked.device();
      num_batches_tracked.copy_(num_batches_tracked + ones({}, {.dtype = kInt64, .device = d}));
    }
    // A cumulative average needs the count on the host (a device read on CUDA, as in PyTorch).
    if (!options.momentum) factor = 1.0 / (double)num_batches_tracked.item<int64_t>();
  }
  return factor;
}

Tensor BatchNormImplBase::forward(const Tensor& input) { return run(input, false); }

Tensor BatchNormImplBase::forward_relu(const Tensor& input) { return run(input, true); }

Tensor BatchNormImplBase::run(const Tensor& input, bool relu) {
  check_input_dim(input);
  double factor = next_momentum_factor();
  bool use_batch_stats = training_ || !options.track_running_stats;
  if (use_batch_stats && sync && sync->world_size() > 1) {
    Tensor y = functional::sync_batch_norm(input, running_mean, running_var, weight, bias, factor,
                                           options.eps, *sync);
    return relu ? y.relu() : y;
  }
  auto bn = relu ? &functional::batch_norm_relu : &functional::batch_norm;
  return bn(input, use_batch_stats && !training_ ? Tensor() : running_mean,
            use_batch_stats && !training_ ? Tensor() : running_var, weight, bias, use_batch_stats,
            factor, options.eps);
}

std::string BatchNormImplBase::extra_repr() const {
  return std::to_string(num_features) + ", eps=" + std::to_string(options.eps) +
         ", momentum=" + (options.momentum ? std::to_string(*options.momentum) : "None") +
         ", affine=" + (options.affine ? "True" : "False") +
         ", track_running_stats=" + (options.track_running_stats ? "True" : "False");
}

}  // namespace weft::nn
