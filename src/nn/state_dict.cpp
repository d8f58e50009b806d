// Partial loading (weft/nn/state_dict.h): one pass over the model's entries with the checkpoint
// indexed by name, so large state_dicts stay linear.
#include "weft/nn/state_dict.h"

#include <unordered_map>

namespace weft::nn {

std::string LeftOut::describe() const {
  if (reason == Reason::NotInModel) return key + ": not in the model";
  return key + ": shape " + shape_str(checkpoint_shape) + " in the checkpoint, " +
         shape_str(model_shape) + " in the model";
}

MatchResult filter_matching(const StateDict& pretrained, const StateDict& model_state) {
  std::unordered_map<std::string, const Tensor*> given;
  for (const auto& [k, t] : pretrained) given.emplace(k, &t);
  MatchResult r;
  std::unordered_map<std::string, bool> model_has;  // name -> its shape matches the checkpoint's
  for (const auto& [k, t] : model_state) {
    auto it = given.find(k);
    if (it == given.end()) {
      r.not_provided.push_back(k);
      continue;
    }
    const bool same = it->second->sizes() == t.sizes();
    model_has.emplace(k, same);
    if (same) r.kept.insert(k, *it->second);
  }
  for (const auto& [k, t] : pretrained) {
    auto it = model_has.find(k);
    if (it == model_has.end()) {
      r.left_out.push_back({k, LeftOut::Reason::NotInModel, t.sizes(), {}});
    } else if (!it->second) {
      r.left_out.push_back(
          {k, LeftOut::Reason::ShapeMismatch, t.sizes(), model_state.at(k).sizes()});
    }
  }
  return r;
}

MatchResult load_matching(Module& module, const StateDict& pretrained) {
  MatchResult r = filter_matching(pretrained, module.state_dict());
  module.load_state_dict(r.kept, /*strict=*/false);
  return r;
}

}  // namespace weft::nn
