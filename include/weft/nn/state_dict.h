// Partial loading: PyTorch's recipe for a pretrained checkpoint whose layers differ from the
// model's in places, `{k: v for k, v in pretrained.items() if k in model_dict and v.shape ==
// model_dict[k].shape}`. filter_matching keeps the entries whose names and shapes match, in the
// module's order (weft::load returns a file's entries in the file's order), and names every entry
// it left out with the reason; load_matching also loads them.
#pragma once

#include <string>
#include <vector>

#include "weft/nn/module.h"

namespace weft::nn {

// A checkpoint entry filter_matching did not keep, and why.
struct LeftOut {
  enum class Reason { NotInModel, ShapeMismatch };
  std::string key;
  Reason reason;
  Shape checkpoint_shape;
  Shape model_shape;  // empty for NotInModel
  // "fc.weight: not in the model" / "fc.weight: shape (10, 4) in the checkpoint, (2, 4) in the
  // model".
  std::string describe() const;
};

struct MatchResult {
  StateDict kept;                         // the matching entries, in the model's order
  std::vector<LeftOut> left_out;          // the others, in the checkpoint's order
  std::vector<std::string> not_provided;  // model entries the checkpoint lacks (left as they are)
};

// The entries of `pretrained` whose name is in `model_state` with the same shape. Then, as in
// PyTorch, `model_state.update(r.kept); module->load_state_dict(model_state);` or load_matching.
MatchResult filter_matching(const StateDict& pretrained, const StateDict& model_state);

// filter_matching(pretrained, module.state_dict()), its kept entries loaded into `module`
// (converted to each parameter's device and dtype); the rest of the module is left as it was.
MatchResult load_matching(Module& module, const StateDict& pretrained);

}  // namespace weft::nn
