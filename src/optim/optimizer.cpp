// Optimizer base: parameter groups, zero_grad and the state_dict round trip.
#include "weft/optim/optimizer.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "weft/ops.h"

namespace weft::optim {

namespace {

// %.17g round-trips every double exactly, so a restored run continues bit-identically.
std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

double parse_double(const std::string& key, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  WEFT_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0,
             "optimizer load_state_dict: '", key, "' = '", s, "' is not a number");
  return v;
}

int64_t parse_int(const std::string& key, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  WEFT_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0,
             "optimizer load_state_dict: '", key, "' = '", s, "' is not an integer");
  return v;
}

bool parse_bool(const std::string& key, const std::string& s) {
  if (s == "true" || s == "1") return true;
  if (s == "false" || s == "0") return false;
  WEFT_ERROR("optimizer load_state_dict: '", key, "' = '", s, "' is not a boolean");
}

const std::string* find_scalar(const OptimizerState& st, const std::string& key) {
  auto it = st.scalars.find(key);
  return it == st.scalars.end() ? nullptr : &it->second;
}

const std::string& need_scalar(const OptimizerState& st, const std::string& key) {
  const std::string* s = find_scalar(st, key);
  WEFT_CHECK(s, "optimizer load_state_dict: missing '", key, "'");
  return *s;
}

void check_param(const Tensor& p, size_t g, size_t i) {
  WEFT_CHECK(p.defined(), "optimizer: parameter ", i, " of group ", g, " is undefined");
}

}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) {
  for (auto& g : groups) add_param_group(std::move(g));
}

void Optimizer::add_param_group(ParamGroup group) {
  for (size_t i = 0; i < group.params.size(); ++i) check_param(group.params[i], groups_.size(), i);
  // A parameter in two groups would be stepped twice per step(), as PyTorch refuses too.
  for (size_t i = 0; i < group.params.size(); ++i) {
    const Tensor& p = group.params[i];
    for (size_t j = 0; j < i; ++j)
      WEFT_CHECK(!p.is_same(group.params[j]), "optimizer: parameter ", i,
                 " appears twice in group ", groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g)
      for (const auto& q : groups_[g].params)
        WEFT_CHECK(!p.is_same(q), "optimizer: parameter ", i, " of group ", groups_.size(),
                   " is already in group ", g);
  }
  state_.resize(state_.size() + group.params.size());
  groups_.push_back(std::move(group));
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& g : groups_)
    for (auto& p : g.params) {
      Tensor& grad = p.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none)
        grad = Tensor();
      else
        grad.zero_();
    }
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState st;
  st.scalars["num_param_groups"] = std::to_string(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const auto& o = groups_[g].options;
    const std::string pre = "param_groups." + std::to_string(g) + ".";
    st.scalars[pre + "num_params"] = std::to_string(groups_[g].params.size());
    st.scalars[pre + "lr"] = fmt_double(o.lr);
    st.scalars[pre + "momentum"] = fmt_double(o.momentum);
    st.scalars[pre + "dampening"] = fmt_double(o.dampening);
    st.scalars[pre + "nesterov"] = o.nesterov ? "true" : "false";
    st.scalars[pre + "weight_decay"] = fmt_double(o.weight_decay);
    st.scalars[pre + "beta1"] = fmt_double(o.beta1);
    st.scalars[pre + "beta2"] = fmt_double(o.beta2);
    st.scalars[pre + "eps"] = fmt_double(o.eps);
    st.scalars[pre + "amsgrad"] = o.amsgrad ? "true" : "false";
  }
  for (size_t i = 0; i < state_.size(); ++i) {
    const ParamState& ps = state_[i];
    if (ps.step == 0 && ps.buffers.empty()) continue;
    const std::string pre = "state." + std::to_string(i) + ".";
    st.scalars[pre + "step"] = std::to_string(ps.step);
    // Copies, so that the snapshot does not change as training goes on.
    for (const auto& [name, buf] : ps.buffers) st.tensors.insert(pre + name, buf.clone());
  }
  return st;
}

