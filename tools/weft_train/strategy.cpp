#include "strategy.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "training.h"
#include "weft/distributed/checkpoint.h"
#include "weft/distributed/coalesced.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/fsdp/fully_shard.h"
#include "weft/distributed/optim/zero_redundancy_optimizer.h"

namespace weft_train {

using namespace weft;
namespace fs = std::filesystem;
namespace dcp = weft::dist::checkpoint;

namespace {

// "<len> <key><len> <value>..." : any bytes in keys and values (the metrics history has newlines).
std::string encode(const std::map<std::string, std::string>& m) {
  std::string out;
  for (const auto& [k, v] : m)
    out.append(std::to_string(k.size()))
        .append(" ")
        .append(k)
        .append(std::to_string(v.size()))
        .append(" ")
        .append(v);
  return out;
}

std::map<std::string, std::string> decode(const std::string& s) {
  std::map<std::string, std::string> m;
  size_t pos = 0;
  auto next = [&]() {
    const size_t sp = s.find(' ', pos);
    WEFT_CHECK(sp != std::string::npos, "malformed metadata in a sharded checkpoint");
    const size_t n = std::stoul(s.substr(pos, sp - pos));
    WEFT_CHECK(sp + 1 + n <= s.size(), "truncated metadata in a sharded checkpoint");
    pos = sp + 1 + n;
    return s.substr(sp + 1, n);
  };
  while (pos < s.size()) {
    std::string k = next();
    m[k] = next();
  }
  return m;
}

// Bytes as an int64 tensor (the checkpoint holds tensors only): the length, then the bytes.
Tensor text_tensor(const std::string& s) {
  std::vector<int64_t> words(1 + (s.size() + 7) / 8, 0);
  words[0] = (int64_t)s.size();
  if (!s.empty()) std::memcpy(&words[1], s.data(), s.size());
  return tensor(words, {(int64_t)words.size()});
}

std::string tensor_text(const Tensor& t) {
  const std::vector<int64_t> w = t.to_vector_int64();
  WEFT_CHECK(!w.empty() && w[0] >= 0 && (size_t)w[0] <= (w.size() - 1) * 8,
             "malformed metadata tensor in a sharded checkpoint");
  return std::string(reinterpret_cast<const char*>(&w[1]), (size_t)w[0]);
}

dist::ZeroRedundancyOptimizer& as_zero(optim::Optimizer& opt) {
  auto* z = dynamic_cast<dist::ZeroRedundancyOptimizer*>(&opt);
  WEFT_CHECK(z, "--strategy zero: the optimizer is not a ZeroRedundancyOptimizer");
  return *z;
}

void check_finite(const std::string& key, const Tensor& t) {
  if (!is_floating_point(t.dtype())) return;
  const std::vector<float> v = t.to(kFloat32).to_vector_float();
  const auto bad = std::find_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
  WEFT_CHECK(bad == v.end(), "tensor '", key, "' holds NaN or Inf (element ", bad - v.begin(),
             " is ", *bad, "): training had diverged when it was saved");
}

// The epochs of c.checkpoint_dir's epoch-NNNN.dcp directories that have an index, newest first.
std::vector<int> sharded_epochs(const std::string& dir) {
  std::vector<int> epochs;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() != 14 || n.rfind("epoch-", 0) != 0 || n.substr(10) != ".dcp") continue;
    if (!std::all_of(n.begin() + 6, n.begin() + 10, [](char ch) { return ch >= '0' && ch <= '9'; }))
      continue;
    if (fs::exists(e.path() / "index")) epochs.push_back(std::atoi(n.substr(6, 4).c_str()));
  }
  std::sort(epochs.rbegin(), epochs.rend());
  return epochs;
}

