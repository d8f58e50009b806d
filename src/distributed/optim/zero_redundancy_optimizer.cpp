// ZeroRedundancyOptimizer (weft/distributed/optim/zero_redundancy_optimizer.h).
#include "weft/distributed/optim/zero_redundancy_optimizer.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "distributed/optim/zero_grad_partition.h"
#include "weft/autograd.h"
#include "weft/distributed/coalesced.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"
#include "weft/optim/adam.h"
#include "weft/optim/sgd.h"

namespace weft::dist {

namespace {

std::vector<optim::ParamGroup> one_group(std::vector<Tensor> params, optim::ParamGroupOptions o) {
  return {optim::ParamGroup{std::move(params), o}};
}

// "state.<i>." followed by rest (built by appending: GCC 12 warns falsely on a + chain).
std::string state_key(size_t i, const std::string& rest = "") {
  std::string k = "state.";
  k.append(std::to_string(i)).append(".").append(rest);
  return k;
}

// "state.<i>.<rest>" -> (i, rest); false for other keys.
bool split_state_key(const std::string& key, size_t* index, std::string* rest) {
  if (key.rfind("state.", 0) != 0) return false;
  const size_t dot = key.find('.', 6);
  if (dot == std::string::npos) return false;
  *index = std::stoul(key.substr(6, dot - 6));
  *rest = key.substr(dot + 1);
  return true;
}

// The text consolidate_state_dict() sends: scalars as they are, tensors as zeros of the named
// dtype and shape (their values follow in a broadcast).
optim::OptimizerState parse_state_text(const std::string& text) {
  optim::OptimizerState st;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    std::vector<std::string> f;
    for (size_t a = pos; a <= end;) {
      const size_t b = std::min(text.find('\t', a), end);
      f.push_back(text.substr(a, b - a));
      a = b + 1;
    }
    pos = end + 1;
    if (f[0] == "S" && f.size() == 3) {
      st.scalars[f[1]] = f[2];
    } else {
      WEFT_CHECK(f[0] == "T" && f.size() >= 3, "consolidate_state_dict: malformed state line");
      Shape shape;
      for (size_t i = 3; i < f.size(); ++i) shape.push_back(std::stoll(f[i]));
      st.tensors.insert(f[1], zeros(shape, {.dtype = static_cast<DType>(std::stoi(f[2]))}));
    }
  }
  return st;
}

// reduce_scatter_grads steps pieces of parameters: only an optimizer whose update of each element
// reads that element alone (of the parameter, its gradient and its state) gives the same result.
void check_elementwise(const OptimizerFactory& make, const std::vector<optim::ParamGroup>& groups) {
  std::unique_ptr<optim::Optimizer> probe = make(groups);
  WEFT_CHECK(probe, "ZeroRedundancyOptimizer: the optimizer factory returned nothing");
  WEFT_CHECK(dynamic_cast<optim::SGD*>(probe.get()) || dynamic_cast<optim::Adam*>(probe.get()),
             "ZeroRedundancyOptimizer: reduce_scatter_grads steps slices of parameters, which only "
             "elementwise optimizers allow (SGD, Adam, AdamW); the factory made another "
             "optimizer");
}

}  // namespace

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups,
                                                 OptimizerFactory make,
                                                 std::shared_ptr<ProcessGroup> group,
                                                 ZeroOptions zero)
    : Optimizer(std::move(groups)),
      group_(group ? std::move(group) : default_group()),
      zero_(zero) {
  WEFT_CHECK(make, "ZeroRedundancyOptimizer: no optimizer factory given");
  WEFT_CHECK(zero.allgather_chunk > 0, "ZeroRedundancyOptimizer: allgather_chunk is ",
             zero.allgather_chunk, "; it must be positive");
  if (zero_.reduce_scatter_grads) {  // partitioned at the first step, by DDP's buckets
    check_elementwise(make, groups_);
    make_ = std::move(make);
    return;
  }
  partition(make);
}

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<Tensor> params, OptimizerFactory make,
                                                 optim::ParamGroupOptions options,
                                                 std::shared_ptr<ProcessGroup> group,
                                                 ZeroOptions zero)
    : ZeroRedundancyOptimizer(one_group(std::move(params), options), std::move(make),
                              std::move(group), zero) {}