void Optimizer::load_state_dict(const OptimizerState& st) {
  const std::string ng = need_scalar(st, "num_param_groups");
  WEFT_CHECK(parse_int("num_param_groups", ng) == (int64_t)groups_.size(),
             "optimizer load_state_dict: the state has ", ng,
             " parameter groups but this optimizer has ", groups_.size());
  std::vector<const Tensor*> params;
  std::vector<ParamGroupOptions> options(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string pre = "param_groups." + std::to_string(g) + ".";
    auto num = [&](const char* k) { return parse_double(pre + k, need_scalar(st, pre + k)); };
    auto flag = [&](const char* k) { return parse_bool(pre + k, need_scalar(st, pre + k)); };
    const int64_t n = parse_int(pre + "num_params", need_scalar(st, pre + "num_params"));
    WEFT_CHECK(n == (int64_t)groups_[g].params.size(), "optimizer load_state_dict: group ", g,
               " has ", n, " parameters in the state but ", groups_[g].params.size(),
               " in this optimizer");
    ParamGroupOptions& o = options[g];
    o.lr = num("lr");
    o.momentum = num("momentum");
    o.dampening = num("dampening");
    o.nesterov = flag("nesterov");
    o.weight_decay = num("weight_decay");
    o.beta1 = num("beta1");
    o.beta2 = num("beta2");
    o.eps = num("eps");
    o.amsgrad = flag("amsgrad");
    for (const auto& p : groups_[g].params) params.push_back(&p);
  }

  // Build the whole new state first so that a bad state leaves this optimizer unchanged.
  std::vector<ParamState> fresh(state_.size());
  for (const auto& [key, value] : st.scalars) {
    if (key.rfind("state.", 0) != 0) continue;
    const size_t dot = key.find('.', 6);
    WEFT_CHECK(dot != std::string::npos, "optimizer load_state_dict: malformed key '", key, "'");
    const int64_t i = parse_int(key, key.substr(6, dot - 6));
    WEFT_CHECK(i >= 0 && i < (int64_t)fresh.size(), "optimizer load_state_dict: '", key,
               "' names parameter ", i, " but this optimizer has ", fresh.size(), " parameters");
    const std::string name = key.substr(dot + 1);
    WEFT_CHECK(name == "step", "optimizer load_state_dict: unknown scalar '", key, "'");
    fresh[i].step = parse_int(key, value);
    WEFT_CHECK(fresh[i].step >= 0, "optimizer load_state_dict: '", key, "' is negative");
  }
  for (const auto& [key, t] : st.tensors) {
    WEFT_CHECK(key.rfind("state.", 0) == 0, "optimizer load_state_dict: unexpected tensor '", key,
               "'");
    const size_t dot = key.find('.', 6);
    WEFT_CHECK(dot != std::string::npos, "optimizer load_state_dict: malformed key '", key, "'");
    const int64_t i = parse_int(key, key.substr(6, dot - 6));
    WEFT_CHECK(i >= 0 && i < (int64_t)fresh.size(), "optimizer load_state_dict: '", key,
               "' names parameter ", i, " but this optimizer has ", fresh.size(), " parameters");
    const Tensor& p = *params[i];
    WEFT_CHECK(t.defined() && t.sizes() == p.sizes(), "optimizer load_state_dict: '", key,
               "' has shape ", t.defined() ? shape_str(t.sizes()) : "undefined", " but parameter ",
               i, " has shape ", shape_str(p.sizes()));
    WEFT_CHECK(t.dtype() == p.dtype(), "optimizer load_state_dict: '", key, "' is ", t.dtype(),
               " but parameter ", i, " is ", p.dtype());
    // Own, contiguous copies on the parameter's device, as the step's loops need.
    fresh[i].buffers.insert(key.substr(dot + 1), t.to(p.device()).contiguous().clone());
  }
  for (size_t g = 0; g < groups_.size(); ++g) groups_[g].options = options[g];
  state_ = std::move(fresh);
}

void Optimizer::check_step_tensors(const Tensor& p, const Tensor& grad, size_t i,
                                   const char* optimizer) {
  WEFT_CHECK(p.dtype() == kFloat32 && grad.dtype() == kFloat32, optimizer, ": parameter ", i,
             " is ", p.dtype(), " with a ", grad.dtype(), " gradient; only float32 is supported");
  WEFT_CHECK(p.device() == grad.device(), optimizer, ": parameter ", i, " is on ", p.device(),
             " with its gradient on ", grad.device(), "; they must be on the same device");
  WEFT_CHECK(p.is_contiguous() && grad.is_contiguous(), optimizer, ": parameter ", i,
             " and its gradient must be contiguous");
  WEFT_CHECK(grad.sizes() == p.sizes(), optimizer, ": parameter ", i, " has shape ",
             shape_str(p.sizes()), " but its gradient has shape ", shape_str(grad.sizes()));
}

}  // namespace weft::optim