// What every sharded checkpoint's "meta" entry says (epoch, model, optimizer and scaler scalars,
// metrics rows), checked against `epoch` and --model.
Checkpoint read_meta(const Config& c, int epoch, const std::string& dir, const Tensor& meta) {
  Checkpoint ck;
  ck.meta = decode(tensor_text(meta));
  const auto e = ck.meta.find("epoch"), m = ck.meta.find("model");
  WEFT_CHECK(e != ck.meta.end() && m != ck.meta.end(), "'", dir,
             "' has no 'epoch' or 'model' in its metadata: not a weft-train checkpoint");
  ck.epoch = std::atoi(e->second.c_str());
  WEFT_CHECK(ck.epoch == epoch, "'", dir, "' says it is of epoch '", e->second,
             "' but should be epoch ", epoch, "'s");
  WEFT_CHECK(m->second == c.model, "checkpoint is of model '", m->second, "' but --model is '",
             c.model, "'");
  for (const auto& [k, v] : ck.meta) {
    if (k.rfind("optim.", 0) == 0) ck.optim.scalars[k.substr(6)] = v;
    if (k.rfind("scaler.", 0) == 0) ck.scaler[k.substr(7)] = v;
  }
  std::vector<std::string> rows;
  const std::string& h = ck.meta["metrics_history"];
  for (size_t s = 0, nl; (nl = h.find('\n', s)) != std::string::npos; s = nl + 1)
    rows.push_back(h.substr(s, nl - s));
  ck.metrics_rows = rows;
  return ck;
}

// The "meta" entry to load, sized from the checkpoint's index.
Tensor meta_box(const std::map<std::string, dcp::TensorInfo>& info, const std::string& dir) {
  auto it = info.find("meta");
  WEFT_CHECK(it != info.end(), "'", dir, "' has no 'meta' entry: not a weft-train checkpoint");
  return zeros(it->second.shape, {.dtype = kInt64});
}

// --strategy zero: this rank's share of epoch `epoch`'s checkpoint: the model, the metadata and
// the optimizer state of the parameters this rank steps. Throws saying why it is unusable.
Checkpoint load_zero_share(const Config& c, int epoch, const nn::Module& model,
                           dist::ZeroRedundancyOptimizer& zero) {
  const std::string dir = sharded_checkpoint_path(c.checkpoint_dir, epoch);
  const auto info = dcp::read_metadata(dir);
  std::vector<Tensor> params;
  for (auto& g : zero.param_groups())
    for (auto& p : g.params) params.push_back(p);
  dcp::StateDict sd;
  sd["meta"] = meta_box(info, dir);
  for (const auto& [k, t] : model.state_dict())
    sd["model." + k] = zeros(t.sizes(), {.dtype = t.dtype()});
  std::vector<std::pair<std::string, size_t>> mine;  // optimizer keys of this rank's parameters
  for (const auto& [key, ti] : info) {
    if (key.rfind("optim.state.", 0) != 0) continue;
    const size_t i = std::stoul(key.substr(12));
    WEFT_CHECK(i < params.size(), "'", dir, "' holds optimizer state of parameter ", i,
               " but the model has ", params.size(), " parameters");
    if (zero.rank_of(i) != zero.process_group().rank()) continue;
    sd[key] = zeros(ti.shape, {.dtype = ti.dtype});
    mine.emplace_back(key, i);
  }
  dcp::load(sd, dir);  // each file's checksums verified as it is read
  Checkpoint ck = read_meta(c, epoch, dir, std::get<Tensor>(sd["meta"]));
  for (const auto& [k, t] : model.state_dict()) {
    const Tensor& v = std::get<Tensor>(sd["model." + k]);
    check_finite("model." + k, v);
    ck.model.insert(k, v);
  }
  for (const auto& [key, i] : mine) {
    const Tensor& v = std::get<Tensor>(sd[key]);
    check_finite(key, v);
    ck.optim.tensors.insert(key.substr(6), v.view(params[i].sizes()));
  }
  return ck;
}

// An entry's tensor (a replicated tensor, or this rank's box of a shard).
Tensor& local(dcp::Entry& e) {
  if (auto* st = std::get_if<dcp::ShardedTensor>(&e)) return st->local;
  return std::get<Tensor>(e);
}