// As PyTorch's _partition_parameters: within each group, the largest parameters first, each to
// the rank holding the fewest elements so far (ties: the lowest rank). Deterministic, so every
// rank computes every rank's share.
void ZeroRedundancyOptimizer::partition(const OptimizerFactory& make) {
  const int world = group_->size();
  std::vector<int64_t> load(world, 0);
  by_rank_.assign(world, {});
  std::vector<optim::ParamGroup> mine;
  size_t base = 0;
  for (const auto& g : groups_) {
    std::vector<size_t> order(g.params.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return g.params[a].numel() > g.params[b].numel(); });
    std::vector<int> owner(g.params.size());
    for (size_t i : order) {
      const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
      owner[i] = r;
      load[r] += g.params[i].numel();
    }
    optim::ParamGroup local{{}, g.options};
    for (size_t i = 0; i < g.params.size(); ++i) {
      owner_.push_back(owner[i]);
      by_rank_[owner[i]].push_back(base + i);
      if (owner[i] == group_->rank()) local.params.push_back(g.params[i]);
    }
    mine.push_back(std::move(local));
    base += g.params.size();
  }
  local_ = make(std::move(mine));
  WEFT_CHECK(local_, "ZeroRedundancyOptimizer: the optimizer factory returned nothing");
}

void ZeroRedundancyOptimizer::copy_hyperparameters() {
  auto& local_groups = local_->param_groups();
  WEFT_CHECK(local_groups.size() == groups_.size(),
             "ZeroRedundancyOptimizer: param groups added after construction are not supported");
  for (size_t g = 0; g < groups_.size(); ++g) local_groups[g].options = groups_[g].options;
}

void ZeroRedundancyOptimizer::step() {
  if (zero_.reduce_scatter_grads) return step_slices();
  copy_hyperparameters();
  local_->step();
  whole_.reset();
  sync_parameters();
}

int ZeroRedundancyOptimizer::rank_of(size_t flat_index) const {
  WEFT_CHECK(!zero_.reduce_scatter_grads,
             "ZeroRedundancyOptimizer::rank_of: under reduce_scatter_grads ranks step slices of "
             "parameters, not whole ones");
  WEFT_CHECK(flat_index < owner_.size(), "ZeroRedundancyOptimizer::rank_of: parameter ", flat_index,
             " of ", owner_.size());
  return owner_[flat_index];
}

optim::Optimizer& ZeroRedundancyOptimizer::local_optimizer() {
  WEFT_CHECK(local_,
             "ZeroRedundancyOptimizer: under reduce_scatter_grads the local optimizer is "
             "made at the first step");
  return *local_;
}

const Tensor& ZeroRedundancyOptimizer::flat_param(size_t flat_index) const {
  for (const auto& g : groups_) {
    if (flat_index < g.params.size()) return g.params[flat_index];
    flat_index -= g.params.size();
  }
  WEFT_ERROR("ZeroRedundancyOptimizer: no parameter ", flat_index);
}

// Note [ZeRO-2 gradient partition]: DDP's backward left this rank's reduced slices in the
// partition; the pieces take them as .grad, step, and the updated slices are all-gathered.
void ZeroRedundancyOptimizer::step_slices() {
  WEFT_CHECK(grads_,
             "ZeroRedundancyOptimizer: reduce_scatter_grads needs attach(ddp->reducer()) "
             "on every rank before the first backward; step() was called unattached");
  grads_->check_reduced();
  ensure_local();
  copy_hyperparameters();
  grads_->take_grads();
  local_->step();
  grads_->release_grads();
  whole_.reset();
  grads_->sync_parameters(*group_);
}

void ZeroRedundancyOptimizer::ensure_local() {
  if (local_) return;
  if (!grads_->built()) grads_->build();
  std::vector<size_t> group_of;
  for (size_t g = 0; g < groups_.size(); ++g)
    group_of.insert(group_of.end(), groups_[g].params.size(), g);
  std::vector<optim::ParamGroup> mine;
  for (const auto& g : groups_) mine.push_back(optim::ParamGroup{{}, g.options});
  for (size_t k = 0; k < grads_->mine().size(); ++k)
    mine[group_of[grads_->mine()[k].flat]].params.push_back(grads_->piece_tensors()[k]);
  local_ = make_(std::move(mine));
  WEFT_CHECK(local_, "ZeroRedundancyOptimizer: the optimizer factory returned nothing");
  if (pending_) {
    local_->load_state_dict(local_state_from(*pending_));
    pending_.reset();
  }
}

