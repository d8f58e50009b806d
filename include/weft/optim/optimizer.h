// Optimizer base: parameter groups with their own hyperparameters, zero_grad(set_to_none),
// and a state_dict (per-parameter state tensors plus scalar hyperparameters as strings) that
// saves into a safetensors checkpoint and restores a run exactly.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "weft/ordered_dict.h"
#include "weft/tensor.h"

namespace weft::optim {

// What libtorch's `SGD opt(params, 0.01)` passes: a plain number (not bool, and not a braced list,
// so that `Adam(params, {})` still means the default options).
template <typename T>
concept LearningRate = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

// Hyperparameters common to the optimizers in weft; each optimizer reads the ones it uses.
struct ParamGroupOptions {
  double lr = 1e-3;
  double momentum = 0.0;                          // SGD
  double dampening = 0.0;                         // SGD
  bool nesterov = false;                          // SGD
  double weight_decay = 0.0;                      // SGD, Adam (L2), AdamW (decoupled)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam/AdamW
  bool amsgrad = false;                           // Adam/AdamW
};

struct ParamGroup {
  std::vector<Tensor> params;
  ParamGroupOptions options;
};

// Serializable optimizer state: tensors named "state.<param index>.<name>" and scalars
// ("param_groups.<g>.lr", "state.<i>.step", ...) as strings, which fit a safetensors file's
// tensors and metadata.
struct OptimizerState {
  OrderedDict<Tensor> tensors;
  std::map<std::string, std::string> scalars;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad(bool set_to_none = true);
  std::vector<ParamGroup>& param_groups() { return groups_; }
  void add_param_group(ParamGroup group);
  virtual OptimizerState state_dict() const;
  virtual void load_state_dict(const OptimizerState& state);

 protected:
  // Per-parameter state by name ("momentum_buffer", "exp_avg", ...), in parameter order.
  struct ParamState {
    int64_t step = 0;
    OrderedDict<Tensor> buffers;
  };
  ParamState& state_of(size_t flat_index) { return state_[flat_index]; }
  // The step loops read float data directly: checks that the parameter and its gradient are
  // contiguous float32 CPU tensors of the same shape, naming the parameter otherwise.
  static void check_step_tensors(const Tensor& param, const Tensor& grad, size_t flat_index,
                                 const char* optimizer);
  std::vector<ParamGroup> groups_;
  std::vector<ParamState> state_;  // indexed by flat parameter index across groups
};

}  // namespace weft::optim