// --strategy fsdp: this rank's shards of epoch `epoch`'s checkpoint, read into fresh tensors and
// copied into the model's shards and buffers once all of it is read and finite; returns the
// metadata and the optimizer state of this rank's shards (state tensors of every shard that
// requires grad, named as the checkpoint names them). Throws saying why it is unusable.
Checkpoint load_fsdp_share(const Config& c, int epoch, nn::Module& model) {
  const std::string dir = sharded_checkpoint_path(c.checkpoint_dir, epoch);
  const auto info = dcp::read_metadata(dir);
  dcp::StateDict sd, live = dist::fsdp::sharded_state_dict(model);
  sd["meta"] = meta_box(info, dir);
  for (const auto& [k, e] : live) {
    dcp::Entry fresh = e;
    local(fresh) = zeros_like(local(fresh));
    sd["model." + k] = fresh;
  }
  std::set<std::string> names;  // "optim.<parameter key>.<state name>"
  for (const auto& [key, ti] : info)
    if (key.rfind("optim.", 0) == 0) names.insert(key.substr(key.rfind('.') + 1));
  optim::OptimizerState state;
  const std::vector<Tensor> shards = dist::fsdp::parameters(model);
  for (size_t i = 0; i < shards.size(); ++i)
    if (shards[i].requires_grad())
      for (const auto& n : names)
        state.tensors.insert("state." + std::to_string(i) + "." + n, zeros({shards[i].numel()}));
  for (const auto& [k, e] : dist::fsdp::sharded_optimizer_entries(model, state))
    sd["optim." + k] = e;
  dcp::load(sd, dir);  // each file's checksums verified as it is read
  Checkpoint ck = read_meta(c, epoch, dir, std::get<Tensor>(sd["meta"]));
  for (auto& [k, e] : sd)
    if (k != "meta") check_finite(k, local(e));
  NoGradGuard ng;
  for (auto& [k, e] : live) local(e).copy_(local(sd["model." + k]));
  for (const auto& [k, t] : state.tensors) ck.optim.tensors.insert(k, t);
  return ck;
}

// Saves `sd` with the metadata (meta: the optimizer's scalars already in) as epoch `epoch`'s
// checkpoint (atomically) and keeps the two newest.
void commit(const Config& c, int epoch, dcp::StateDict& sd, std::map<std::string, std::string> meta,
            const amp::GradScaler& scaler, const std::vector<std::string>& metrics_rows) {
  auto group = dist::default_group();
  for (const auto& [k, v] : scaler.state_dict()) meta["scaler." + k] = v;
  meta["epoch"] = std::to_string(epoch);
  meta["model"] = c.model;
  meta["seed"] = std::to_string(c.seed);
  meta["strategy"] = c.strategy;
  meta["world_size"] = std::to_string(group->size());
  std::string history;
  for (const auto& row : metrics_rows) history.append(row).append("\n");
  meta["metrics_history"] = history;
  sd["meta"] = text_tensor(encode(meta));
  dcp::save(sd, sharded_checkpoint_path(c.checkpoint_dir, epoch), group);  // atomic
  if (group->rank() != 0) return;
  for (int e = epoch - 2; e >= 1; --e) {
    std::error_code ec;
    if (fs::remove_all(sharded_checkpoint_path(c.checkpoint_dir, e), ec) == 0) break;
  }
}