void ZeroRedundancyOptimizer::attach(Reducer& reducer) {
  WEFT_CHECK(zero_.reduce_scatter_grads,
             "ZeroRedundancyOptimizer::attach: only with ZeroOptions::reduce_scatter_grads "
             "(ZeRO-2); without it the optimizer steps whole parameters after DDP's all-reduce "
             "and needs no attach");
  WEFT_CHECK(!grads_, "ZeroRedundancyOptimizer::attach: already attached to a DDP model");
  const ProcessGroup& pg = reducer.process_group();
  WEFT_CHECK(pg.size() == group_->size() && pg.rank() == group_->rank(),
             "ZeroRedundancyOptimizer::attach: DDP's group is rank ", pg.rank(), " of ", pg.size(),
             " but the optimizer's is rank ", group_->rank(), " of ", group_->size());
  WEFT_CHECK(!reducer.options().find_unused_parameters && !reducer.options().static_graph,
             "ZeroRedundancyOptimizer::attach: reduce_scatter_grads does not support DDP's "
             "find_unused_parameters or static_graph (a parameter no rank used would be stepped "
             "with a zero gradient)");
  std::vector<Tensor> flat;
  std::vector<size_t> group_of;
  std::unordered_map<const TensorImpl*, size_t> where;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const auto& p : groups_[g].params) {
      where[p.impl()] = flat.size();
      flat.push_back(p);
      group_of.push_back(g);
    }
  const auto& params = reducer.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    WEFT_CHECK(where.count(params[i].impl()), "ZeroRedundancyOptimizer::attach: DDP's parameter '",
               reducer.parameter_names()[i],
               "' is not among the optimizer's; under reduce_scatter_grads it steps exactly "
               "DDP's parameters");
  WEFT_CHECK(params.size() == flat.size(), "ZeroRedundancyOptimizer::attach: the optimizer has ",
             flat.size(), " parameters but DDP reduces ", params.size(),
             "; under reduce_scatter_grads it steps exactly DDP's parameters");
  grads_ = std::make_shared<detail::GradPartition>(reducer, std::move(flat), std::move(group_of));
  reducer.set_comm_hook(detail::GradPartition::hook(grads_), /*hook_owns_grads=*/true);
}

void ZeroRedundancyOptimizer::sync_parameters() {
  if (group_->size() == 1) return;
  NoGradGuard ng;
  std::vector<const Tensor*> flat;
  for (const auto& g : groups_)
    for (const auto& p : g.params) flat.push_back(&p);
  if (zero_.parameter_sync == ZeroOptions::ParameterSync::AllGather && allgather_parameters(flat))
    return;
  broadcast_parameters(flat);
}

// Every rank's share from that rank: one coalesced broadcast per rank that owns anything.
void ZeroRedundancyOptimizer::broadcast_parameters(const std::vector<const Tensor*>& flat) {
  for (int r = 0; r < group_->size(); ++r) {
    std::vector<Tensor> share;
    for (size_t i : by_rank_[r]) share.push_back(*flat[i]);
    if (!share.empty()) broadcast_coalesced(*group_, share, r);
  }
}

namespace {

// Copies elements [from, from + n) of the concatenation of `share`'s parameters (flattened) to
// or from buf[0, n).
void copy_range(const std::vector<const Tensor*>& share, int64_t from, int64_t n, Tensor& buf,
                bool pack) {
  int64_t at = 0;  // where the current parameter starts in the concatenation
  for (const Tensor* p : share) {
    const int64_t len = p->numel(), lo = std::max(from, at), hi = std::min(from + n, at + len);
    if (lo < hi) {
      Tensor flat = p->view({len}).narrow(0, lo - at, hi - lo);  // shares the parameter's storage
      Tensor piece = buf.narrow(0, lo - from, hi - lo);
      if (pack)
        piece.copy_(flat);
      else
        flat.copy_(piece);
    }
    at += len;
    if (at >= from + n) break;
  }
}

}  // namespace

