// torch.nn.functional for weft: stateless, differentiable forms of every layer and loss.
// Shapes follow PyTorch (NCHW for images); each function checks its arguments and names
// the offending shapes in its error.
#pragma once

#include <array>
#include <optional>

#include "weft/generator.h"
#include "weft/tensor.h"

namespace weft::nn {
class BatchNormSync;
}

namespace weft::nn::functional {

enum class Reduction { None, Mean, Sum };

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor());
Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor(),
              std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0},
              std::array<int64_t, 2> dilation = {1, 1}, int64_t groups = 1);
// Updates running_mean/var in place when training and they are defined; momentum is the
// weight of the new batch statistic (PyTorch's exponential_average_factor).
Tensor batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps);
// relu(batch_norm(...)), the same values; in training mode on the CPU in one fused pass and one
// autograd node, BatchNormReluBackward (Note [BatchNorm-ReLU fusion]).
Tensor batch_norm_relu(const Tensor& input, Tensor running_mean, Tensor running_var,
                       const Tensor& weight, const Tensor& bias, bool training, double momentum,
                       double eps);
// relu(batch_norm(conv2d(input, conv_weight, conv_bias, ...), running_mean, ..., training =
// true, momentum, eps)), the same values; on the CPU, for float32, in one op and one autograd
// node, ConvBatchNormReluBackward, where oneDNN keeps the convolution's output in a blocked
// layout (Note [Conv-BatchNorm-ReLU fusion]), else the three composed. Sequential runs a
// Conv2d, BatchNorm2d and ReLU in training mode through it.
Tensor conv2d_batch_norm_relu(const Tensor& input, const Tensor& conv_weight,
                              const Tensor& conv_bias, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                              int64_t groups, Tensor running_mean, Tensor running_var,
                              const Tensor& weight, const Tensor& bias, double momentum,
                              double eps);
// Training-mode batch norm whose statistics and backward reductions are combined across
// replicas through `sync` (SyncBatchNorm's kernel).
Tensor sync_batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var,
                       const Tensor& weight, const Tensor& bias, double momentum, double eps,
                       nn::BatchNormSync& sync);
Tensor max_pool2d(const Tensor& input, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding = {0, 0}, bool ceil_mode = false);
Tensor avg_pool2d(const Tensor& input, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding = {0, 0}, bool ceil_mode = false,
                  bool count_include_pad = true);
Tensor adaptive_avg_pool2d(const Tensor& input, std::array<int64_t, 2> output_size);
Tensor dropout(const Tensor& input, double p, bool training, Generator* gen = nullptr);
inline Tensor relu(const Tensor& x) { return x.relu(); }
inline Tensor sigmoid(const Tensor& x) { return x.sigmoid(); }
inline Tensor tanh(const Tensor& x) { return x.tanh(); }
inline Tensor softmax(const Tensor& x, int64_t dim) { return x.softmax(dim); }
inline Tensor log_softmax(const Tensor& x, int64_t dim) { return x.log_softmax(dim); }

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction r = Reduction::Mean);
Tensor binary_cross_entropy(const Tensor& input, const Tensor& target,
                            Reduction r = Reduction::Mean);
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        Reduction r = Reduction::Mean,
                                        const Tensor& pos_weight = Tensor());
// input [N, C] logits (or [C]), target int64 class indices [N] (or []).
Tensor cross_entropy(const Tensor& input, const Tensor& target, Reduction r = Reduction::Mean,
                     int64_t ignore_index = -100);
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction r = Reduction::Mean,
                int64_t ignore_index = -100);

}  // namespace weft::nn::functional