// --strategy zero's entries: the model replicated, each optimizer state tensor in the file of the
// rank that steps its parameter; the scalars of every rank's share into `meta`.
dcp::StateDict zero_entries(const nn::Module& model, optim::Optimizer& opt,
                            std::map<std::string, std::string>& meta) {
  auto& zero = as_zero(opt);
  auto group = dist::default_group();
  const int rank = group->rank();
  const optim::OptimizerState mine = zero.local_state_dict();
  // Every rank's share described (state tensors' dtypes and sizes, and scalars), so that every
  // rank names every entry and rank 0's metadata holds every scalar.
  std::map<std::string, std::string> desc;
  for (const auto& [k, t] : mine.tensors)
    desc["T" + k] = std::to_string((int)t.dtype()) + " " + std::to_string(t.numel());
  for (const auto& [k, v] : mine.scalars) desc["S" + k] = v;
  const std::vector<std::string> all = dist::all_gather_strings(*group, encode(desc));
  dcp::StateDict sd;
  for (int r = 0; r < (int)all.size(); ++r)
    for (const auto& [k, v] : decode(all[r])) {
      if (k[0] == 'S') {
        meta["optim." + k.substr(1)] = v;
        continue;
      }
      const std::string key = k.substr(1);
      const int dtype = std::atoi(v.c_str());
      const int64_t numel = std::stoll(v.substr(v.find(' ') + 1));
      // Flat, so that a rank without this state saves an empty box of it.
      Tensor local = r == rank ? mine.tensors.at(key).reshape({-1})
                               : zeros({0}, {.dtype = static_cast<DType>(dtype)});
      sd["optim." + key] = dcp::ShardedTensor{local, {numel}, {0}};
    }
  for (const auto& [k, t] : model.state_dict()) sd["model." + k] = t;
  return sd;
}

// --strategy fsdp's entries: the model's shards and buffers (fsdp::sharded_state_dict) and the
// optimizer state of the shards (fsdp::sharded_optimizer_entries), every parameter's flattened
// so that they load at any world size; the optimizer's scalars (shard-indexed, the same at every
// world size) into `meta`.
dcp::StateDict fsdp_entries(nn::Module& model, optim::Optimizer& opt,
                            std::map<std::string, std::string>& meta, optim::OptimizerState& st) {
  st = opt.state_dict();
  dcp::StateDict sd;
  for (const auto& [k, e] : dist::fsdp::sharded_state_dict(model)) sd["model." + k] = e;
  for (const auto& [k, e] : dist::fsdp::sharded_optimizer_entries(model, st)) sd["optim." + k] = e;
  for (const auto& [k, v] : st.scalars) meta["optim." + k] = v;
  return sd;
}

// Forwards to the model after broadcasting its buffers from rank 0 (shard_model).
class BufferSync : public nn::Module {
 public:
  explicit BufferSync(std::shared_ptr<nn::Module> m) : Module("BufferSync"), model_(std::move(m)) {
    register_module("module", model_);
  }
  Tensor forward(const Tensor& x) override {
    auto group = dist::default_group();
    std::vector<Tensor> buffers;
    for (auto& b : model_->buffers())
      if (b.defined() && b.numel() > 0) buffers.push_back(b.detach());
    if (group->size() > 1 && !buffers.empty()) group->broadcast(buffers, 0)->wait();
    return (*model_)(x);
  }

 private:
  std::shared_ptr<nn::Module> model_;
};

}  // namespace

void init_single_process_group() {
  // Removed at exit; the store reads it for as long as the group lives.
  static struct File {
    std::string path =
        (fs::temp_directory_path() / ("weft-train-store-" + std::to_string(::getpid()))).string();
    ~File() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } file;
  dist::init_process_group(
      {.backend = "gloo", .init_method = "file://" + file.path, .world_size = 1, .rank = 0});
}

std::shared_ptr<nn::Module> shard_model(nn::Sequential& model) {
  for (const auto& child : model->children())
    if (!child->parameters().empty()) dist::fsdp::fully_shard(child);
  dist::fsdp::fully_shard(model.ptr());
  return std::make_shared<BufferSync>(model.ptr());
}