// Each rank's share is one flat sequence (its parameters concatenated), padded to the longest
// share. Chunk by chunk, each rank packs its piece, one all-gather brings every rank's, and the
// pieces are copied into the parameters they belong to (ZeroOptions::allgather_chunk).
bool ZeroRedundancyOptimizer::allgather_parameters(const std::vector<const Tensor*>& flat) {
  const int64_t kChunk = zero_.allgather_chunk;
  if (flat.empty()) return true;
  for (const Tensor* p : flat)
    if (p->dtype() != flat[0]->dtype() || p->device() != flat[0]->device() || !p->is_contiguous())
      return false;
  const int world = group_->size(), me = group_->rank();
  std::vector<std::vector<const Tensor*>> shares(world);
  int64_t longest = 0;
  for (int r = 0; r < world; ++r) {
    int64_t n = 0;
    for (size_t i : by_rank_[r]) {
      shares[r].push_back(flat[i]);
      n += flat[i]->numel();
    }
    longest = std::max(longest, n);
  }
  const TensorOptions o{.dtype = flat[0]->dtype(), .device = flat[0]->device()};
  for (int64_t from = 0; from < longest; from += kChunk) {
    const int64_t n = std::min(kChunk, longest - from);
    Tensor mine = empty({n}, o);  // past the end of this rank's share: padding, never read
    copy_range(shares[me], from, n, mine, true);
    std::vector<Tensor> all;
    for (int r = 0; r < world; ++r) all.push_back(empty({n}, o));
    group_->allgather(all, mine)->wait();
    for (int r = 0; r < world; ++r)
      if (r != me) copy_range(shares[r], from, n, all[r], false);
  }
  return true;
}

std::vector<detail::Piece> ZeroRedundancyOptimizer::local_pieces(int r) const {
  if (zero_.reduce_scatter_grads)
    return grads_ && grads_->built() ? grads_->pieces_of(r) : std::vector<detail::Piece>{};
  std::vector<detail::Piece> out;
  for (size_t i : by_rank_[r]) out.push_back(detail::Piece{i, 0, -1, 0, 0});
  return out;
}

// A piece's state goes into its part of the parameter's state (made as zeros by its first
// piece); a whole parameter's state is taken as it is.
void ZeroRedundancyOptimizer::merge_local(optim::OptimizerState& whole,
                                          const optim::OptimizerState& local, int r) const {
  const std::vector<detail::Piece> pieces = local_pieces(r);
  size_t i = 0;
  std::string rest;
  for (const auto& [key, value] : local.scalars)
    if (split_state_key(key, &i, &rest)) whole.scalars[state_key(pieces.at(i).flat, rest)] = value;
  NoGradGuard ng;
  for (const auto& [key, t] : local.tensors) {
    if (!split_state_key(key, &i, &rest)) continue;
    const detail::Piece& pc = pieces.at(i);
    const std::string k = state_key(pc.flat, rest);
    if (pc.numel < 0) {
      whole.tensors.insert_or_assign(k, t);
      continue;
    }
    Tensor* w = whole.tensors.find(k);
    if (!w)
      w = &whole.tensors.insert(
          k, zeros(flat_param(pc.flat).sizes(), {.dtype = t.dtype(), .device = t.device()}));
    w->view({w->numel()}).narrow(0, pc.offset, pc.numel).copy_(t.reshape({-1}));
  }
}