std::unique_ptr<optim::Optimizer> make_strategy_optimizer(const Config& c, nn::Module& model) {
  if (is_fsdp(c)) return make_optimizer(c, dist::fsdp::parameters(model));
  std::unique_ptr<optim::Optimizer> plain = make_optimizer(c, model);
  if (!is_zero(c)) return plain;
  // The plain optimizer's groups carry --optimizer's hyperparameters; each rank's share steps
  // with an optimizer of the same kind built on its part of them.
  const std::string kind = c.optimizer;
  auto make = [kind](std::vector<optim::ParamGroup> groups) -> std::unique_ptr<optim::Optimizer> {
    if (kind == "sgd") return std::make_unique<optim::SGD>(std::move(groups));
    return std::make_unique<optim::Adam>(std::move(groups), /*decoupled=*/kind == "adamw");
  };
  return std::make_unique<dist::ZeroRedundancyOptimizer>(plain->param_groups(), make);
}

std::string sharded_checkpoint_path(const std::string& dir, int epoch) {
  char name[32];
  std::snprintf(name, sizeof name, "epoch-%04d.dcp", epoch);
  return dir + "/" + name;
}

void save_sharded_checkpoint(const Config& c, int epoch, nn::Module& model, optim::Optimizer& opt,
                             const amp::GradScaler& scaler,
                             const std::vector<std::string>& metrics_rows) {
  std::map<std::string, std::string> meta;
  optim::OptimizerState st;  // fsdp: what its entries view, alive until saved
  dcp::StateDict sd =
      is_fsdp(c) ? fsdp_entries(model, opt, meta, st) : zero_entries(model, opt, meta);
  commit(c, epoch, sd, std::move(meta), scaler, metrics_rows);
}

std::optional<Checkpoint> agree_on_sharded_checkpoint(const Config& c, nn::Module& model,
                                                      optim::Optimizer& opt, bool lead) {
  auto group = dist::default_group();
  // Rank 0's directory decides (the checkpoint directory is shared: every rank reads its share).
  std::string list;
  if (group->rank() == 0)
    for (int e : sharded_epochs(c.checkpoint_dir)) list.append(std::to_string(e)).append(" ");
  list = dist::broadcast_string(*group, list, 0);
  std::vector<int> epochs;
  for (size_t s = 0, sp; (sp = list.find(' ', s)) != std::string::npos; s = sp + 1)
    epochs.push_back(std::atoi(list.substr(s, sp - s).c_str()));
  for (size_t n = 0; n < epochs.size(); ++n) {
    Checkpoint ck;
    std::string error;
    try {
      // fsdp: the model's shards are filled on success here; a later (older) one that every
      // rank can read overwrites them all again.
      ck = is_fsdp(c) ? load_fsdp_share(c, epochs[n], model)
                      : load_zero_share(c, epochs[n], model, as_zero(opt));
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    const std::vector<std::string> errors = dist::all_gather_strings(*group, error);
    std::string why;
    for (size_t r = 0; r < errors.size(); ++r)
      if (!errors[r].empty())
        why += (why.empty() ? "rank " : "; rank ") + std::to_string(r) + ": " + errors[r];
    const std::string path = sharded_checkpoint_path(c.checkpoint_dir, epochs[n]);
    if (why.empty()) {
      if (lead) std::printf("resuming after epoch %d from %s\n", epochs[n], path.c_str());
      return ck;
    }
    if (lead)
      std::fprintf(stderr, "weft-train: checkpoint %s is unusable (%s); %s\n", path.c_str(),
                   why.c_str(),
                   n + 1 < epochs.size() ? "trying the previous one" : "it was the oldest");
  }
  WEFT_CHECK(epochs.empty(), "--resume: no usable checkpoint; ", c.checkpoint_dir, " holds ",
             epochs.size(),
             " unusable sharded checkpoint(s) (the messages above say why). Not starting from "
             "scratch over them, which would overwrite ",
             c.metrics, ": move them away to start afresh");
  if (lead) std::printf("no checkpoint in %s: starting from scratch\n", c.checkpoint_dir.c_str());
  return std::nullopt;
}

}  // namespace weft_train