// Each rank in turn sends its local state: the scalars and the tensors' names and shapes as
// text, then the tensors themselves in one coalesced broadcast (all ranks take part, only `to`
// keeps the result).
void ZeroRedundancyOptimizer::consolidate_state_dict(int to) {
  WEFT_CHECK(to >= 0 && to < group_->size(), "consolidate_state_dict: rank ", to,
             " is not in the group of size ", group_->size());
  optim::OptimizerState whole = Optimizer::state_dict();  // the groups' hyperparameters
  for (int r = 0; r < group_->size(); ++r) {
    optim::OptimizerState local;
    std::string text;
    if (r == group_->rank()) {
      if (local_) local = local_->state_dict();  // ZeRO-2 before its first step: none yet
      for (const auto& [k, v] : local.scalars)
        text.append("S\t").append(k).append("\t").append(v).append("\n");
      for (const auto& [k, t] : local.tensors) {
        WEFT_CHECK(t.dtype() == kFloat32 || t.dtype() == kInt64, "consolidate_state_dict: '", k,
                   "' is ", t.dtype(), "; only float32 and int64 state is supported");
        text.append("T\t").append(k).append("\t").append(
            std::to_string(static_cast<int>(t.dtype())));
        for (int64_t d : t.sizes()) text.append("\t").append(std::to_string(d));
        text.append("\n");
      }
    }
    text = broadcast_string(*group_, text, r);
    if (r != group_->rank()) local = parse_state_text(text);
    std::vector<Tensor> tensors;
    for (auto& [k, t] : local.tensors) tensors.push_back(t.contiguous());
    if (!tensors.empty()) broadcast_coalesced(*group_, tensors, r);
    if (group_->rank() != to) continue;
    size_t n = 0;
    for (auto& [k, t] : local.tensors) t = tensors[n++];
    merge_local(whole, local, r);
  }
  if (group_->rank() == to) whole_ = std::move(whole);
}

optim::OptimizerState ZeroRedundancyOptimizer::local_state_dict() const {
  WEFT_CHECK(!zero_.reduce_scatter_grads,
             "ZeroRedundancyOptimizer::local_state_dict: under reduce_scatter_grads a rank holds "
             "the state of slices of parameters, which has no unsharded keys; use "
             "consolidate_state_dict(to) and state_dict()");
  optim::OptimizerState st = Optimizer::state_dict();  // the groups' hyperparameters
  merge_local(st, local_->state_dict(), group_->rank());
  return st;
}

optim::OptimizerState ZeroRedundancyOptimizer::state_dict() const {
  WEFT_CHECK(whole_, "ZeroRedundancyOptimizer::state_dict: rank ", group_->rank(),
             " holds no consolidated state; call consolidate_state_dict(to) on every rank first "
             "(after the last step) and state_dict() on rank `to`");
  return *whole_;
}

void ZeroRedundancyOptimizer::load_state_dict(const optim::OptimizerState& state) {
  Optimizer::load_state_dict(state);  // validates the whole state, takes the hyperparameters
  state_.assign(state_.size(), {});   // the base keeps no state of its own
  whole_.reset();
  if (!local_) {  // ZeRO-2 before its first step: its pieces are not known yet
    pending_ = state;
    return;
  }
  local_->load_state_dict(local_state_from(state));
}

// The local optimizer's hyperparameters and the state of its parameters (whole) or pieces (the
// piece's elements of the parameter's state, flattened), renumbered in local order.
optim::OptimizerState ZeroRedundancyOptimizer::local_state_from(
    const optim::OptimizerState& state) const {
  optim::OptimizerState local = local_->state_dict();
  local.tensors = OrderedDict<Tensor>();
  for (auto it = local.scalars.begin(); it != local.scalars.end();)
    it = it->first.rfind("state.", 0) == 0 ? local.scalars.erase(it) : std::next(it);
  const std::vector<detail::Piece> mine = local_pieces(group_->rank());
  NoGradGuard ng;
  for (size_t li = 0; li < mine.size(); ++li) {
    const std::string from = state_key(mine[li].flat), to = state_key(li);
    for (const auto& [k, v] : state.scalars)
      if (k.rfind(from, 0) == 0) local.scalars[to + k.substr(from.size())] = v;
    for (const auto& [k, t] : state.tensors)
      if (k.rfind(from, 0) == 0)
        local.tensors.insert(
            to + k.substr(from.size()),
            mine[li].numel < 0 ? t : t.reshape({-1}).narrow(0, mine[li].offset, mine[li].numel));
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string pre = "param_groups." + std::to_string(g) + ".";
    for (const auto& [k, v] : state.scalars)
      if (k.rfind(pre, 0) == 0 && k != pre + "num_params") local.scalars[k] = v;
  }
  return local;
}

}  // namespace weft::dist
